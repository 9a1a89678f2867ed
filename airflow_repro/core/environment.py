"""Environment pins, versions and hardware facts of the process a task runs in.

Two local pins exist: a *lockfile* (the task runs in a virtualenv built from it; the pin is the
lockfile's sha256) or, where none is given, a *fingerprint* of the running interpreter and every
installed distribution (name and version), which a replay can compare against.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from airflow_repro.core.manifest import EnvironmentPin, Hardware, Versions
from airflow_repro.errors import EnvironmentNotPinnedError

KEY_LIBRARIES = (
    "numpy", "pandas", "scikit-learn", "scipy", "torch", "tensorflow", "jax", "xgboost",
    "lightgbm", "mlflow", "pydantic", "pyarrow", "openlineage-python", "lakefs", "kubernetes",
)


def python_version() -> str:
    return f"{platform.python_implementation()} {platform.python_version()}"


_DIST_DIR_RE = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+?)(-py[^-]*)?\.(dist-info|egg-info)$")


@functools.cache
def installed_distributions() -> tuple[tuple[str, str], ...]:
    """(normalized name, version) of every installed distribution, sorted and de-duplicated.

    Read from the ``*.dist-info`` folder names on ``sys.path`` (the wheel spec puts the name and
    version there): a directory listing, where parsing every METADATA file through
    ``importlib.metadata`` costs ~0.4 s per task process. The first entry on the path wins, as
    for imports.
    """
    seen: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for folder in names:
            match = _DIST_DIR_RE.match(folder)
            if match:
                seen.setdefault(_normalize(match["name"]), match["version"])
    if not seen:  # an unusual layout (zip imports, say): ask importlib.metadata
        for dist in metadata.distributions():
            if dist.metadata["Name"]:
                seen.setdefault(_normalize(dist.metadata["Name"]), dist.version)
    return tuple(sorted(seen.items()))


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


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
        libraries={n: dists[n] for n in KEY_LIBRARIES if n in dists},
    )


@functools.cache
def hardware() -> Hardware:
    return Hardware(
        hostname=socket.gethostname(),
        platform=platform.platform(terse=True),
        machine=platform.machine(),
        cpu_count=os.cpu_count(),
        cpu_model=_cpu_model(),
        memory_bytes=_memory_bytes(),
        gpus=_nvidia_gpus(),
    )


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _nvidia_gpus() -> list[dict[str, str]]:
    """GPU model and driver as nvidia-smi reports them; empty where there is no NVIDIA GPU."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    query = "--query-gpu=name,driver_version,memory.total,uuid"
    try:
        out = subprocess.run(
            [smi, query, "--format=csv,noheader"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        name, driver, memory, uuid = (part.strip() for part in line.split(",", 3))
        gpus.append({"name": name, "driver": driver, "memory": memory, "uuid": uuid})
    return gpus
