"""Environment pins, versions and hardware facts of the process a task runs in.

Two local pins exist: a *lockfile* (the task runs in a virtualenv built from it; the pin is the
lockfile's sha256) or, where none is given, a *fingerprint*: the digest of the running
environment's :class:`~airflow_repro.core.environment_record.EnvironmentRecord` (the interpreter
and every installed distribution with its version and source), which a replay can compare against
and rebuild from.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
import sys
from pathlib import Path

from airflow_repro.core.environment_record import (
    PROVIDED_DISTRIBUTIONS,
    Distribution,
    DistributionSource,
    EnvironmentRecord,
    source_from_direct_url,
    strip_credentials,
)
from airflow_repro.core.manifest import EnvironmentPin, Hardware, Versions
from airflow_repro.errors import EnvironmentNotPinnedError
from airflow_repro.probes import (
    KEY_LIBRARIES,
    host,
    installed_distribution_sources,
    installed_distributions,
    library_versions,
    python_version,
)

__all__ = [
    "KEY_LIBRARIES",
    "clear_caches",
    "environment_record",
    "fingerprint_pin",
    "hardware",
    "installed_distributions",
    "lockfile_digest",
    "lockfile_pin",
    "python_version",
    "versions",
]


@functools.cache
def environment_record() -> EnvironmentRecord:
    """The record of the running environment (probed once per process; :func:`clear_caches` forgets it).

    :data:`~airflow_repro.core.environment_record.PROVIDED_DISTRIBUTIONS` are left out: a replay
    brings its own airflow-repro, so its version is no pin of the task.
    """
    distributions = [
        Distribution(
            name=name,
            version=version,
            source=source_from_direct_url(direct_url) if direct_url else DistributionSource(),
        )
        for name, version, direct_url in installed_distribution_sources()
        if name not in PROVIDED_DISTRIBUTIONS
    ]
    return EnvironmentRecord(
        python=python_version(),
        python_version=platform.python_version(),
        platform=sys.platform,
        machine=platform.machine(),
        distributions=distributions,
    )


def clear_caches() -> None:
    """Forget the probed environment (for callers that change ``sys.path``, tests mostly)."""
    environment_record.cache_clear()
    installed_distribution_sources.cache_clear()
    installed_distributions.cache_clear()


def fingerprint_pin() -> EnvironmentPin:
    """Pin the running environment by what is installed in it: the digest of its record."""
    record = environment_record()
    return EnvironmentPin(
        kind="fingerprint",
        digest=record.digest,
        python=record.python,
        distributions=len(record.distributions),
    )


def lockfile_content(lockfile: Path) -> bytes:
    """A lockfile's bytes, line endings normalized so checkouts on Windows agree, credentials in
    URLs removed: what is hashed into the pin and archived."""
    try:
        data = lockfile.read_bytes()
    except FileNotFoundError as exc:
        raise EnvironmentNotPinnedError(
            f"lockfile {lockfile} does not exist: give the path of a pinned requirements file "
            "(e.g. made with 'uv pip compile requirements.in -o requirements.lock --generate-hashes')"
        ) from exc
    return (
        _URL_RE.sub(lambda m: strip_credentials(m.group(0)), data.decode("utf-8", "surrogateescape"))
        .encode("utf-8", "surrogateescape")
        .replace(b"\r\n", b"\n")
    )


# Index URLs in a lockfile (``--index-url https://user:token@...``) may carry credentials: the pin,
# the venv cache key and the archived copy never do (uv reads credentials from its own settings).
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")


def lockfile_digest(lockfile: Path) -> str:
    """sha256 of a lockfile's normalized bytes: the pin, and the lockfile's address in the archive."""
    return "sha256:" + hashlib.sha256(lockfile_content(lockfile)).hexdigest()


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


#: Settings that change how many threads numeric libraries use (and so their summation order).
THREAD_SETTINGS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "CUBLAS_WORKSPACE_CONFIG",
)


def thread_settings() -> dict[str, str] | None:
    """The thread settings set in this process's environment (None where none is)."""
    found = {name: os.environ[name] for name in THREAD_SETTINGS if name in os.environ}
    return found or None


def hardware() -> Hardware:
    """The machine the worker's process runs on (probed once per process) and its thread settings."""
    return _host_hardware().model_copy(update={"threads": thread_settings()})


@functools.cache
def _host_hardware() -> Hardware:
    return Hardware(**host().to_dict())
