"""What the process a task runs in runs on: the interpreter, installed libraries, CPU, memory, GPUs.

Standard library only, and the one place these are probed: the worker turns them into a local
task's manifest (:mod:`airflow_repro.core.environment`), and :mod:`airflow_repro.runtime` reports
them from inside a pod, where neither Airflow nor pydantic is installed (the pod report).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

#: Libraries whose versions are recorded next to a task (normalized distribution names).
KEY_LIBRARIES = (
    "numpy",
    "pandas",
    "scikit-learn",
    "scipy",
    "torch",
    "tensorflow",
    "jax",
    "xgboost",
    "lightgbm",
    "transformers",
    "mlflow",
    "pydantic",
    "pyarrow",
    "openlineage-python",
    "lakefs",
    "kubernetes",
)
#: What ``nvidia-smi`` is asked for, and the names each column is recorded under.
GPU_QUERY = ("name", "driver_version", "memory.total", "uuid")
GPU_FIELDS = ("name", "driver", "memory", "uuid")

_DIST_DIR_RE = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+?)(-py[^-]*)?\.(dist-info|egg-info)$")


def python_version() -> str:
    """``CPython 3.11.9``: the implementation and version of this interpreter."""
    return f"{platform.python_implementation()} {platform.python_version()}"


def normalize_name(name: str) -> str:
    """A distribution's name as PEP 503 compares it (``scikit_learn`` -> ``scikit-learn``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


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
                seen.setdefault(normalize_name(match["name"]), match["version"])
    if not seen:  # an unusual layout (zip imports, say): ask importlib.metadata
        for dist in metadata.distributions():
            if dist.metadata["Name"]:
                seen.setdefault(normalize_name(dist.metadata["Name"]), dist.version)
    return tuple(sorted(seen.items()))


@functools.cache
def installed_distribution_sources() -> tuple[tuple[str, str, dict[str, Any] | None], ...]:
    """(normalized name, version, parsed ``direct_url.json`` or None) of every installed distribution.

    Scanned as :func:`installed_distributions` scans (folder names on ``sys.path``, the first entry
    wins), plus one ``open()`` per ``.dist-info`` folder for the PEP 610 ``direct_url.json`` an
    installer leaves there for a distribution it did not take from an index. A missing, unreadable
    or malformed file reads as None. Callers must not change the dicts (the result is cached).
    """
    seen: dict[str, tuple[str, str, dict[str, Any] | None]] = {}
    for entry in sys.path:
        root = entry or "."
        try:
            names = os.listdir(root)
        except OSError:
            continue
        for folder in names:
            match = _DIST_DIR_RE.match(folder)
            if match is None:
                continue
            name = normalize_name(match["name"])
            if name not in seen:
                is_wheel_install = folder.endswith(".dist-info")  # egg-info folders have no direct_url.json
                direct_url = _read_direct_url(os.path.join(root, folder)) if is_wheel_install else None
                seen[name] = (name, match["version"], direct_url)
    if not seen:  # an unusual layout (zip imports, say): ask importlib.metadata
        for dist in metadata.distributions():
            if dist.metadata["Name"]:
                name = normalize_name(dist.metadata["Name"])
                seen.setdefault(name, (name, dist.version, _parse_direct_url(dist.read_text("direct_url.json"))))
    return tuple(seen[name] for name in sorted(seen))


def _read_direct_url(dist_info: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(dist_info, "direct_url.json"), encoding="utf-8") as file:
            return _parse_direct_url(file.read())
    except (OSError, UnicodeDecodeError):  # absent (an index install) or unreadable
        return None


def _parse_direct_url(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def library_versions() -> dict[str, str]:
    """Versions of the :data:`KEY_LIBRARIES` installed here (the image's, in a pod)."""
    installed = dict(installed_distributions())
    return {name: installed[name] for name in KEY_LIBRARIES if name in installed}


def nvidia_gpus() -> list[dict[str, str]]:
    """GPU model, driver, memory and uuid as ``nvidia-smi`` reports them; empty without one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, f"--query-gpu={','.join(GPU_QUERY)}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi(out)


def parse_nvidia_smi(out: str) -> list[dict[str, str]]:
    """The rows of ``nvidia-smi --query-gpu=<GPU_QUERY> --format=csv,noheader``; malformed ones skipped."""
    gpus = []
    for line in out.strip().splitlines():
        parts = [part.strip() for part in line.split(",", len(GPU_FIELDS) - 1)]
        if len(parts) == len(GPU_FIELDS):
            gpus.append(dict(zip(GPU_FIELDS, parts, strict=True)))
    return gpus


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


@dataclass(frozen=True)
class Host:
    """The machine this process runs on: the fields of the manifest's ``Hardware``."""

    hostname: str
    platform: str
    machine: str
    cpu_count: int | None
    cpu_model: str | None
    memory_bytes: int | None
    gpus: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def host() -> Host:
    """Probe this machine (``nvidia-smi`` runs once per call; callers cache where they need to)."""
    return Host(
        hostname=socket.gethostname(),
        platform=platform.platform(terse=True),
        machine=platform.machine(),
        cpu_count=os.cpu_count(),
        cpu_model=cpu_model(),
        memory_bytes=memory_bytes(),
        gpus=nvidia_gpus(),
    )


__all__ = [
    "GPU_FIELDS",
    "GPU_QUERY",
    "KEY_LIBRARIES",
    "Host",
    "cpu_model",
    "host",
    "installed_distribution_sources",
    "installed_distributions",
    "library_versions",
    "memory_bytes",
    "normalize_name",
    "nvidia_gpus",
    "parse_nvidia_smi",
    "python_version",
]
