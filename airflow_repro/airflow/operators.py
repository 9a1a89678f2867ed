"""Recorded Python tasks: ``ReproPythonOperator`` and the ``@repro_task`` TaskFlow decorator.

The operator is a thin shell: the record path it shares with the pod operator
(:mod:`airflow_repro.airflow.record`) gathers the facts only Airflow knows (ids, bundle version,
params, conf) and hands them to the core :class:`~airflow_repro.core.recorder.TaskRecorder`,
which pins inputs before the callable runs and commits outputs with the manifest after it.
``ReproTaskMixin``, ``raise_if_final`` and ``XCOM_KEY`` live in ``record``; their names here are
kept for existing imports.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk.bases.decorator import DecoratedOperator, task_decorator_factory
from airflow.sdk.exceptions import AirflowFailException

from airflow_repro import runtime
from airflow_repro.airflow import record
from airflow_repro.airflow.record import XCOM_KEY, ReproTaskMixin, raise_if_final
from airflow_repro.core.environment import fingerprint_pin, lockfile_pin
from airflow_repro.core.gpus import resources_from_mapping
from airflow_repro.core.manifest import EnvironmentPin, Resources
from airflow_repro.core.spec import DeclaredOutputs, Input, TaskSpec, declared_outputs
from airflow_repro.errors import EnvironmentNotPinnedError, ReproUserError
from airflow_repro.task_formats import RESTORED_CODE_ENV


class ReproPythonOperator(ReproTaskMixin, PythonOperator):
    """Run a Python callable with its inputs pinned and its outputs recorded.

    :param inputs: name -> :class:`~airflow_repro.Input`; each is resolved to a commit id before
        the callable runs and materialized read-only (``runtime.current().input_path(name)``).
    :param outputs: repository paths the callable writes (a trailing ``/`` declares a folder);
        committed together with the task's manifest on the DAG run's branch after success. A mapped
        task's paths hold ``{map_index}`` (``shards/{map_index}.csv``), so its instances write apart.
        A mapping declares tolerances too: ``{"models/model.pt": Output(rel_tol=1e-5), "log.txt": None}``
        (recorded in the manifest; ``verify`` compares the output's numbers within it).
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
        outputs: DeclaredOutputs = (),
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
            paths, tolerances = declared_outputs(self.task_id, outputs)
            self.repro_spec = TaskSpec(
                task_id=self.task_id,
                inputs=dict(inputs or {}),
                outputs=paths,
                tolerances=tolerances,
                seed=seed,
                repository=repository,
                lockfile=lockfile,
                resources=spec_resources,
                secret_names=tuple(secret_names),
            )
            if not _from_mapped(self):  # a mapped task's instances are checked as each prepares
                self.repro_spec.for_map_index(-1)
            self.repro_lockfile_path = _locate_lockfile(self.task_id, lockfile, python_callable)
        except (ReproUserError, ValueError) as exc:
            raise record.naming_the_task(self.task_id, exc) from exc

    # -- execution -----------------------------------------------------------------------------
    def execute(self, context: Any) -> Any:
        attempt = record.start_attempt(self)
        if (reused := record.reuse_if_planned(self, context, attempt)) is not None:
            return reused.return_value  # a replay from a later task: this one's code does not run
        recorder, prepared = record.prepare(self, context, attempt)
        task_context = runtime.TaskContext.from_file(prepared.context_file)  # as the task's own process reads it
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
        record.finish(self, context, attempt, recorder, prepared)
        return result

    def execute_callable(self) -> Any:
        restoration = self.repro_attempt.restoration if self.repro_attempt is not None else None
        restoring = restoration is not None and (restoration.restores_code or restoration.restores_environment)
        if self.repro_lockfile_path is None and not restoring:
            return super().execute_callable()
        attempt = self.repro_attempt
        if attempt is None or attempt.prepared is None or attempt.settings is None:  # pragma: no cover
            raise RuntimeError(f"task {self.task_id}: execute_callable() runs inside execute(), after prepare()")
        if restoration is not None and restoring:
            return self._run_restored(attempt, restoration)
        from airflow_repro.adapters.local_venv import ensure_venv, run_in_venv

        prepared = attempt.prepared
        assert self.repro_lockfile_path is not None
        python = ensure_venv(self.repro_lockfile_path, prepared.env.environment.digest, attempt.settings.venv_cache)
        args, kwargs = self._json_arguments("in a lockfile environment")
        return run_in_venv(python, self.python_callable, kwargs, prepared.context_file, prepared.workdir, args=args)

    def _json_arguments(self, where: str) -> tuple[list[Any], dict[str, Any]]:
        """The callable's positional and keyword arguments, which leave this process as JSON."""
        args = list(self.op_args or ())
        kwargs = {k: v for k, v in self.op_kwargs.items() if k != XCOM_KEY}
        try:
            json.dumps([args, kwargs])
        except (TypeError, ValueError) as exc:
            raise AirflowFailException(
                f"task {self.task_id}: {where} the callable's arguments must be JSON "
                f"(Airflow context objects such as ti or dag_run are not available there): {exc}"
            ) from exc
        return args, kwargs

    def _run_restored(self, attempt: record.Attempt, restoration: Any) -> Any:
        """A pinned replay whose code or environment drifted: run the archived code, in the
        recorded environment (rebuilt from its record, or from the archived lockfile)."""
        from airflow_repro.adapters.local_venv import ensure_venv, run_in_venv

        prepared, settings = attempt.prepared, attempt.settings
        assert prepared is not None and settings is not None
        args, kwargs = self._json_arguments("in a restored replay")
        code = restoration.code or attempt.snapshot
        module_name, _, qualname = (prepared.env.code.callable or ":").partition(":")
        lockfile = self._restored_lockfile(restoration, prepared.workdir)
        if lockfile is not None:  # a lockfile venv runs the function's own source, as when recorded
            from airflow_repro.core.code_snapshot import callable_source_in

            source = callable_source_in(restoration.code, qualname) if restoration.code is not None else None
            python = ensure_venv(lockfile, prepared.env.environment.digest, settings.venv_cache)
            return run_in_venv(
                python, self.python_callable, kwargs, prepared.context_file, prepared.workdir, args=args, source=source
            )
        if code is None or not qualname:
            raise AirflowFailException(
                f"task {self.task_id}: its code could not be snapshotted here, so it cannot run in a restored environment"
            )
        from airflow_repro.adapters.code_restore import run_restored
        from airflow_repro.core.code_snapshot import callable_source_in

        python, env = Path(sys.executable), dict(os.environ)
        if restoration.environment is not None:
            from airflow_repro.adapters.environment_builder import ensure_environment

            python = ensure_environment(restoration.environment, settings.venv_cache)
            # The rebuilt environment is the whole record: nothing of today's may come in by the path.
            for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE"):
                env.pop(name, None)
        callable_source_in(code, qualname)  # fails here, naming the function, if the archive lacks it
        return run_restored(
            python,
            code,
            module_name=module_name,
            qualname=qualname,
            args=args,
            kwargs=kwargs,
            context_file=prepared.context_file,
            workdir=prepared.workdir,
            env=env,
        )

    def _restored_lockfile(self, restoration: Any, workdir: Path) -> Path | None:
        """The lockfile to build from: the archived one, else this task's own (None: no lockfile)."""
        if restoration.lockfile is not None:
            path = workdir / "restored.lock"
            path.write_bytes(restoration.lockfile)
            return path
        if restoration.environment is not None:
            return None  # the recorded environment was a fingerprint: it is rebuilt instead
        return self.repro_lockfile_path

    def repro_archive(self, snapshot: Any, pin: EnvironmentPin, script: str | None) -> tuple[Any, ...]:
        """The code snapshot, and the environment record or the lockfile's content."""
        if self.repro_lockfile_path is None or pin.kind != "lockfile":
            return super().repro_archive(snapshot, pin, script)
        from airflow_repro.airflow.restore import archive_objects
        from airflow_repro.core.environment import lockfile_content

        return archive_objects(snapshot, pin, lockfile=lockfile_content(self.repro_lockfile_path))

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
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            **kwargs,
        )


EXECUTION_MODES = ("local", "kubernetes")
# Arguments only a pod task uses; a local run of the same DAG ignores them.
POD_ONLY_ARGUMENTS = ("image", "resolve_tag", "kubernetes", "work_volume_claim", "transport")


def repro_task(
    python_callable: Callable[..., Any] | None = None, *, execution: str | None = None, **kwargs: Any
) -> Any:
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
            if python_callable is None and not kwargs.get("task_id"):
                # @repro_task(...) with arguments: the task is named after the function it decorates next.
                return lambda function: repro_task(function, execution=execution, kubernetes=pod_arguments, **kwargs)
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
        from airflow_repro.config import airflow_option

        return str(airflow_option("execution"))  # checked (and lower-cased) by the settings table
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
def _from_mapped(operator: Any) -> bool:
    """Whether Airflow built ``operator`` for one instance of a mapped task (``MappedOperator.unmap``)."""
    return bool(getattr(operator, "_BaseOperator__from_mapped", False))


def _locate_lockfile(task_id: str, lockfile: str | None, fn: Callable[..., Any]) -> Path | None:
    if lockfile is None:
        return None
    path = Path(lockfile)
    if not path.is_absolute():
        source = inspect.getsourcefile(fn)
        path = (Path(source).parent if source else Path.cwd()) / path
    if not path.is_file():
        if os.environ.get(RESTORED_CODE_ENV):
            return None  # an archived DAG file imported to run one function: its lockfiles are not needed there
        raise EnvironmentNotPinnedError(
            f"lockfile {lockfile!r} not found (looked at {path}); give a path relative to the DAG file "
            "of a pinned requirements file, e.g. made with 'uv pip compile requirements.in -o "
            f"{lockfile}', or drop lockfile= to pin task {task_id} by environment fingerprint"
        )
    return path


__all__ = ["XCOM_KEY", "ReproPythonOperator", "ReproTaskMixin", "raise_if_final", "repro_task"]
