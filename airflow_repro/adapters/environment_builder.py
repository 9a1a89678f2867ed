"""Rebuild a recorded environment with uv: a virtualenv cached by the record's digest.

Where a task ran without a lockfile, its manifest pins an
:class:`~airflow_repro.core.environment_record.EnvironmentRecord`; a pinned replay rebuilds that
environment here and runs the task in it. Building is safe when several processes need the same
environment at once, as for :mod:`airflow_repro.adapters.local_venv`: one builds it under a file
lock into a staging folder and renames it into place once complete; the others wait and reuse it.

uv's own configuration applies throughout, so the index the distributions come from is the one
uv is set up with: ``UV_INDEX_URL`` / ``UV_EXTRA_INDEX_URL``, ``UV_FIND_LINKS``, ``UV_OFFLINE``,
``uv.toml`` and the like. Interpreters are never downloaded (``UV_PYTHON_DOWNLOADS=never``).
"""

from __future__ import annotations

import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from filelock import FileLock, Timeout

import airflow_repro
from airflow_repro.adapters.local_venv import BUILD_TIMEOUT_S, _uv_binary
from airflow_repro.core.environment_record import (
    EnvironmentRecord,
    distribution_problem,
    requirements_text,
    restore_problems,
)
from airflow_repro.errors import EnvironmentNotPinnedError, ReproInfraError
from airflow_repro.probes import python_version

__all__ = [
    "COMPILE_TIMEOUT_S",
    "RECORD_MARKER",
    "ensure_environment",
    "environment_folder",
    "installability_problems",
    "link_airflow_repro",
]

#: Written last into a built environment: the record's canonical JSON. A folder without it is
#: half-built (interrupted) and is never used.
RECORD_MARKER = ".airflow-repro-environment.json"
REQUIREMENTS_FILE = ".airflow-repro-requirements.txt"
COMPILE_TIMEOUT_S = 300
# How much of uv's stderr an error carries: its last lines name what could not be found.
_STDERR_LINES = 15
_UV_DECORATION = re.compile(r"^[\s×╰─▶│]+")


def environment_folder(record: EnvironmentRecord, cache_root: Path) -> Path:
    """Where ``record``'s environment lives: ``env-<first 24 hex of its digest>``."""
    return cache_root / ("env-" + record.digest.removeprefix("sha256:")[:24])


def ensure_environment(record: EnvironmentRecord, cache_root: Path) -> Path:
    """Return the ``bin/python`` of ``record``'s environment, building it once with uv if needed.

    The distributions come from wherever uv is configured to look (``UV_INDEX_URL``,
    ``UV_FIND_LINKS``, ``UV_OFFLINE``, ``uv.toml``); the interpreter is this one where it is the
    recorded one, else one uv finds installed (never downloaded).

    Raises :class:`EnvironmentNotPinnedError` where the record cannot be rebuilt (an editable or
    local install) or a uv step fails (the message names the step and ends with uv's stderr, which
    names the distribution it could not find).
    """
    problems = restore_problems(record)
    if problems:
        raise EnvironmentNotPinnedError("the recorded environment cannot be rebuilt: " + "; ".join(problems))
    target = environment_folder(record, cache_root)
    if not (target / RECORD_MARKER).exists():
        cache_root.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(target) + ".lock", timeout=BUILD_TIMEOUT_S):
                if not (target / RECORD_MARKER).exists():
                    _build(record, target)
        except Timeout as exc:
            raise ReproInfraError(f"timed out waiting for another process to build {target}") from exc
    # Every time, not only after a build: the airflow-repro checkout in use may have moved.
    link_airflow_repro(target, record.python_version)
    return target / "bin" / "python"


def _build(record: EnvironmentRecord, target: Path) -> None:
    staging = target.with_name(target.name + f".build-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)  # a build interrupted before its marker was written
    try:
        _run_uv(["venv", "--quiet", "--relocatable", "--python", _interpreter(record), str(staging)], staging)
        requirements = staging / REQUIREMENTS_FILE
        requirements.write_text(requirements_text(record), encoding="utf-8")
        python = str(staging / "bin" / "python")
        _run_uv(["pip", "sync", "--quiet", "--python", python, str(requirements)], staging)
        link_airflow_repro(staging, record.python_version)
        (staging / RECORD_MARKER).write_bytes(record.canonical_json())
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # never leave a half-built folder behind
        raise


def _interpreter(record: EnvironmentRecord) -> str:
    """This interpreter where it is the recorded one; otherwise a request uv resolves."""
    return sys.executable if record.python == python_version() else record.python_version


def _uv_environment(staging: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    if staging is not None:
        env["VIRTUAL_ENV"] = str(staging)
    return env


def _tail_lines(stderr: str) -> str:
    """uv's last stderr lines on one line, without its box drawing (they name what failed)."""
    lines = [_UV_DECORATION.sub("", line).strip() for line in stderr.strip().splitlines()[-_STDERR_LINES:]]
    return " ".join(line for line in lines if line)[-2000:]


def _step_name(arguments: Sequence[str]) -> str:
    """``uv pip sync``: the command words, before the first option."""
    words = []
    for argument in arguments:
        if argument.startswith("-"):
            break
        words.append(argument)
    return " ".join(["uv", *words])


def _run_uv(arguments: Sequence[str], staging: Path) -> None:
    step = _step_name(arguments)
    try:
        result = subprocess.run(
            [_uv_binary(), *arguments],
            capture_output=True,
            text=True,
            env=_uv_environment(staging),
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ReproInfraError(f"{step} did not finish within {BUILD_TIMEOUT_S} s") from exc
    except OSError as exc:
        raise EnvironmentNotPinnedError(f"could not run {step}: {exc}") from exc
    if result.returncode != 0:
        raise EnvironmentNotPinnedError(
            f"could not rebuild the recorded environment: {step} failed: {_tail_lines(result.stderr)}"
        )


def _site_packages(venv: Path, python_version: str) -> Path:
    major_minor = ".".join(python_version.split(".")[:2])
    expected = venv / "lib" / f"python{major_minor}" / "site-packages"
    if expected.is_dir():
        return expected
    found = sorted(venv.glob("lib/*/site-packages"))  # another implementation's layout (pypy3.10)
    return found[0] if found else expected


def link_airflow_repro(venv: Path, python_version: str) -> None:
    """Make the airflow-repro in use importable in ``venv``: a link in its site-packages.

    A replay provides airflow-repro itself (it is never recorded); the link points at the package
    this process imported, and is replaced atomically where it points elsewhere.
    """
    package = Path(airflow_repro.__file__).resolve().parent
    link = _site_packages(venv, python_version) / "airflow_repro"
    try:
        if Path(os.readlink(link)) == package:
            return
    except OSError:  # no link yet, or a real folder (replaced below)
        pass
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    temporary = link.with_name(f".airflow_repro.{os.getpid()}.{secrets.token_hex(4)}")
    os.symlink(package, temporary, target_is_directory=True)
    os.replace(temporary, link)


def installability_problems(record: EnvironmentRecord) -> list[str]:
    """Why ``record`` could not be rebuilt here, without building anything; empty where it could.

    Checks that nothing is editable or local, that this machine's platform is the recorded one,
    that an interpreter of the recorded version is found, and that uv resolves every pinned version
    against the configured index / find-links (``uv pip compile --no-deps``).
    """
    problems = restore_problems(record)
    problems += _platform_problems(record)
    problems += _interpreter_problems(record)
    problems += _resolution_problems(record)
    return problems


def _platform_problems(record: EnvironmentRecord) -> list[str]:
    recorded = f"{record.platform}/{record.machine}"
    here = f"{sys.platform}/{platform.machine()}"
    return [] if recorded == here else [f"recorded on {recorded}, this machine is {here}"]


def _interpreter_problems(record: EnvironmentRecord) -> list[str]:
    if record.python == python_version():
        return []
    version = record.python_version
    try:
        result = _uv(["python", "find", version], stdin="")
    except EnvironmentNotPinnedError as exc:
        return [str(exc)]
    if result.returncode == 0:
        return []
    return [
        f"no {record.python} interpreter found on this machine (uv python find {version}: "
        f"{_tail_lines(result.stderr)}); install one, e.g. 'uv python install {version}'"
    ]


def _resolution_problems(record: EnvironmentRecord) -> list[str]:
    # Only what restore_problems did not already report: those lines name paths of another machine.
    restorable = record.model_copy(
        update={"distributions": [d for d in record.distributions if distribution_problem(d) is None]}
    )
    requirements = requirements_text(restorable)
    if not requirements:
        return []
    major_minor = ".".join(record.python_version.split(".")[:2])
    arguments = ["pip", "compile", "--quiet", "--no-deps", "--no-header", "--python-version", major_minor, "-"]
    try:
        result = _uv(arguments, stdin=requirements)
    except EnvironmentNotPinnedError as exc:
        return [str(exc)]
    if result.returncode == 0:
        return []
    return [f"the recorded distributions cannot be installed from the configured index: {_tail_lines(result.stderr)}"]


def _uv(arguments: Sequence[str], *, stdin: str) -> subprocess.CompletedProcess[str]:
    """Run a uv check; a uv that cannot run, or runs too long, is reported as a problem."""
    step = _step_name(arguments)
    try:
        return subprocess.run(
            [_uv_binary(), *arguments],
            input=stdin,
            capture_output=True,
            text=True,
            env=_uv_environment(),
            timeout=COMPILE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise EnvironmentNotPinnedError(f"{step} did not finish within {COMPILE_TIMEOUT_S} s") from exc
    except OSError as exc:
        raise EnvironmentNotPinnedError(f"could not run {step}: {exc}") from exc
