"""Environment pins, versions and hardware facts of the process a task runs in.

Two local pins exist: a *lockfile* (the task runs in a virtualenv built from it; the pin is the
lockfile's sha256) or, where none is given, a *fingerprint* of the running interpreter and every
installed distribution (name and version), which a replay can compare against.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import sys
from pathlib import Path

from airflow_repro.core.manifest import EnvironmentPin, Hardware, Versions
from airflow_repro.errors import EnvironmentNotPinnedError
from airflow_repro.probes import KEY_LIBRARIES, host, installed_distributions, library_versions, python_version

__all__ = [
    "KEY_LIBRARIES",
    "fingerprint_pin",
    "hardware",
    "installed_distributions",
    "lockfile_digest",
    "lockfile_pin",
    "python_version",
    "versions",
]


def fingerprint_pin() -> EnvironmentPin:
    """Pin the running environment by what is installed in it."""
    distributions = installed_distributions()
    lines = [python_version(), sys.platform, platform.machine()]
    lines += [f"{name}=={version}" for name, version in distributions]
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return EnvironmentPin(
        kind="fingerprint",
        digest=f"sha256:{digest}",
        python=python_version(),
        distributions=len(distributions),
    )


def lockfile_digest(lockfile: Path) -> str:
    """sha256 of a lockfile's bytes, line endings normalized so checkouts on Windows agree."""
    try:
        data = lockfile.read_bytes()
    except FileNotFoundError as exc:
        raise EnvironmentNotPinnedError(
            f"lockfile {lockfile} does not exist: give the path of a pinned requirements file "
            "(e.g. made with 'uv pip compile requirements.in -o requirements.lock --generate-hashes')"
        ) from exc
    return "sha256:" + hashlib.sha256(data.replace(b"\r\n", b"\n")).hexdigest()


def lockfile_pin(lockfile: Path, declared_as: str, python: str | None = None) -> EnvironmentPin:
    return EnvironmentPin(
        kind="lockfile",
        digest=lockfile_digest(lockfile),
        python=python or python_version(),
        lockfile=declared_as,
    )


def versions(repro_version: str | None) -> Versions:
    """Versions worth recording next to a task: Airflow, its providers and key ML libraries."""
    dists = dict(installed_distributions())
    return Versions(
        python=python_version(),
        airflow=dists.get("apache-airflow-core") or dists.get("apache-airflow"),
        task_sdk=dists.get("apache-airflow-task-sdk"),
        airflow_repro=repro_version,
        providers={n: v for n, v in dists.items() if n.startswith("apache-airflow-providers-")},
        libraries=library_versions(),
    )


@functools.cache
def hardware() -> Hardware:
    """The machine the worker's process runs on (probed once per process)."""
    return Hardware(**host().to_dict())
