"""Running a task's archived code: a :class:`~airflow_repro.core.code_snapshot.CodeSnapshot` written
back to disk and imported in a subprocess in place of the current DAG file and bundle modules.

The subprocess imports the archived DAG file as the module it was (so its module-level helpers and
its imports of other archived bundle modules work, the archived folder being first on
``sys.path``), then defines the archived task function in that module's namespace from its own
source, decorators stripped: a task defined inside a ``@dag`` function, or wrapped by ``@task``, is
not reachable as a module attribute. The function then runs under
:func:`airflow_repro.runtime.run_callable`, as in a lockfile virtualenv or a pod.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from airflow_repro import runtime
from airflow_repro.core.code_snapshot import CodeSnapshot, callable_source_in
from airflow_repro.errors import ManifestError, RuntimeContextError, TaskProcessError
from airflow_repro.task_formats import NO_RETRY_EXIT_CODE, RESTORED_CODE_ENV, CallArguments

RESTORED_CODE_DIR = "restored_code"
RESTORED_KWARGS_FILE = "restored_kwargs.json"  # the positional and keyword arguments (CallArguments)
RESTORED_RETURN_FILE = "restored_return.json"
RESTORED_SCRIPT = "restored_main.py"
# Set for the child as Airflow's own virtualenv operator sets it: importing airflow (the archived DAG
# file does) then skips configure_orm(), which would fail on the URL the task process's supervisor
# put in AIRFLOW__DATABASE__SQL_ALCHEMY_CONN to block DB access ("airflow-db-not-allowed:///").
AIRFLOW_NO_ORM_ENV = "PYTHON_OPERATORS_VIRTUAL_ENV_MODE"

__all__ = [
    "RESTORED_CODE_DIR",
    "RESTORED_KWARGS_FILE",
    "RESTORED_RETURN_FILE",
    "RESTORED_SCRIPT",
    "materialize_snapshot",
    "restored_launcher_script",
    "run_restored",
]


def materialize_snapshot(snapshot: CodeSnapshot, folder: Path) -> Path:
    """Write every file of ``snapshot`` under ``folder``; return ``folder``.

    A path that is absolute, has ``..`` or would land outside ``folder`` (through a symlink already
    there) is refused with :class:`ManifestError`, before anything is written.
    """
    targets = {path: _target(folder, path) for path in snapshot.files}
    for path, target in targets.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Bytes, so line endings come back exactly as archived.
        target.write_bytes(snapshot.files[path].encode("utf-8"))
    return folder


def _target(folder: Path, path: str) -> Path:
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise ManifestError(f"refusing to restore {path!r}: snapshot paths must be relative, without '..'")
    target = folder.joinpath(*pure.parts)
    if not target.resolve().is_relative_to(folder.resolve()):
        raise ManifestError(f"refusing to restore {path!r}: it would be written outside {folder}")
    return target


def restored_launcher_script(
    *,
    code_dir: Path,
    dag_file: str,
    module_name: str,
    qualname: str,
    function_source: str,
    kwargs_file: Path,
    return_file: Path,
    runtime_path: Path | None = None,
) -> str:
    """The program that runs archived function ``qualname`` from the snapshot written to ``code_dir``.

    Every value is embedded with ``repr()``. ``runtime_path``, when given, is put on ``sys.path``
    right after ``code_dir`` (for an interpreter that cannot import airflow_repro itself).
    """
    archived_file = code_dir / dag_file
    path_entries = [str(code_dir)] + ([str(runtime_path)] if runtime_path is not None else [])
    # Named after the archived file; registered with linecache so tracebacks show its lines.
    source_name = f"<archived {dag_file}: {qualname}>"
    function_name = qualname.split(".")[-1]
    return (
        "import importlib.util\n"
        "import linecache\n"
        "import sys\n"
        "import traceback\n"
        "\n"
        "sys.excepthook = traceback.print_exception  # reads linecache, unlike the default hook\n"
        f"sys.path[:0] = {path_entries!r}\n"
        "\n"
        "from airflow_repro import runtime\n"
        "\n"
        f"_spec = importlib.util.spec_from_file_location({module_name!r}, {str(archived_file)!r})\n"
        "_module = importlib.util.module_from_spec(_spec)\n"
        f"sys.modules[{module_name!r}] = _module  # before exec_module, as an import would\n"
        "_spec.loader.exec_module(_module)\n"
        f"_source = {function_source!r}\n"
        f"linecache.cache[{source_name!r}] = (len(_source), None, _source.splitlines(True), {source_name!r})\n"
        f"exec(compile(_source, {source_name!r}, 'exec'), _module.__dict__)\n"
        f"_function = _module.__dict__[{function_name!r}]\n"
        f"runtime.run_callable(_function, kwargs_file={str(kwargs_file)!r}, return_file={str(return_file)!r})\n"
    )


def run_restored(
    python: Path,
    snapshot: CodeSnapshot,
    *,
    module_name: str,
    qualname: str,
    kwargs: Mapping[str, Any],
    context_file: Path,
    workdir: Path,
    env: Mapping[str, str],
    args: Sequence[Any] = (),
) -> Any:
    """Run archived ``qualname(*args, **kwargs)`` with interpreter ``python``; return its JSON return value.

    ``python`` must import airflow_repro itself (the worker's interpreter, or an environment that
    links it). A failure raises :class:`TaskProcessError` (:class:`RuntimeContextError` where the task
    misused the runtime: a retry cannot mend it); the traceback went to the task log.
    """
    # Absolute (not resolved: a venv's python is a symlink that must stay one), as the child runs in workdir.
    python, context_file, workdir = Path(python).absolute(), Path(context_file).absolute(), Path(workdir).absolute()
    script, return_file = _prepare_workdir(
        snapshot,
        qualname=qualname,
        module_name=module_name,
        arguments=CallArguments(tuple(args), kwargs),
        workdir=workdir,
    )
    completed = subprocess.run(
        [str(python), str(script)],
        cwd=workdir,
        env={**env, runtime.CONTEXT_ENV: str(context_file), RESTORED_CODE_ENV: "1", AIRFLOW_NO_ORM_ENV: "1"},
        check=False,
    )
    if completed.returncode == NO_RETRY_EXIT_CODE:
        raise RuntimeContextError(
            f"{qualname} misused the runtime running its archived code (restored from snapshot "
            f"{snapshot.digest}): its traceback is in the task log above; a retry cannot mend it"
        )
    if completed.returncode != 0:
        raise TaskProcessError(
            f"{qualname} failed running its archived code (restored from snapshot {snapshot.digest}) "
            f"with exit code {completed.returncode}; its traceback is in the task log above"
        )
    return json.loads(return_file.read_text(encoding="utf-8"))


def _prepare_workdir(
    snapshot: CodeSnapshot, *, qualname: str, module_name: str, arguments: CallArguments, workdir: Path
) -> tuple[Path, Path]:
    """Write the archived code, the arguments and the launcher; return the script and the return file."""
    function_source = callable_source_in(snapshot, qualname)
    workdir.mkdir(parents=True, exist_ok=True)
    code_dir = workdir / RESTORED_CODE_DIR
    shutil.rmtree(code_dir, ignore_errors=True)  # no stale module of an earlier restore may shadow one
    materialize_snapshot(snapshot, code_dir)
    kwargs_file, return_file, script = (
        workdir / name for name in (RESTORED_KWARGS_FILE, RESTORED_RETURN_FILE, RESTORED_SCRIPT)
    )
    arguments.write(kwargs_file)
    return_file.unlink(missing_ok=True)
    launcher = restored_launcher_script(
        code_dir=code_dir,
        dag_file=snapshot.dag_file,
        module_name=module_name,
        qualname=qualname,
        function_source=function_source,
        kwargs_file=kwargs_file,
        return_file=return_file,
    )
    script.write_text(launcher, encoding="utf-8")
    return script, return_file
