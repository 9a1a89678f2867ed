"""Pinned local environments: a virtualenv built from a lockfile with uv, cached by its hash.

Building is safe when several task processes need the same environment at once: one builds it
under a file lock into a temporary folder and renames it into place; the others wait and reuse it.
A task's callable then runs in that interpreter as a subprocess, seeing only airflow-repro's
runtime (standard library only), never the worker's site-packages. The program it runs is the one a
pod runs (:func:`launcher_script`): the function's source, then the runtime's own launcher,
:func:`airflow_repro.runtime.run_callable`.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from airflow_repro import runtime
from airflow_repro.errors import (
    EnvironmentNotPinnedError,
    ReproInfraError,
    ReproUserError,
    RuntimeContextError,
    TaskProcessError,
)
from airflow_repro.task_formats import NO_RETRY_EXIT_CODE, CallArguments

BUILD_TIMEOUT_S = 1800
_COMPLETE_MARKER = ".airflow-repro-complete"


def venv_key(lockfile_digest: str, python: str = sys.executable) -> str:
    """Cache key: the lockfile's hash and the interpreter the venv is built on."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    material = f"{lockfile_digest}\n{python}\n{version}".encode()
    return "py" + version.replace(".", "") + "-" + hashlib.sha256(material).hexdigest()[:20]


def ensure_venv(lockfile: Path, lockfile_digest: str, cache_root: Path) -> Path:
    """Return the python of the venv built from ``lockfile``, building it once if needed."""
    target = cache_root / venv_key(lockfile_digest)
    python = target / "bin" / "python"
    if (target / _COMPLETE_MARKER).exists():
        return python
    cache_root.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(target) + ".lock", timeout=BUILD_TIMEOUT_S):
            if not (target / _COMPLETE_MARKER).exists():
                _build(lockfile, target)
    except Timeout as exc:
        raise ReproInfraError(f"timed out waiting for another process to build {target}") from exc
    return python


def _build(lockfile: Path, target: Path) -> None:
    uv = _uv_binary()
    staging = target.with_name(target.name + f".build-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)  # a build interrupted before its marker was written
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "VIRTUAL_ENV": str(staging)}
    steps = [
        [uv, "venv", "--quiet", "--relocatable", "--python", sys.executable, str(staging)],
        [uv, "pip", "sync", "--quiet", "--python", str(staging / "bin" / "python"), str(lockfile)],
    ]
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise EnvironmentNotPinnedError(
                f"could not build the environment from lockfile {lockfile}: {' '.join(step[1:3])} "
                f"failed: {result.stderr.strip()[-2000:]}"
            )
    (staging / _COMPLETE_MARKER).write_text(lockfile.read_text(encoding="utf-8"), encoding="utf-8")
    os.replace(staging, target)


def _uv_binary() -> str:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found is None:
            raise EnvironmentNotPinnedError("uv is needed to build lockfile environments: pip install uv") from None
        return found


def callable_source(function: Callable[..., Any]) -> str:
    """The function's own source without its decorators, ready to exec in another interpreter."""
    source = textwrap.dedent(inspect.getsource(function))
    tree = ast.parse(source)
    node = tree.body[0]
    if not isinstance(node, ast.FunctionDef):
        raise ReproUserError(f"{function.__qualname__}: only plain (non-async) functions can run in a lockfile env")
    node.decorator_list = []
    return ast.unparse(node) + "\n"


def launcher_script(
    function: Callable[..., Any],
    *,
    runtime_path: Path | None = None,
    kwargs_file: Path | None = None,
    return_file: Path | None = None,
    source: str | None = None,
) -> str:
    """The program a task's own interpreter runs: the function's source (``source``: an archived
    one, else read from ``function``), then :func:`airflow_repro.runtime.run_callable` around it.

    In a pod (no arguments) the runtime is installed in the image, the arguments come in
    ``AIRFLOW_REPRO_ARGS`` / ``AIRFLOW_REPRO_KWARGS`` and the return value goes to
    KubernetesPodOperator's XCom file; a lockfile virtualenv gets the runtime from ``runtime_path``
    and both through files (``kwargs_file`` holds the positional and keyword arguments).
    """
    prelude = f"import sys\n\nsys.path.insert(0, {str(runtime_path)!r})\n" if runtime_path is not None else ""
    arguments = [function.__name__]
    if kwargs_file is not None:
        arguments.append(f"kwargs_file={str(kwargs_file)!r}")
    if return_file is not None:
        arguments.append(f"return_file={str(return_file)!r}")
    return (
        f"{prelude}from airflow_repro import runtime\n\n"
        f"{source if source is not None else callable_source(function)}\n"
        f"runtime.run_callable({', '.join(arguments)})\n"
    )


def run_in_venv(
    python: Path,
    function: Callable[..., Any],
    kwargs: Mapping[str, Any],
    context_file: Path,
    workdir: Path,
    *,
    args: Sequence[Any] = (),
    extra_env: Mapping[str, str] | None = None,
    source: str | None = None,
) -> Any:
    """Run ``function(*args, **kwargs)`` in the venv's interpreter; return its JSON return value.

    ``source``: the function's archived source, run instead of ``function``'s own (a restored replay).
    A failure a retry cannot mend (the task misused the runtime) raises :class:`RuntimeContextError`,
    any other :class:`TaskProcessError`; the traceback went to the task log."""
    shim = runtime.install_runtime(workdir / "shim")
    script = workdir / "task_main.py"
    result_file = workdir / "result.json"
    kwargs_file = workdir / "kwargs.json"
    CallArguments(args=tuple(args), kwargs=dict(kwargs)).write(kwargs_file)
    script.write_text(
        launcher_script(function, runtime_path=shim, kwargs_file=kwargs_file, return_file=result_file, source=source),
        encoding="utf-8",
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", str(workdir)),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        runtime.CONTEXT_ENV: str(context_file),
        "PYTHONHASHSEED": "0",
        **(extra_env or {}),
    }
    completed = subprocess.run([str(python), str(script)], env=env, cwd=workdir, check=False)
    if completed.returncode == NO_RETRY_EXIT_CODE:
        raise RuntimeContextError(
            f"{function.__qualname__} misused the runtime in its pinned environment ({python.parent.parent.name}): "
            "its traceback is in the task log above; a retry cannot mend it"
        )
    if completed.returncode != 0:
        raise TaskProcessError(
            f"{function.__qualname__} failed in its pinned environment ({python.parent.parent.name}) "
            f"with exit code {completed.returncode}; its traceback is in the task log above"
        )
    return json.loads(result_file.read_text(encoding="utf-8"))
