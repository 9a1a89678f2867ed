"""OpenLineage for recorded tasks, through the Airflow OpenLineage provider.

The provider's listener calls ``get_openlineage_facets_on_start/complete/failure`` of
``ReproPythonOperator`` and ``ReproKubernetesPodOperator`` (KPO has no such methods of its own), which
call the functions here. They return the provider's ``OperatorLineage``:

* START: the declared inputs and outputs (an input declared at a full commit id already carries
  its ``version``), and where the code lives;
* COMPLETE: inputs at the commit ids they were resolved to, outputs at the commit that holds them
  with the manifest (``version`` facets; ``repro_object``: content hash and ref), the
  ``repro_manifest`` run facet (manifest digest and pins), ``executionParameters``, ``sourceCodeLocation`` / ``sourceCode``, and ``repro_replay`` on
  a replay;
* FAIL: the resolved inputs and the pins (a failed attempt commits nothing, so no outputs).

The provider adds ``parent``, ``processing_engine``, ``nominalTime`` and, on failure,
``errorMessage``. :func:`emit_verdict` sends the verdict of a verified replay later, in OTHER
events of the replay's runs.

Lineage is a side channel: nothing here raises. A part that cannot be built is logged and left
out, and the event goes out with the rest. This module (and the OpenLineage client) is imported
only when the provider asks for lineage, i.e. when OpenLineage is enabled.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_repro.airflow.record import Attempt

log = logging.getLogger(__name__)


# -- the provider's own facets: no DAG-run conf secret ----------------------------------------------
_PROVIDER_UTILS = "airflow.providers.openlineage.utils.utils"


def redact_provider_run_conf() -> None:
    """Make the provider's ``airflow`` run facets carry the DAG-run conf as we record it.

    The provider puts ``dag_run.conf`` in every task and DAG-run event (``DagRunInfo``), and its
    redactor never reaches inside it (``DagRunInfo`` is a ``dict`` subclass, which the redactor
    walks by ``__dict__``): a conf ``password`` would reach every lineage consumer. A ``casts``
    entry (the provider's own way to shape a field) redacts it as the manifests do. Only done
    where the provider is already loaded (it is heavy to import), and once.
    """
    import sys

    utils = sys.modules.get(_PROVIDER_UTILS)
    info = getattr(utils, "DagRunInfo", None)
    if info is None or "conf" in info.casts and getattr(info.casts["conf"], "_repro", False):
        return

    def conf(dag_run: Any) -> Any:
        return _recorded_conf(getattr(dag_run, "conf", None) or {})

    conf._repro = True  # type: ignore[attr-defined]
    info.casts = {**info.casts, "conf": conf}


def _recorded_conf(conf: Any) -> Any:
    try:
        from airflow_repro.airflow.secrets import build_redactor
        from airflow_repro.config import ReproSettings

        return build_redactor(ReproSettings.from_airflow_conf()).redact(dict(conf))
    except Exception:  # never leak because the redactor could not be built: hide every value
        log.warning("airflow-repro could not redact the DAG-run conf for lineage; hiding it", exc_info=True)
        return dict.fromkeys(conf, "***") if isinstance(conf, dict) else "***"


# -- the operator's three methods ----------------------------------------------------------------
def facets_on_start(operator: Any) -> Any:
    """Lineage known before the task runs: declared datasets and the code's location."""
    return _build("start", operator, None, _on_start)


def facets_on_complete(operator: Any, task_instance: Any) -> Any:
    """Lineage of a recorded attempt: versioned datasets, manifest digest, pins."""
    return _build("complete", operator, task_instance, _on_complete)


def facets_on_failure(operator: Any, task_instance: Any) -> Any:
    """Lineage of a failed attempt: what it read and the pins it ran with; no outputs."""
    return _build("failure", operator, task_instance, _on_failure)


def _build(event: str, operator: Any, task_instance: Any, builder: Callable[[Any, Any, Any], None]) -> Any:
    redact_provider_run_conf()  # the provider builds its own run facet after calling us
    try:
        from airflow.providers.openlineage.extractors import OperatorLineage
    except Exception:  # the provider is what calls us; without it there is nothing to return
        log.warning(
            "airflow-repro: OpenLineage provider not importable; no lineage for %s", _task_id(operator), exc_info=True
        )
        return None
    lineage: Any = OperatorLineage()
    try:
        builder(operator, task_instance, lineage)
    except Exception:
        log.warning(
            "airflow-repro could not build the OpenLineage %s facets of task %s; the event is sent with what was built",
            event,
            _task_id(operator),
            exc_info=True,
        )
    return lineage


class _Parts:
    """Builds each part of an ``OperatorLineage`` on its own: a failing part is logged and skipped."""

    def __init__(self, operator: Any, lineage: Any) -> None:
        self.operator = operator
        self.lineage = lineage

    def __call__(self, what: str, build: Callable[[], None]) -> None:
        try:
            build()
        except Exception:
            log.warning(
                "airflow-repro: OpenLineage %s of task %s left out", what, _task_id(self.operator), exc_info=True
            )


def _on_start(operator: Any, task_instance: Any, lineage: Any) -> None:
    from airflow_repro.adapters import openlineage_facets as olf

    part = _Parts(operator, lineage)
    namespace = _namespace(operator)
    part("inputs", lambda: lineage.inputs.extend(_declared_inputs(operator, namespace)))
    part(
        "outputs",
        lambda: lineage.outputs.extend(
            olf.output_dataset(namespace, _output_repository(operator), path) for path in operator.repro_spec.outputs
        ),
    )
    part("job facets", lambda: lineage.job_facets.update(_job_facets(operator, _code_version(operator, None), None)))


def _on_complete(operator: Any, task_instance: Any, lineage: Any) -> None:
    from airflow_repro.adapters import openlineage_facets as olf
    from airflow_repro.core.recorder import manifest_path

    attempt = _attempt(operator)
    recorded = _this_attempts(attempt.recorded if attempt else None, task_instance)
    if recorded is None:
        log.warning(
            "airflow-repro: task %s completed without a record of this attempt; lineage as at start", _task_id(operator)
        )
        _on_start(operator, task_instance, lineage)
        return
    part = _Parts(operator, lineage)
    manifest = recorded.manifest
    ident = manifest.identity
    namespace = _namespace(operator)
    part("inputs", lambda: lineage.inputs.extend(olf.resolved_input(namespace, i) for i in manifest.inputs))
    part(
        "outputs",
        lambda: lineage.outputs.extend(
            olf.committed_output(namespace, manifest.output_repository, manifest.output_branch, o, recorded.commit.id)
            for o in manifest.outputs
        ),
    )
    part(
        olf.MANIFEST_FACET,
        lambda: lineage.run_facets.update(
            {
                olf.MANIFEST_FACET: olf.manifest_run_facet(
                    identity=ident,
                    code=manifest.code,
                    environment=manifest.environment,
                    repository=manifest.output_repository,
                    branch=manifest.output_branch,
                    seed=manifest.parameters.seed,
                    resources=manifest.resources,
                    mlflow_run=manifest.tracking,
                    manifest=manifest,
                    manifest_path=manifest_path(ident.task_id, ident.map_index),
                    commit_id=recorded.commit.id,
                    reused_commit=recorded.reused_commit,
                )
            }
        ),
    )
    part(
        "executionParameters",
        lambda: lineage.run_facets.update(
            {"executionParameters": olf.execution_parameters_facet(manifest.parameters, manifest.replay)}
        ),
    )
    if manifest.replay is not None:
        part(
            olf.REPLAY_FACET,
            lambda: lineage.run_facets.update({olf.REPLAY_FACET: olf.replay_run_facet(manifest.replay)}),
        )
    part("job facets", lambda: lineage.job_facets.update(_job_facets(operator, manifest.code, task_instance)))


def _on_failure(operator: Any, task_instance: Any, lineage: Any) -> None:
    from airflow_repro.adapters import openlineage_facets as olf

    attempt = _attempt(operator)
    prepared = _this_attempts(attempt.prepared if attempt else None, task_instance)
    part = _Parts(operator, lineage)
    namespace = _namespace(operator)
    if prepared is None:  # failed before its inputs were pinned (e.g. an unknown input)
        part("inputs", lambda: lineage.inputs.extend(_declared_inputs(operator, namespace)))
        part(
            "job facets",
            lambda: lineage.job_facets.update(
                _job_facets(operator, _code_version(operator, task_instance), task_instance)
            ),
        )
        return
    env = prepared.env
    part("inputs", lambda: lineage.inputs.extend(olf.resolved_input(namespace, i) for i in prepared.inputs))
    part(
        olf.MANIFEST_FACET,
        lambda: lineage.run_facets.update(
            {
                olf.MANIFEST_FACET: olf.manifest_run_facet(
                    identity=env.identity,
                    code=env.code,
                    environment=env.environment,
                    repository=prepared.repository,
                    branch=prepared.branch,
                    seed=env.parameters.seed,
                    resources=prepared.spec.resources,
                    mlflow_run=prepared.tracked_run,
                )
            }
        ),
    )
    part(
        "executionParameters",
        lambda: lineage.run_facets.update(
            {"executionParameters": olf.execution_parameters_facet(env.parameters, env.replay)}
        ),
    )
    if env.replay is not None:
        part(olf.REPLAY_FACET, lambda: lineage.run_facets.update({olf.REPLAY_FACET: olf.replay_run_facet(env.replay)}))
    part("job facets", lambda: lineage.job_facets.update(_job_facets(operator, env.code, task_instance)))


# -- helpers -------------------------------------------------------------------------------------
def _task_id(operator: Any) -> str:
    return str(getattr(operator, "task_id", "?"))


def _attempt(operator: Any) -> Attempt | None:
    """The operator's running (or last) attempt (``None`` on an operator that never ran here)."""
    return getattr(operator, "repro_attempt", None)


def _code_version(operator: Any, task_instance: Any) -> Any:
    return operator.repro_code_version(task_instance)


def _settings(operator: Any) -> Any:
    attempt = _attempt(operator)
    settings = attempt.settings if attempt is not None else None
    if settings is None:
        from airflow_repro.config import ReproSettings

        settings = ReproSettings.from_airflow_conf()
    return settings


def _namespace(operator: Any) -> str:
    from airflow_repro.adapters.openlineage_facets import store_namespace

    return store_namespace(_settings(operator).store_uri)


def _output_repository(operator: Any) -> str:
    return operator.repro_spec.repository or _settings(operator).repository


def _declared_inputs(operator: Any, namespace: str) -> list[Any]:
    from airflow_repro.adapters.openlineage_facets import input_dataset
    from airflow_repro.core.naming import is_commit_id

    default_repository = _output_repository(operator)
    return [
        input_dataset(
            namespace,
            spec.repository or default_repository,
            spec.path,
            commit_id=spec.ref if spec.ref and is_commit_id(spec.ref) else None,
        )
        for _, spec in sorted(operator.repro_spec.inputs.items())
    ]


def _this_attempts(value: Any, task_instance: Any) -> Any:
    """A prepared or recorded task, if it belongs to this very attempt (operators can outlive one)."""
    if value is None or task_instance is None:
        return value
    ident = value.manifest.identity if hasattr(value, "manifest") else value.env.identity
    map_index = getattr(task_instance, "map_index", None)
    same = (
        ident.dag_id == getattr(task_instance, "dag_id", ident.dag_id)
        and ident.run_id == getattr(task_instance, "run_id", ident.run_id)
        and ident.task_id == getattr(task_instance, "task_id", ident.task_id)
        and ident.try_number == getattr(task_instance, "try_number", ident.try_number)
        and ident.map_index == (-1 if map_index is None else map_index)
    )
    return value if same else None


def _job_facets(operator: Any, code: Any, task_instance: Any) -> dict[str, Any]:
    from airflow_repro.adapters import openlineage_facets as olf

    facets: dict[str, Any] = {}
    bundle = getattr(task_instance, "bundle_instance", None) if task_instance is not None else None
    dag_file = operator.dag.fileloc if operator.has_dag() else None
    location = olf.source_code_location_facet(code, dag_file_path=dag_file, repo_url=getattr(bundle, "repo_url", None))
    if location is not None:
        facets["sourceCodeLocation"] = location
    function = getattr(operator, "python_callable", None)  # a pod task running its image's command has none
    if function is not None and _source_enabled():
        with contextlib.suppress(OSError, TypeError):
            facets["sourceCode"] = olf.source_code_facet(inspect.getsource(function))
    return facets


def _source_enabled() -> bool:
    from airflow.providers.openlineage import conf

    return bool(conf.is_source_enabled())


# -- the verdict of a replay ---------------------------------------------------------------------
def emit_verdict(report: Any, original: Any, replayed: Any) -> int:
    """Send the verdict of a verified replay as OTHER events: one on each replayed task's run and
    one on the replay's DAG run, each with the ``repro_replay`` facet (verdict, task status, and
    the OpenLineage run it replays). Returns how many events were handed to the provider.

    ``report`` is a ``VerificationReport``; ``original`` and ``replayed`` are the ``StoredRun``s
    it compares. Needs the Airflow metadata DB (as ``airflow-repro verify`` has) to name the runs
    as the provider did. Never raises; does nothing when OpenLineage is disabled.
    """
    try:
        from airflow.providers.openlineage.api import emit, is_openlineage_active

        if not is_openlineage_active():
            return 0
        events = verdict_events(report, original, replayed)
        for event in events:
            emit(event)
        return len(events)
    except Exception:
        log.warning(
            "airflow-repro could not send the OpenLineage verdict of replay %s",
            getattr(report, "replay_run_id", "?"),
            exc_info=True,
        )
        return 0


def verdict_events(report: Any, original: Any, replayed: Any) -> list[Any]:
    from airflow.providers.openlineage import conf
    from airflow.providers.openlineage.plugins.adapter import OpenLineageAdapter
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import parent_run

    from airflow_repro.adapters import openlineage_facets as olf
    from airflow_repro.core.manifest import ReplayInfo

    namespace = conf.namespace()
    dag_id = report.dag_id
    replay_date, replay_clear = _dag_run_date(dag_id, report.replay_run_id)
    original_date, original_clear = _dag_run_date(dag_id, report.original_run_id)
    replay_dag_run = OpenLineageAdapter.build_dag_run_id(dag_id, replay_date, replay_clear)
    original_dag_run = OpenLineageAdapter.build_dag_run_id(dag_id, original_date, original_clear)
    verified = {(t.task_id, t.map_index): t for t in report.tasks}
    originals = {(t.manifest.identity.task_id, t.manifest.identity.map_index): t.manifest for t in original.tasks}
    now = datetime.now(UTC).isoformat()
    parent = parent_run.ParentRunFacet(
        run=parent_run.Run(runId=replay_dag_run),
        job=parent_run.Job(namespace=namespace, name=dag_id),
        producer=olf.PRODUCER,
    )
    events, dag_replay = [], None
    for task in replayed.tasks:
        m = task.manifest
        if m.replay is None:
            continue
        dag_replay = m.replay
        key = (m.identity.task_id, m.identity.map_index)
        job_name = f"{dag_id}.{m.identity.task_id}"
        before = originals.get(key)
        original_run = None
        if before is not None:
            original_run = (
                OpenLineageAdapter.build_task_instance_run_id(
                    dag_id,
                    before.identity.task_id,
                    before.identity.try_number,
                    original_date,
                    before.identity.map_index,
                ),
                namespace,
                job_name,
            )
        facet = olf.replay_run_facet(
            m.replay,
            original_run=original_run,
            verdict=report.verdict,
            task_status=verified[key].status if key in verified else "extra",
            verified_at=report.verified_at,
            task=verified.get(key),
        )
        run_id = OpenLineageAdapter.build_task_instance_run_id(
            dag_id, m.identity.task_id, m.identity.try_number, replay_date, m.identity.map_index
        )
        events.append(
            RunEvent(
                eventType=RunState.OTHER,
                eventTime=now,
                producer=olf.PRODUCER,
                run=Run(runId=run_id, facets={olf.REPLAY_FACET: facet, "parent": parent}),
                job=Job(namespace=namespace, name=job_name),
            )
        )
    if dag_replay is not None:
        whole = ReplayInfo(of_run_id=report.original_run_id, mode=dag_replay.mode, plan_digest=dag_replay.plan_digest)
        facet = olf.replay_run_facet(
            whole,
            original_run=(original_dag_run, namespace, dag_id),
            verdict=report.verdict,
            verified_at=report.verified_at,
        )
        events.append(
            RunEvent(
                eventType=RunState.OTHER,
                eventTime=now,
                producer=olf.PRODUCER,
                run=Run(runId=replay_dag_run, facets={olf.REPLAY_FACET: facet}),
                job=Job(namespace=namespace, name=dag_id),
            )
        )
    return events


def _dag_run_date(dag_id: str, run_id: str) -> tuple[datetime, int]:
    """The instant the provider names a DAG run's OpenLineage runs by, and its clear number."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.execute(
            select(DagRun.logical_date, DagRun.run_after, DagRun.clear_number).where(
                DagRun.dag_id == dag_id, DagRun.run_id == run_id
            )
        ).one_or_none()
    if row is None:
        raise LookupError(f"DAG run {run_id!r} of {dag_id!r} is not in the Airflow metadata DB")
    logical_date, run_after, clear_number = row
    return (logical_date or run_after), int(clear_number or 0)
