"""Recorded Python tasks: ``ReproPythonOperator`` and the ``@repro_task`` TaskFlow decorator.

The operator is a thin shell: it gathers the facts only Airflow knows (ids, bundle version,
params, conf) and hands them to the core :class:`~airflow_repro.core.recorder.TaskRecorder`,
which pins inputs before the callable runs and commits outputs with the manifest after it.
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
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk.bases.decorator import DecoratedOperator, task_decorator_factory
from airflow.sdk.exceptions import AirflowFailException

from airflow_repro import runtime
from airflow_repro.core.environment import fingerprint_pin, hardware, lockfile_pin, versions
from airflow_repro.core.gpus import resources_from_mapping
from airflow_repro.core.manifest import (
    AirflowIdentity,
    CodeVersion,
    EnvironmentPin,
    Parameters,
    ReplayInfo,
    Resources,
)
from airflow_repro.core.recorder import PreparedTask, RecordedTask, TaskEnvironment, TaskRecorder
from airflow_repro.core.redaction import Redactor
from airflow_repro.core.replay import REPLAY_CONF_KEY, load_plan
from airflow_repro.core.spec import Input, TaskSpec
from airflow_repro.errors import EnvironmentNotPinnedError, ManifestError, ReproError, ReproUserError

XCOM_KEY = "repro"


class ReproTaskMixin:
    """The record path every recorded operator shares; the operator supplies how the task runs.

    ``_repro_prepare`` pins the inputs and opens the task's workspace (user errors fail the task
    without retry); the operator runs the task; ``_repro_finish`` commits its outputs with the
    manifest and links MLflow (``recorder.abort`` on any failure). Also the OpenLineage methods.
    """

    repro_spec: TaskSpec

    def _repro_prepare(self, context: Any) -> tuple[TaskRecorder, PreparedTask]:
        from airflow_repro.airflow.secrets import build_redactor
        from airflow_repro.backends import build_store, build_tracker
        from airflow_repro.config import ReproSettings

        # Lineage facets read these; a stale value from an earlier attempt must never be reported.
        self._repro_prepared = self._repro_recorded = None
        self._repro_replay_plan = None
        try:
            settings = ReproSettings.from_airflow_conf()
            recorder = TaskRecorder(
                build_store(settings), build_tracker(settings),
                default_repository=settings.repository, default_branch=settings.default_branch,
                work_root=settings.work_dir,
            )
            self._repro_settings = settings
            environment = self._task_environment(context, build_redactor(settings))
            environment = self._apply_replay_pins(context, recorder, environment)
            prepared = recorder.prepare(self._spec_with_seed(environment), environment)
        except ReproError as exc:
            raise_if_final(exc)
            raise
        self._repro_prepared = prepared
        return recorder, prepared

    def _repro_finish(self, context: Any, recorder: TaskRecorder, prepared: PreparedTask) -> RecordedTask:
        try:
            recorded = recorder.finish(prepared)
        except BaseException as exc:
            recorder.abort(prepared, exc)
            raise_if_final(exc)
            raise
        self._repro_recorded = recorded
        self._report(context, recorded)
        return recorded

    def repro_environment_pin(self) -> EnvironmentPin:  # pragma: no cover - each operator has its own
        raise NotImplementedError

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

    # -- facts for the manifest ----------------------------------------------------------------
    def _spec_with_seed(self, environment: TaskEnvironment) -> TaskSpec:
        seed = environment.parameters.seed
        spec = self.repro_spec
        return spec if spec.seed == seed else TaskSpec(**{**spec.__dict__, "seed": seed})

    def _apply_replay_pins(self, context: Mapping[str, Any], recorder: TaskRecorder,
                           environment: TaskEnvironment) -> TaskEnvironment:
        """In a replay run, use the recorded seed and input commits, and check code and environment."""
        marker = (getattr(context["dag_run"], "conf", None) or {}).get(REPLAY_CONF_KEY)
        if not marker:
            return environment
        ident = environment.identity
        repository = marker.get("repository") or self.repro_spec.repository or recorder.default_repository
        plan = load_plan(recorder.store, repository, ident.dag_id, ident.run_id)
        self._repro_replay_plan = plan  # loaded once: a pod task requests the hardware this plan recorded
        if plan.digest != marker.get("plan_digest"):
            raise ManifestError(f"the replay plan of {ident.run_id!r} does not match the digest its run was given")
        pins = plan.pins_for(ident.task_id, ident.map_index)
        replay = ReplayInfo(of_run_id=plan.original_run_id, mode=plan.mode, plan_digest=plan.digest,
                            original_manifest_digest=pins.original_manifest_digest if pins else None)
        if pins is None:
            if plan.mode == "pinned":
                raise ReproUserError(f"task {ident.task_id} was not in the replayed run {plan.original_run_id!r}")
            return dataclasses.replace(environment, replay=replay)
        if plan.mode == "pinned":
            _check_pinned(ident.task_id, "source code", pins.source_hash, environment.code.source_hash)
            _check_pinned(ident.task_id, "environment", pins.environment_digest, environment.environment.digest)
        parameters = environment.parameters.model_copy(update={"seed": pins.seed})
        return dataclasses.replace(
            environment, parameters=parameters, replay=replay, pinned_inputs={i.name: i for i in pins.inputs}
        )

    def _task_environment(self, context: Mapping[str, Any], redactor: Redactor) -> TaskEnvironment:
        ti = context["ti"]
        dag_run = context["dag_run"]
        seed = self.repro_spec.seed if self.repro_spec.seed is not None else secrets.randbelow(2**31)
        params = _plain(_without_replay_marker(context.get("params") or {}))
        conf = _plain(_without_replay_marker(getattr(dag_run, "conf", None) or {}))
        op_kwargs = _plain({k: v for k, v in (getattr(self, "op_kwargs", None) or {}).items() if k != XCOM_KEY})
        logical_date = getattr(dag_run, "logical_date", None)
        return TaskEnvironment(
            identity=AirflowIdentity(
                dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id,
                map_index=ti.map_index if ti.map_index is not None else -1,
                try_number=ti.try_number, run_type=str(getattr(dag_run, "run_type", "") or "") or None,
                logical_date=logical_date.isoformat() if logical_date else None,
            ),
            code=self._code_version(ti),
            environment=self.repro_environment_pin(),
            # What is recorded: secrets replaced by keyed markers. The task itself gets the values.
            parameters=Parameters(
                task_params=redactor.redact(params),
                dag_run_conf=redactor.redact(conf),
                op_kwargs=redactor.redact(op_kwargs),
                seed=seed,
                secret_names=sorted(self.repro_spec.secret_names),
            ),
            runtime_params=params,
            runtime_kwargs=op_kwargs,
            versions=versions(_repro_version()),
            hardware=hardware(),
        )

    def _code_version(self, ti: Any) -> CodeVersion:
        bundle = getattr(ti, "bundle_instance", None)
        fn = getattr(self, "python_callable", None)
        fileloc = self.dag.fileloc if self.has_dag() else None
        return CodeVersion(
            bundle_name=getattr(bundle, "name", None),
            bundle_version=getattr(bundle, "version", None),
            dag_file=_relative_dag_file(fileloc, getattr(bundle, "path", None)),
            callable=f"{_dag_module_name(fn.__module__)}:{fn.__qualname__}" if fn is not None else None,
            source_hash=self.repro_source_hash(),
            module_hash=_module_hash(inspect.getsourcefile(fn) if fn is not None else fileloc),
        )

    def repro_source_hash(self) -> str:
        """sha256 of the callable's own source, as recorded in manifests (used for drift checks)."""
        return _source_hash(self.python_callable)

    def _report(self, context: Any, recorded: RecordedTask) -> None:
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
        self.log.info("airflow-repro recorded %s", json.dumps(summary, sort_keys=True))
        context["ti"].xcom_push(key=XCOM_KEY, value=summary)


class ReproPythonOperator(ReproTaskMixin, PythonOperator):
    """Run a Python callable with its inputs pinned and its outputs recorded.

    :param inputs: name -> :class:`~airflow_repro.Input`; each is resolved to a commit id before
        the callable runs and materialized read-only (``runtime.current().input_path(name)``).
    :param outputs: repository paths the callable writes (a trailing ``/`` declares a folder);
        committed together with the task's manifest on the DAG run's branch after success.
    :param seed: the random seed given to the task; ``None`` draws one and records it.
    :param repository: repository for outputs (default: ``[repro] repository``).
    :param lockfile: a pinned requirements file (relative to the DAG file); the callable then
        runs in a virtualenv built from it. Without one, the running environment is fingerprinted.
    :param resources: ``Resources`` or a dict (``cpu``, ``memory``, ``gpu``, ``accelerator``).
    :param secret_names: names of connections, variables or env vars the task uses as secrets;
        only these names are recorded, never their values.
    """

    template_fields: Sequence[str] = (*PythonOperator.template_fields,)
    ui_color = "#e6f4ea"

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        inputs: Mapping[str, Input] | None = None,
        outputs: Collection[str] = (),
        seed: int | None = None,
        repository: str | None = None,
        lockfile: str | None = None,
        resources: Resources | Mapping[str, Any] | None = None,
        secret_names: Collection[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(python_callable=python_callable, **kwargs)
        # Quantities are validated as for a pod; an accelerator name is free text here (nothing schedules by it).
        spec_resources = resources_from_mapping(self.task_id, resources, allow_zero_gpu=True, local=True)
        try:
            self.repro_spec = TaskSpec(
                task_id=self.task_id,
                inputs=dict(inputs or {}),
                outputs=tuple(outputs),
                seed=seed,
                repository=repository,
                lockfile=lockfile,
                resources=spec_resources,
                secret_names=tuple(secret_names),
            )
            self.repro_lockfile_path = _locate_lockfile(self.task_id, lockfile, python_callable)
        except (ReproUserError, ValueError) as exc:
            raise ReproUserError(f"task {self.task_id!r}: {exc}") from exc

    # -- execution -----------------------------------------------------------------------------
    def execute(self, context: Any) -> Any:
        recorder, prepared = self._repro_prepare(context)
        task_context = runtime.TaskContext.from_file(prepared.context_file)
        context[XCOM_KEY] = task_context
        runtime._activate(task_context)
        os.environ[runtime.CONTEXT_ENV] = str(prepared.context_file)
        try:
            runtime.seed_everything(task_context.seed)
            result = super().execute(context)
        except BaseException as exc:
            recorder.abort(prepared, exc)
            raise_if_final(exc)
            raise
        finally:
            runtime._activate(None)
            os.environ.pop(runtime.CONTEXT_ENV, None)
        self._repro_finish(context, recorder, prepared)
        return result

    def execute_callable(self) -> Any:
        if self.repro_lockfile_path is None:
            return super().execute_callable()
        from airflow_repro.adapters.local_venv import ensure_venv, run_in_venv

        prepared = self._repro_prepared
        python = ensure_venv(self.repro_lockfile_path, prepared.env.environment.digest, self._repro_settings.venv_cache)
        arguments = {k: v for k, v in self.op_kwargs.items() if k != XCOM_KEY}
        try:
            json.dumps(arguments)
        except TypeError as exc:
            raise AirflowFailException(
                f"task {self.task_id}: in a lockfile environment the callable's arguments must be JSON "
                f"(Airflow context objects such as ti or dag_run are not available there): {exc}"
            ) from exc
        return run_in_venv(python, self.python_callable, arguments, prepared.context_file, prepared.workdir)

    def repro_environment_pin(self) -> EnvironmentPin:
        """The pin this task gets here and now: its lockfile's hash, or this environment's fingerprint."""
        if self.repro_lockfile_path is not None:
            return lockfile_pin(self.repro_lockfile_path, declared_as=self.repro_spec.lockfile or "")
        return fingerprint_pin()


class _ReproDecoratedOperator(DecoratedOperator, ReproPythonOperator):
    custom_operator_name = "@repro_task"
    template_fields: Sequence[str] = ("templates_dict", "op_args", "op_kwargs")

    def __init__(self, *, python_callable: Callable[..., Any], op_args: Any, op_kwargs: Any, **kwargs: Any) -> None:
        super().__init__(
            kwargs_to_upstream={"python_callable": python_callable, "op_args": op_args, "op_kwargs": op_kwargs},
            python_callable=python_callable, op_args=op_args, op_kwargs=op_kwargs, **kwargs,
        )


EXECUTION_MODES = ("local", "kubernetes")
# Arguments only a pod task uses; a local run of the same DAG ignores them.
POD_ONLY_ARGUMENTS = ("image", "resolve_tag", "kubernetes", "work_volume_claim")


def repro_task(python_callable: Callable[..., Any] | None = None, *, execution: str | None = None,
               **kwargs: Any) -> Any:
    """TaskFlow decorator for recorded tasks; takes :class:`ReproPythonOperator`'s arguments.

    .. code-block:: python

        @repro_task(inputs={"raw": Input("raw/wine.csv")}, outputs=["features/train.csv"], seed=42)
        def featurize():
            ctx = runtime.current()
            ...

    With ``image="registry/repo@sha256:..."`` (and optionally ``kubernetes={...}``: more
    KubernetesPodOperator arguments), the same task runs in a pod when ``[repro] execution`` is
    ``kubernetes`` (or ``execution="kubernetes"`` is given here), and in the worker otherwise.
    ``repro_task.kubernetes(...)`` always runs in a pod.
    """
    if _execution_mode(execution) == "kubernetes":
        from airflow_repro.airflow.kubernetes import repro_kubernetes_task

        pod_arguments = dict(kwargs.pop("kubernetes", None) or {})
        if not kwargs.get("image") and not pod_arguments.get("image"):
            name = kwargs.get("task_id") or getattr(python_callable, "__name__", "?")
            raise ReproUserError(
                f"task {name}: runs in a Kubernetes pod ([repro] "
                "execution = kubernetes or execution='kubernetes') but has no image: give "
                "image='registry/repo@sha256:<digest>' (or run it with execution='local')"
            )
        return repro_kubernetes_task(python_callable, **pod_arguments, **kwargs)
    for name in POD_ONLY_ARGUMENTS:
        kwargs.pop(name, None)
    return task_decorator_factory(
        python_callable=python_callable, decorated_operator_class=_ReproDecoratedOperator, **kwargs
    )


repro_task.kubernetes = functools.partial(repro_task, execution="kubernetes")  # type: ignore[attr-defined]


def _execution_mode(execution: str | None) -> str:
    """Where a decorated task runs: the argument, else ``[repro] execution`` (read when the DAG is parsed)."""
    if execution is None:
        from airflow.configuration import conf

        execution = conf.get("repro", "execution", fallback="local") or "local"
    if not isinstance(execution, str):
        from airflow_repro.errors import ConfigError

        raise ConfigError(f"execution={execution!r} must be 'local' or 'kubernetes' (a string)")
    mode = execution.strip().lower()
    if mode not in EXECUTION_MODES:
        from airflow_repro.errors import ConfigError

        raise ConfigError(
            f"execution {execution!r} is not one of {EXECUTION_MODES}: set [repro] execution "
            "(AIRFLOW__REPRO__EXECUTION) or execution= to 'local' or 'kubernetes'"
        )
    return mode


# -- helpers -----------------------------------------------------------------------------------
def raise_if_final(exc: BaseException) -> None:
    """Raise Airflow's no-retry failure where a retry of ``exc`` cannot succeed: a user error,
    damaged stored data, a task misusing the runtime. Otherwise return (the caller re-raises)."""
    if isinstance(exc, AirflowFailException):
        return
    if (isinstance(exc, ReproError) and not exc.retryable) or isinstance(exc, runtime.RuntimeContextError):
        raise AirflowFailException(str(exc)) from exc


def _without_replay_marker(values: Any) -> dict[str, Any]:
    """Params / conf as the user gave them: the replay marker is recorded in ``manifest.replay``."""
    plain = values.dump() if hasattr(values, "dump") else dict(values)
    plain.pop(REPLAY_CONF_KEY, None)
    return plain


def _check_pinned(task_id: str, what: str, pinned: str, current: str) -> None:
    if pinned != current:
        raise ReproUserError(
            f"task {task_id}: its {what} changed since the replay was planned (recorded {pinned}, now {current}); "
            "replay with mode latest-code to accept it"
        )


def _locate_lockfile(task_id: str, lockfile: str | None, fn: Callable[..., Any]) -> Path | None:
    if lockfile is None:
        return None
    path = Path(lockfile)
    if not path.is_absolute():
        source = inspect.getsourcefile(fn)
        path = (Path(source).parent if source else Path.cwd()) / path
    if not path.is_file():
        raise EnvironmentNotPinnedError(
            f"lockfile {lockfile!r} not found (looked at {path}); give a path relative to the DAG file "
            "of a pinned requirements file, e.g. made with 'uv pip compile requirements.in -o "
            f"{lockfile}', or drop lockfile= to pin task {task_id} by environment fingerprint"
        )
    return path


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
    roots = [bundle_path] if bundle_path is not None else []
    with contextlib.suppress(Exception):
        from airflow.configuration import conf

        roots.append(conf.get("core", "dags_folder"))
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


def _source_hash(fn: Callable[..., Any]) -> str:
    from airflow_repro.adapters.local_venv import callable_source

    try:
        source = callable_source(fn)
    except (OSError, TypeError, ReproUserError):
        source = repr(fn)
    return "sha256:" + hashlib.sha256(source.encode()).hexdigest()


@functools.cache
def _repro_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("airflow-repro")
    except PackageNotFoundError:
        return None
