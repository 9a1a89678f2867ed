"""Parse a DAG file in a child process, under a deadline, to plan a replay.

Planning needs each recorded task as the DAG defines it *now*: its callable's source hash and its
environment pin. The serialized DAG in the metadata DB has neither, so the file must be imported.
Importing it in the caller is unsafe in the API server: Airflow's import timeout is a ``SIGALRM``,
which only works in a process's main thread, so in a request thread a DAG file that hangs at
import would hold that request (and a worker thread) forever. A child process can be killed.

The child (``python -m airflow_repro.airflow.dag_parsing``) reads ``{"dag_id", "fileloc", "conf",
"timeout"}`` as JSON on stdin and writes ``{"tasks": [...]}`` or ``{"error", "error_class"}`` as
JSON on stdout. It parses in a thread and gives up after ``timeout``; the parent kills the child's
whole process group if even that does not come back in time (a C call holding the GIL).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_repro import errors
from airflow_repro.core.code_snapshot import CodeSnapshot
from airflow_repro.core.replay import CurrentTask, ReplayMarker
from airflow_repro.errors import DagParseError, NotFoundError, ReproError

# Airflow's "0: no limit" still gets a limit here: a request must never wait forever.
DEFAULT_TIMEOUT_S = 30.0
# What the child needs beyond the import timeout: start Python and import Airflow (~3 s here).
STARTUP_ALLOWANCE_S = 60.0
TIMED_OUT = "timeout"


@dataclass(frozen=True)
class DagFile:
    """Where Airflow found a DAG: ``fileloc`` is for the child only; messages show ``display``."""

    dag_id: str
    fileloc: str
    bundle_name: str
    relative_fileloc: str

    @property
    def display(self) -> str:
        return f"{self.relative_fileloc} (bundle {self.bundle_name!r})"

    @property
    def bundle_root(self) -> str | None:
        suffix = "/" + self.relative_fileloc
        return self.fileloc[: -len(suffix)] if self.fileloc.endswith(suffix) else None

    def public(self, text: str) -> str:
        """``text`` with this file's absolute path (and its bundle's) made bundle-relative."""
        text = text.replace(self.fileloc, self.relative_fileloc)
        root = self.bundle_root
        return text.replace(root + "/", "") if root else text


# -- in the caller ----------------------------------------------------------------------------------
def dag_file(dag_id: str) -> DagFile:
    """The DAG's file as the DAG processor last recorded it."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        model = session.get(DagModel, dag_id)
        found = (model.fileloc, model.bundle_name, model.relative_fileloc) if model is not None else None
    if found is None or not found[0]:
        raise NotFoundError(f"DAG {dag_id!r} is not known to Airflow; check the dag_id with 'airflow dags list'")
    fileloc, bundle_name, relative = found
    fileloc = str(fileloc)
    return DagFile(
        dag_id=dag_id,
        fileloc=fileloc,
        bundle_name=bundle_name or "",
        relative_fileloc=relative or _relative_to_dags_folder(fileloc),
    )


def _relative_to_dags_folder(fileloc: str) -> str:
    from airflow import settings

    relative = os.path.relpath(fileloc, settings.DAGS_FOLDER)
    return os.path.basename(fileloc) if relative.startswith("..") else relative


def import_timeout(fileloc: str) -> float:
    """``[core] dagbag_import_timeout``, through Airflow's per-file policy hook."""
    from airflow import settings

    timeout = float(settings.get_dagbag_import_timeout(fileloc))
    return timeout if timeout > 0 else DEFAULT_TIMEOUT_S


@dataclass(frozen=True)
class CurrentDag:
    """A DAG's recorded tasks as its file defines them now, and the file's code snapshot."""

    tasks: dict[str, CurrentTask]
    code: CodeSnapshot | None
    unrecorded: list[str] = dataclasses.field(default_factory=list)  # plain tasks of the DAG
    downstream: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # every task: its direct children


def current_tasks_of(source: DagFile, conf: Mapping[str, Any]) -> CurrentDag:
    """The recorded tasks of a DAG as its file defines them now, parsed in a child process."""
    timeout = import_timeout(source.fileloc)
    request = {
        "dag_id": source.dag_id,
        "fileloc": source.fileloc,
        "bundle_root": source.bundle_root,
        "conf": dict(conf),
        "timeout": timeout,
    }
    command = [sys.executable, "-P", "-m", __name__]  # -P: the server's cwd must not shadow modules
    try:
        answer = run_child(command, json.dumps(request), timeout + STARTUP_ALLOWANCE_S)
    except subprocess.TimeoutExpired:
        answer = {"error_class": TIMED_OUT}
    if answer.get("error_class") == TIMED_OUT:
        raise DagParseError(_timeout_message(source, timeout))
    if "error" in answer or "tasks" not in answer:
        raise _error_from_child(source, answer)
    code = CodeSnapshot.model_validate(answer["code"]) if answer.get("code") else None
    tasks = {task["task_id"]: CurrentTask(**task) for task in answer["tasks"]}
    return CurrentDag(
        tasks=tasks,
        code=code,
        unrecorded=list(answer.get("unrecorded", [])),
        downstream={task: list(children) for task, children in answer.get("downstream", {}).items()},
    )


def run_child(command: list[str], request: str, timeout: float) -> dict[str, Any]:
    """Run ``command`` with ``request`` on stdin and read its JSON answer; kill its process group after.

    The child's stderr goes to a file, not a pipe: a process the DAG file started could keep a
    pipe open after the child exits, and reading it would then block.
    """
    with tempfile.TemporaryFile() as log:
        child = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True
        )
        try:
            out, _ = child.communicate(request, timeout=timeout)
        finally:
            _kill_group(child)  # also whatever the DAG file started at import
        if out.strip():
            return dict(json.loads(out))
        log.seek(0)
        lines = log.read()[-4000:].decode(errors="replace").strip().splitlines()
    return {
        "error": f"the parsing process exited with status {child.returncode} and no answer: "
        f"{lines[-1] if lines else 'no output'}"
    }


def _kill_group(child: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    for pipe in (child.stdin, child.stdout):
        if pipe is not None:
            pipe.close()


def _timeout_message(source: DagFile, timeout: float) -> str:
    return (
        f"DAG {source.dag_id!r} could not be parsed from {source.display} within {timeout:g} s "
        "([core] dagbag_import_timeout); the parse was stopped and nothing was planned. Make the "
        "file's top-level code fast (no network calls or sleeps at import), or raise the timeout"
    )


def _error_from_child(source: DagFile, answer: Mapping[str, Any]) -> ReproError:
    """The child's error as the same airflow-repro error class, or a parse error."""
    message = source.public(str(answer.get("error", "the parsing process gave no answer")))
    cls = getattr(errors, str(answer.get("error_class")), None)
    if isinstance(cls, type) and issubclass(cls, ReproError) and cls is not errors.ReplayRefused:  # needs its plan
        return cls(message)
    return DagParseError(message)


# -- in the child ---------------------------------------------------------------------------------
def load_dag_from_file(dag_id: str, fileloc: str, bundle_root: str | None = None) -> Any:
    """Parse ``fileloc`` as the DAG processor would (code drift needs the callables), with its
    bundle's folder on ``sys.path`` as Airflow's ``BundleDagBag`` puts it (DAG files import the
    modules next to them)."""
    from airflow.dag_processing.dagbag import DagBag

    from airflow_repro.airflow.restore import dags_folder

    for root in (bundle_root, dags_folder()):
        if root and root not in sys.path:
            sys.path.append(root)

    bag = DagBag(dag_folder=fileloc)
    if dag_id not in bag.dags:
        errors = "; ".join(f"{path}: {err.strip().splitlines()[-1]}" for path, err in bag.import_errors.items())
        raise DagParseError(f"DAG {dag_id!r} cannot be parsed from {fileloc} now: {errors or 'not defined there'}")
    return bag.dags[dag_id]


def current_tasks(
    dag: Any, conf: Mapping[str, Any], *, bundle_root: str | None = None
) -> tuple[dict[str, CurrentTask], CodeSnapshot | None]:
    """The recorded tasks of ``dag`` as they would run now with ``conf`` (mapped ones too), and
    the DAG file's code (raw: the planner scrubs it per recorded task)."""
    from airflow.sdk.definitions.param import process_params

    from airflow_repro.airflow.restore import current_code_snapshot
    from airflow_repro.airflow.secrets import build_redactor
    from airflow_repro.config import ReproSettings

    redactor = build_redactor(ReproSettings.from_airflow_conf())  # params compare as they are recorded
    tasks = {}
    code: CodeSnapshot | None = None
    for task in dag.tasks:
        recorded, map_count = recorded_view(task)
        if recorded is None:
            continue
        task_id = task.task_id
        params = process_params(dag, task, dict(conf), suppress_exception=True)
        params = ReplayMarker.strip(params)
        pin = recorded.repro_environment_pin()
        snapshot = current_code_snapshot(recorded, None, bundle_root=bundle_root)
        code = code or snapshot  # the same file for every task of the DAG
        tasks[task_id] = CurrentTask(
            task_id=task_id,
            source_hash=recorded.repro_source_hash(),
            environment_digest=_plannable_digest(pin),
            bundle_version=None,  # the DAG as parsed here is the bundle's current version
            task_params=redactor.redact(_json_ready(params)),
            code_snapshot=snapshot.digest if snapshot is not None else None,
            environment_kind=pin.kind,
            mapped=recorded is not task,
            map_count=map_count,
        )
    return tasks, code


def unrecorded_tasks(dag: Any) -> list[str]:
    """The DAG's tasks that airflow-repro does not record (plain operators, ``@task``)."""
    return sorted(task.task_id for task in dag.tasks if recorded_view(task)[0] is None)


def recorded_view(task: Any) -> tuple[Any, int | None]:
    """``(operator, map_count)``: the recorded operator ``task`` is (``None`` if it is not one),
    and for a mapped task how many instances it expands to where that is known now (a literal).

    A mapped task is a ``MappedOperator``, not an instance of its class: it is unmapped here with a
    placeholder for each mapped argument, which is all planning reads (its code and environment)."""
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    from airflow_repro.airflow.record import ReproTaskMixin

    if isinstance(task, ReproTaskMixin):
        return task, None
    if not isinstance(task, MappedOperator) or not issubclass(task.operator_class, ReproTaskMixin):
        return None, None
    expand_input = getattr(task, "op_kwargs_expand_input", None)  # @repro_task(...).expand(...)
    decorated = expand_input is not None
    expand_input = expand_input if decorated else task._get_specified_expand_input()
    placeholders = {name: None for name in _mapped_names(expand_input)}
    unmapped = task.unmap({"op_kwargs": placeholders} if decorated else placeholders)
    return unmapped, _map_count(expand_input)


def _mapped_names(expand_input: Any) -> list[str]:
    value = getattr(expand_input, "value", None)
    if isinstance(value, Mapping):
        return list(value)
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        return sorted({name for v in value for name in v})
    return []


def _map_count(expand_input: Any) -> int | None:
    """Instances a literal expansion makes (``expand(x=[1, 2], y=[3])``: 2; ``expand_kwargs([...])``:
    its length); ``None`` where an XCom decides."""
    value = getattr(expand_input, "value", None)
    if isinstance(value, list):
        return len(value)
    if not isinstance(value, Mapping) or not value:
        return None
    count = 1
    for values in value.values():
        if not isinstance(values, list | tuple | dict):
            return None
        count *= len(values)
    return count


def _plannable_digest(pin: Any) -> str | None:
    """The environment pin as the plan can compare it, or None where only the worker can.

    A lockfile and an image digest pin the same environment wherever they are read. A fingerprint
    describes the process computing it (here the CLI or API server, not the worker), and an image
    by tag is resolved when the task starts: the worker checks those (pinned mode).
    """
    if pin.kind == "lockfile" or (pin.kind == "image" and pin.digest.startswith("sha256:")):
        return pin.digest
    return None


def _json_ready(values: Mapping[str, Any]) -> dict[str, Any]:
    return dict(json.loads(json.dumps(dict(values), default=str)))


def _answer(request: Mapping[str, Any]) -> dict[str, Any]:
    """Parse the file and describe its recorded tasks (runs in a thread of the child)."""
    try:
        dag = load_dag_from_file(request["dag_id"], request["fileloc"], request.get("bundle_root"))
        tasks, code = current_tasks(dag, request["conf"], bundle_root=request.get("bundle_root"))
        unrecorded = unrecorded_tasks(dag)
    except ReproError as exc:
        return {"error": str(exc), "error_class": type(exc).__name__}
    except BaseException as exc:  # noqa: BLE001 - the DAG's own code failed (or exited) while its tasks were read
        return {
            "error": f"DAG {request['dag_id']!r} failed while its tasks were read: {type(exc).__name__}: {exc}",
            "error_class": DagParseError.__name__,
        }
    return {
        "tasks": [dataclasses.asdict(task) for task in tasks.values()],
        "code": code.model_dump(mode="json") if code is not None else None,
        "unrecorded": unrecorded,
        "downstream": {task.task_id: sorted(task.downstream_task_ids) for task in dag.tasks},
    }


def _parse_with_deadline(request: Mapping[str, Any]) -> dict[str, Any]:
    # A thread, not Airflow's SIGALRM: a DAG file can block or ignore the signal.
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(_answer(request)), daemon=True)
    worker.start()
    worker.join(float(request["timeout"]))
    return {"error_class": TIMED_OUT} if worker.is_alive() else result


def main() -> None:
    # The DAG file's prints and Airflow's logs must not mix with the answer: they go to stderr,
    # the answer to a private copy of stdout that processes started by the DAG do not inherit.
    answer_fd = os.dup(1)
    os.dup2(2, 1)
    import airflow_repro.airflow.operators  # noqa: F401  -- imported before the clock starts

    answer = _parse_with_deadline(json.loads(sys.stdin.read()))
    with os.fdopen(answer_fd, "w") as out:
        json.dump(answer, out)
    # No interpreter teardown: the parse thread may still be stuck, or the DAG left threads behind.
    os._exit(0)


if __name__ == "__main__":
    main()
