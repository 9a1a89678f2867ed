"""The record path every recorded operator shares, and the state of one task attempt.

A recorded operator (``ReproPythonOperator``, ``ReproKubernetesPodOperator``) mixes in
:class:`ReproTaskMixin` and supplies what :class:`RecordedOperator` states: its
:class:`~airflow_repro.core.spec.TaskSpec`, its environment pin and its source hash. Its
``execute`` then runs:

1. :func:`start_attempt`: a fresh :class:`Attempt`, the one place the attempt's state lives (the
   operator, the lineage facets and the pod's build read it there);
2. :func:`prepare`: settings, recorder, the facts of the attempt, replay pins; inputs pinned and
   the workspace laid out (user errors fail the task without retry);
3. the operator runs the task;
4. :func:`finish`: outputs committed with the manifest, MLflow linked (``recorder.abort`` on any
   failure).

An operator object can outlive one attempt (retries in ``dag.test()``), so nothing an earlier
attempt left may be reported for a later one: each attempt starts from an empty :class:`Attempt`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import json
import os
import re
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from airflow.sdk.exceptions import AirflowFailException

from airflow_repro.airflow import restore
from airflow_repro.core.archive import ArchiveObject, archive_digest
from airflow_repro.core.code_snapshot import CodeSnapshot
from airflow_repro.core.environment import hardware, versions
from airflow_repro.core.manifest import AirflowIdentity, CodeVersion, EnvironmentPin, Parameters, ReplayInfo
from airflow_repro.core.ports import StagedObject
from airflow_repro.core.recorder import PreparedTask, RecordedAttempt, TaskEnvironment, TaskRecorder
from airflow_repro.core.redaction import Redactor, is_redacted, redacted_paths
from airflow_repro.core.replay import ReplayMarker, ReplayPlan, TaskPins, load_plan
from airflow_repro.core.spec import TaskSpec
from airflow_repro.errors import ManifestError, ReproError, ReproUserError
from airflow_repro.runtime import is_final_error

if TYPE_CHECKING:
    from airflow_repro.config import ReproSettings

XCOM_KEY = "repro"


@dataclasses.dataclass
class Attempt:
    """What one task attempt has set up and done so far; a fresh one per ``execute``.

    Filled in by the record path as the attempt goes: ``settings`` and ``recorder`` first, the
    ``replay_plan`` in a replay run, ``prepared`` once inputs are pinned, ``recorded`` once the
    outputs are committed. Pod tasks extend it (``PodAttempt``) with what their pod needs.
    """

    settings: ReproSettings | None = None
    recorder: TaskRecorder | None = None
    replay_plan: ReplayPlan | None = None  # loaded once: a pod task requests the hardware it recorded
    snapshot: CodeSnapshot | None = None  # the task's code as this worker has it
    restoration: restore.Restoration | None = None  # set in a pinned replay: what runs instead
    prepared: PreparedTask | None = None
    recorded: RecordedAttempt | None = None


class RecordedOperator(Protocol):
    """What the record path needs from the operator it serves (besides Airflow's own ``task_id``,
    ``dag``/``has_dag()`` and ``log``; a ``python_callable``, ``op_args`` and ``op_kwargs`` where it has them)."""

    task_id: str
    repro_spec: TaskSpec
    repro_attempt: Attempt | None

    @property
    def log(self) -> Any: ...

    @property
    def dag(self) -> Any: ...

    def has_dag(self) -> bool: ...

    def repro_environment_pin(self) -> EnvironmentPin:
        """The environment this attempt runs in: a lockfile's hash, a fingerprint, an image digest."""
        ...

    def repro_source_hash(self) -> str:
        """sha256 of the task's code, as recorded in manifests (used for drift checks)."""
        ...

    def repro_archive(
        self, snapshot: CodeSnapshot | None, pin: EnvironmentPin, script: str | None
    ) -> tuple[ArchiveObject, ...]:
        """What a replay restores the task from (see :func:`airflow_repro.airflow.restore.archive_objects`)."""
        ...


class ReproTaskMixin:
    """Makes an operator a recorded one: the attempt it runs, and its OpenLineage methods.

    The operator calls :func:`start_attempt`, :func:`prepare` and :func:`finish` around its task
    and implements :meth:`repro_environment_pin` (see :class:`RecordedOperator`).
    """

    repro_spec: TaskSpec
    repro_attempt: Attempt | None = None  # the running (or last) attempt; see start_attempt()

    def repro_new_attempt(self) -> Attempt:
        """An empty attempt of the kind this operator keeps (pod tasks keep more)."""
        return Attempt()

    def repro_environment_pin(self) -> EnvironmentPin:  # pragma: no cover - each operator has its own
        raise NotImplementedError

    def repro_source_hash(self) -> str:
        """sha256 of the callable's own source, as recorded in manifests (used for drift checks)."""
        return source_hash(self.python_callable)  # type: ignore[attr-defined]

    def repro_script(self) -> str | None:
        """The program the task's own interpreter runs, where it is one (a pod's ``python -c``)."""
        return None

    def repro_archive(
        self, snapshot: CodeSnapshot | None, pin: EnvironmentPin, script: str | None
    ) -> tuple[ArchiveObject, ...]:
        """What a replay restores this task from: its code snapshot, its environment record, the
        script its own interpreter runs (each as archived: secrets it hard-codes replaced)."""
        from airflow_repro.core.environment import environment_record

        record = environment_record() if pin.kind == "fingerprint" else None
        return restore.archive_objects(snapshot, pin, environment=record, script=script)

    def repro_code_version(self, task_instance: Any = None) -> CodeVersion:
        """Where the task's code comes from (``task_instance``, where known, names its bundle)."""
        return code_version(self, task_instance)  # type: ignore[arg-type]

    # -- OpenLineage (called by the provider's listener; never raises into the task) ------------
    def get_openlineage_facets_on_start(self) -> Any:
        from airflow_repro.airflow.lineage import facets_on_start

        return facets_on_start(self)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from airflow_repro.airflow.lineage import facets_on_complete

        return facets_on_complete(self, task_instance)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        from airflow_repro.airflow.lineage import facets_on_failure

        return facets_on_failure(self, task_instance)


# -- the record path -----------------------------------------------------------------------------
def start_attempt(operator: ReproTaskMixin) -> Attempt:
    """Give ``operator`` a fresh, empty attempt (its ``repro_new_attempt()``) and return it.

    First thing in ``execute``: the lineage facets read the attempt, and a stale value from an
    earlier attempt must never be reported.
    """
    attempt = operator.repro_new_attempt()
    operator.repro_attempt = attempt
    return attempt


@dataclasses.dataclass(frozen=True)
class Reused:
    """A task a replay from a later task does not run: ``execute`` returns ``return_value``."""

    return_value: Any


def reuse_if_planned(operator: RecordedOperator, context: Any, attempt: Attempt) -> Reused | None:
    """In a replay from a later task, record this task as reused instead of running it.

    Called first in every recorded operator's ``execute``, before anything of the task runs (no
    user code, no pod): the original outputs are committed on the replay's branch with a manifest
    saying so, and the original run's return value is returned (its downstream tasks pull it)."""
    marker = ReplayMarker.from_conf(getattr(context["dag_run"], "conf", None))
    if marker is None:
        return None
    from airflow_repro.backends import Backends
    from airflow_repro.core.reuse import commit_reused_task

    try:
        backends = Backends.from_airflow_conf()
        ident = attempt_identity(context)
        repository = marker.repository or operator.repro_spec.repository or backends.settings.repository
        plan = _replay_plan(backends.store, repository, ident, marker)
        attempt.replay_plan = plan
        reused = plan.reused(ident.task_id, ident.map_index)
        if reused is None:
            _refuse_unrecorded_map_index(plan, ident)
            return None
        done = commit_reused_task(
            backends.store,
            plan,
            reused,
            ident,
            default_branch=backends.settings.default_branch,
            work_root=backends.settings.work_dir,
        )
    except ReproError as exc:
        raise_if_final(exc)
        raise
    attempt.recorded = RecordedAttempt(
        manifest=done.manifest, commit=done.commit, reused_commit=done.adopted, tracked_run=None
    )
    operator.log.info(
        "airflow-repro: task reused from run %s at commit %s (the replay starts from task %s): its code did "
        "not run; its recorded outputs are committed to this run's branch",
        plan.original_run_id,
        reused.commit_id,
        plan.from_task,
    )
    _report(operator, context, attempt.recorded)
    ti = context["ti"]
    return Reused(
        ti.xcom_pull(task_ids=ident.task_id, run_id=plan.original_run_id, map_indexes=ident.map_index, default=None)
    )


def _refuse_unrecorded_map_index(plan: ReplayPlan, ident: AirflowIdentity) -> None:
    """A task the plan reuses must not run its code at a map index the original did not have."""
    if any(task.task_id == ident.task_id for task in plan.reused_tasks or ()):
        raise ReproUserError(
            f"task {ident.task_id} is reused by this replay (it starts from {plan.from_task}), but map index "
            f"{ident.map_index} was not recorded in run {plan.original_run_id!r}: the task expands differently "
            f"now; replay from {ident.task_id} or an earlier task instead"
        )


def _replay_plan(store: Any, repository: str, ident: AirflowIdentity, marker: ReplayMarker) -> ReplayPlan:
    plan = load_plan(store, repository, ident.dag_id, ident.run_id)
    if plan.digest != marker.plan_digest:
        raise ManifestError(f"the replay plan of {ident.run_id!r} does not match the digest its run was given")
    return plan


def prepare(
    operator: RecordedOperator, context: Any, attempt: Attempt, *, materialize: bool = True
) -> tuple[TaskRecorder, PreparedTask]:
    """Settings, recorder and the attempt's facts; inputs pinned and the workspace laid out
    (``materialize=False``: inputs pinned, not copied; a pod fetches them itself)."""
    from airflow_repro.airflow.secrets import build_redactor
    from airflow_repro.backends import Backends

    try:
        backends = Backends.from_airflow_conf()
        settings = backends.settings
        recorder = TaskRecorder(
            backends.store,
            backends.tracker(),
            default_repository=settings.repository,
            default_branch=settings.default_branch,
            work_root=settings.work_dir,
        )
        attempt.settings, attempt.recorder = settings, recorder
        environment = task_environment(operator, context, build_redactor(settings), attempt)
        environment = _apply_replay_pins(operator, context, attempt, recorder, environment)
        prepared = recorder.prepare(
            _spec_with_seed(operator.repro_spec, environment), environment, materialize=materialize
        )
    except ReproError as exc:
        raise_if_final(exc)
        raise
    attempt.prepared = prepared
    return recorder, prepared


def finish(
    operator: RecordedOperator,
    context: Any,
    attempt: Attempt,
    recorder: TaskRecorder,
    prepared: PreparedTask,
    *,
    outputs: Mapping[str, StagedObject] | None = None,
) -> RecordedAttempt:
    """Commit the outputs with the manifest (or abort the attempt), then report it in XCom
    (``outputs``: already in the store, see :meth:`TaskRecorder.finish`)."""
    try:
        recorded = recorder.finish(prepared, outputs=outputs)
    except BaseException as exc:
        recorder.abort(prepared, exc)
        raise_if_final(exc)
        raise
    attempt.recorded = recorded
    _report(operator, context, recorded)
    return recorded


def raise_if_final(exc: BaseException) -> None:
    """Raise Airflow's no-retry failure where a retry of ``exc`` cannot succeed: a user error,
    damaged stored data, a task misusing the runtime, also where the task's code wrapped one
    (``raise ... from``). Otherwise return (the caller re-raises)."""
    if isinstance(exc, AirflowFailException):
        return
    if is_final_error(exc):  # RuntimeContextError is a ReproUserError
        raise AirflowFailException(str(exc)) from exc


def naming_the_task(task_id: str, exc: Exception) -> ReproUserError:
    """``exc`` (a bad declaration) as a user error whose message names the task once: prefixed
    with ``task <task_id>:`` unless it names the task already."""
    message = str(exc)
    if not re.search(rf"\btask '?{re.escape(task_id)}'?(?![\w.-])", message):
        message = f"task {task_id}: {message}"
    if isinstance(exc, ReproUserError):
        with contextlib.suppress(TypeError):  # a subclass whose constructor takes more than a message
            return type(exc)(message)
    return ReproUserError(message)


# -- facts for the manifest ----------------------------------------------------------------------
def _spec_with_seed(spec: TaskSpec, environment: TaskEnvironment) -> TaskSpec:
    seed = environment.parameters.seed
    return spec if spec.seed == seed else TaskSpec(**{**spec.__dict__, "seed": seed})


def _apply_replay_pins(
    operator: RecordedOperator,
    context: Mapping[str, Any],
    attempt: Attempt,
    recorder: TaskRecorder,
    environment: TaskEnvironment,
) -> TaskEnvironment:
    """In a replay run, use the recorded seed and input commits, and check code and environment."""
    marker = ReplayMarker.from_conf(getattr(context["dag_run"], "conf", None))
    if marker is None:
        return environment
    ident = environment.identity
    repository = marker.repository or operator.repro_spec.repository or recorder.default_repository
    plan = attempt.replay_plan or _replay_plan(recorder.store, repository, ident, marker)
    attempt.replay_plan = plan
    pins = plan.pins_for(ident.task_id, ident.map_index)
    replay = ReplayInfo(
        of_run_id=plan.original_run_id,
        mode=plan.mode,
        plan_digest=plan.digest,
        original_manifest_digest=pins.original_manifest_digest if pins else None,
        code="current",  # a pinned replay that restores says so (restore.restoration_for)
        environment="current",
    )
    if pins is None:
        if plan.mode == "pinned":
            raise ReproUserError(f"task {ident.task_id} was not in the replayed run {plan.original_run_id!r}")
        return dataclasses.replace(environment, replay=replay)
    parameters = environment.parameters.model_copy(update={"seed": pins.seed})
    environment = dataclasses.replace(
        environment, parameters=parameters, replay=replay, pinned_inputs={i.name: i for i in pins.inputs}
    )
    if plan.mode == "pinned":
        restoration, environment = restore.restoration_for(
            ident.task_id, pins, environment, recorder.store, plan.original_repository
        )
        attempt.restoration = restoration
        _log_restoration(operator, restoration)
        environment = _pin_arguments(operator, pins, environment)
    return environment


def _pin_arguments(operator: RecordedOperator, pins: TaskPins, environment: TaskEnvironment) -> TaskEnvironment:
    """A pinned replay calls the task with the arguments recorded for it (a literal edited in the
    DAG file since, an upstream that returns something else now): each recorded value, except a
    secret (recorded as its marker only), which must be given again with the same value."""
    if pins.op_args is None and pins.op_kwargs is None:
        return environment  # a plan from before arguments were pinned, or a task without any
    task_id = environment.identity.task_id
    recorded_kwargs, current_kwargs = dict(pins.op_kwargs or {}), environment.parameters.op_kwargs
    kwargs = {
        key: _pinned_value(
            task_id, f"argument {key!r}", value, current_kwargs.get(key), environment.task_kwargs.get(key)
        )
        for key, value in recorded_kwargs.items()
    }
    recorded_args, current_args = list(pins.op_args or []), list(environment.parameters.op_args or [])
    real_args = list(environment.task_args)
    args = [
        _pinned_value(
            task_id,
            f"positional argument {n}",
            value,
            current_args[n] if n < len(current_args) else None,
            real_args[n] if n < len(real_args) else None,
        )
        for n, value in enumerate(recorded_args)
    ]
    if kwargs == dict(environment.task_kwargs) and args == real_args:
        return environment
    operator.log.info("airflow-repro: the task's arguments differ now; the replay passes the recorded ones")
    extra = {k: v for k, v in (getattr(operator, "op_kwargs", None) or {}).items() if k == XCOM_KEY}
    operator.op_kwargs = {**kwargs, **extra}  # type: ignore[attr-defined]  # what PythonOperator calls with
    operator.op_args = args  # type: ignore[attr-defined]
    parameters = environment.parameters.model_copy(update={"op_kwargs": recorded_kwargs, "op_args": pins.op_args})
    return dataclasses.replace(environment, parameters=parameters, runtime_kwargs=kwargs, runtime_args=args)


def _pinned_value(task_id: str, what: str, recorded: Any, current_recorded: Any, current: Any) -> Any:
    """The value a pinned replay passes: the recorded one, or, for a secret, the current value
    when its marker is the recorded one."""
    holds_secret = is_redacted(recorded) or any(True for _ in redacted_paths(recorded))
    if not holds_secret:
        return recorded
    if current_recorded != recorded:
        raise ReproUserError(
            f"task {task_id}: {what} holds a secret whose value differs from the recorded one (only its "
            "keyed digest was recorded); give the task the same value again, or replay with mode latest-code"
        )
    return current


def _log_restoration(operator: RecordedOperator, restoration: restore.Restoration) -> None:
    if restoration.restores_code:
        operator.log.info("airflow-repro: the code changed since the replayed run; running its archived code")
    if restoration.restores_environment:
        operator.log.info(
            "airflow-repro: the environment changed since the replayed run; running in one rebuilt from its record"
        )


def task_environment(
    operator: RecordedOperator, context: Mapping[str, Any], redactor: Redactor, attempt: Attempt | None = None
) -> TaskEnvironment:
    """The facts of this attempt only Airflow knows, as the recorder takes them.

    ``parameters`` holds what is recorded (secrets replaced by keyed markers); ``runtime_params``,
    ``runtime_args`` and ``runtime_kwargs`` the real values the task itself is given; ``archive``
    what a replay restores the task from (the code snapshot is kept on ``attempt``).
    """
    ti = context["ti"]
    pin = operator.repro_environment_pin()
    dag_run = context["dag_run"]
    spec = operator.repro_spec
    seed = spec.seed if spec.seed is not None else secrets.randbelow(2**31)
    params = _plain(ReplayMarker.strip(_as_dict(context.get("params") or {})))
    conf = _plain(ReplayMarker.strip(_as_dict(getattr(dag_run, "conf", None) or {})))
    op_kwargs = _plain({k: v for k, v in (getattr(operator, "op_kwargs", None) or {}).items() if k != XCOM_KEY})
    op_args = _plain(list(getattr(operator, "op_args", None) or ()))
    parameters = Parameters(
        task_params=redactor.redact(params),
        dag_run_conf=redactor.redact(conf),
        op_kwargs=redactor.redact(op_kwargs),
        op_args=redactor.redact(op_args) if op_args else None,  # left out of the manifest where there are none
        seed=seed,
        secret_names=sorted(spec.secret_names),
    )
    # What is archived must hold no secret the record hides: literals equal to one become markers.
    secret_marker = restore.secret_marker_for(redactor, parameters, dict(enumerate(parameters.op_args or ())))
    snapshot = restore.current_code_snapshot(operator, ti, secret_marker=secret_marker)
    if attempt is not None:
        attempt.snapshot = snapshot
    script = restore.archived_script(operator, secret_marker)
    return TaskEnvironment(
        identity=attempt_identity(context),
        code=code_version(operator, ti, snapshot, script),
        environment=pin,
        parameters=parameters,
        runtime_params=params,
        runtime_kwargs=op_kwargs,
        runtime_args=op_args,
        versions=versions(_repro_version()),
        hardware=hardware(),
        archive=operator.repro_archive(snapshot, pin, script),
    )


def attempt_identity(context: Mapping[str, Any]) -> AirflowIdentity:
    """The task instance and try this attempt is, as manifests record it."""
    ti, dag_run = context["ti"], context["dag_run"]
    logical_date = getattr(dag_run, "logical_date", None)
    return AirflowIdentity(
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        task_id=ti.task_id,
        map_index=ti.map_index if ti.map_index is not None else -1,
        try_number=ti.try_number,
        run_type=str(getattr(dag_run, "run_type", "") or "") or None,
        logical_date=logical_date.isoformat() if logical_date else None,
    )


def code_version(
    operator: RecordedOperator, ti: Any, snapshot: CodeSnapshot | None = None, script: str | None = None
) -> CodeVersion:
    """Where the task's code comes from and its hashes (``ti`` may be ``None``: no bundle known);
    ``snapshot`` and ``script``: the code snapshot and the script archived for the task."""
    bundle = getattr(ti, "bundle_instance", None)
    fn = getattr(operator, "python_callable", None)
    fileloc = operator.dag.fileloc if operator.has_dag() else None
    return CodeVersion(
        bundle_name=getattr(bundle, "name", None),
        bundle_version=getattr(bundle, "version", None),
        dag_file=_relative_dag_file(fileloc, getattr(bundle, "path", None)),
        callable=f"{_dag_module_name(fn.__module__)}:{fn.__qualname__}" if fn is not None else None,
        source_hash=operator.repro_source_hash(),
        module_hash=_module_hash(inspect.getsourcefile(fn) if fn is not None else fileloc),
        snapshot=snapshot.digest if snapshot is not None else None,
        script=archive_digest(script.encode()) if script is not None else None,
    )


def source_hash(fn: Callable[..., Any]) -> str:
    """sha256 of a callable's own source (without decorators), as recorded in manifests."""
    from airflow_repro.adapters.local_venv import callable_source

    try:
        source = callable_source(fn)
    except (OSError, TypeError, ReproUserError):
        source = repr(fn)
    return "sha256:" + hashlib.sha256(source.encode()).hexdigest()


def _report(operator: RecordedOperator, context: Any, recorded: RecordedAttempt) -> None:
    run = recorded.tracked_run
    summary = {
        "repository": recorded.manifest.output_repository,
        "branch": recorded.manifest.output_branch,
        "commit_id": recorded.commit.id,
        "manifest_digest": recorded.manifest.digest,
        "environment_pin": recorded.manifest.environment.digest,
        "mlflow_run_id": run.run_id if run else None,
        "reused_commit": recorded.reused_commit,
    }
    operator.log.info("airflow-repro recorded %s", json.dumps(summary, sort_keys=True))
    context["ti"].xcom_push(key=XCOM_KEY, value=summary)


# -- helpers -------------------------------------------------------------------------------------
def _as_dict(values: Any) -> dict[str, Any]:
    """Params (Airflow's ``ParamsDict``, dumped to their values) or conf as a plain dict."""
    return values.dump() if hasattr(values, "dump") else dict(values)


def _plain(value: Any) -> Any:
    """JSON-ready copy of params/conf; values that are not JSON are left for the recorder to reject."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return value


def _relative_dag_file(fileloc: str | None, bundle_path: Any) -> str | None:
    """The DAG file as recorded: relative to its bundle (or the DAG folder), never the server's path."""
    if not fileloc:
        return None
    roots = [root for root in (bundle_path, restore.dags_folder()) if root is not None]
    for root in roots:
        with contextlib.suppress(ValueError, TypeError):
            return Path(fileloc).resolve().relative_to(Path(root).resolve()).as_posix()
    return Path(fileloc).name


def _dag_module_name(module: str) -> str:
    """The DAG file's own module name: Airflow imports DAG files as ``unusual_prefix_<sha1 of
    the path>_<name>``, which would tie the recorded name to where the bundle was checked out."""
    return re.sub(r"^unusual_prefix_[0-9a-f]{40}_", "", module)


@functools.cache
def _module_hash(path: str | None) -> str | None:
    if not path or not os.path.isfile(path):
        return None
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


@functools.cache
def _repro_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("airflow-repro")
    except PackageNotFoundError:
        return None


__all__ = [
    "XCOM_KEY",
    "Attempt",
    "RecordedOperator",
    "ReproTaskMixin",
    "Reused",
    "attempt_identity",
    "code_version",
    "finish",
    "naming_the_task",
    "prepare",
    "raise_if_final",
    "reuse_if_planned",
    "source_hash",
    "start_attempt",
    "task_environment",
]
