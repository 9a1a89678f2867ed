"""Replay and verify, on the Airflow side: parse the DAG as it is now, check the recorded run's
state, trigger the replay run, wait for it, and verify it. Shared by the CLI and the REST API.

The decisions (pins, drift, verdict) are made by the core (``core.replay``, ``core.verify``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from airflow_repro.airflow import dag_parsing
from airflow_repro.backends import Backends
from airflow_repro.core import metadata_keys as keys
from airflow_repro.core.ports import ExperimentTracker, TrackerLog, TrackerRun
from airflow_repro.core.replay import (
    ReplayMarker,
    ReplayMode,
    ReplayPlan,
    check_from_task,
    conf_with_secrets,
    list_replays,
    load_plan,
    plan_replay,
    replay_run_id,
    save_plan,
)
from airflow_repro.core.runs import StoredRun, load_run
from airflow_repro.core.verify import (
    TaskVerification,
    Tolerance,
    VerificationReport,
    add_damage,
    load_report,
    repeat_report,
    run_damage,
    save_report,
    store_comparer,
    verify_replay,
    without_secrets,
)
from airflow_repro.errors import (
    NotFoundError,
    ObjectNotFound,
    ReplayRefused,
    ReproError,
    ReproInfraError,
    ReproUserError,
    RunNotFinished,
)

log = logging.getLogger(__name__)

FINISHED_STATES = ("success", "failed")


# -- the DAG as it is now ------------------------------------------------------------------------
def load_current_dag(dag_id: str) -> Any:
    """Parse the DAG's file in this process. Main thread only: the import timeout is a signal.

    :func:`plan` parses in a child process instead (:mod:`airflow_repro.airflow.dag_parsing`).
    """
    source = dag_parsing.dag_file(dag_id)
    return dag_parsing.load_dag_from_file(dag_id, source.fileloc, source.bundle_root)


def dag_run_state(dag_id: str, run_id: str) -> str | None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        state = session.scalar(select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
    return str(state) if state is not None else None


# -- replay --------------------------------------------------------------------------------------
def plan(
    backends: Backends,
    dag_id: str,
    run_id: str,
    mode: ReplayMode,
    *,
    secrets: Mapping[str, Any] | None = None,
    from_task: str | None = None,
) -> ReplayPlan:
    """Check every pin of a recorded run against the DAG as it is now; trigger nothing.

    ``secrets``: values of the run's redacted DAG-run conf entries (dotted paths), given again;
    only their markers reach the plan. ``from_task``: replay that task and its downstream tasks
    only, reusing the recorded outputs of the others."""
    source = dag_parsing.dag_file(dag_id)
    state = dag_run_state(dag_id, run_id)
    if state is None:
        raise NotFoundError(f"DAG {dag_id!r} has no run {run_id!r}; list runs with 'airflow dags list-runs {dag_id}'")
    if state not in FINISHED_STATES:
        raise RunNotFinished(f"run {run_id!r} of {dag_id!r} is {state}; replay it once it has finished")
    recorded = load_run(backends.store, dag_id, run_id)
    if from_task is not None and from_task not in {t.manifest.identity.task_id for t in recorded.tasks}:
        check_from_task(recorded, from_task, {})  # before the parse: an unknown task is said at once
    conf = recorded.tasks[0].manifest.parameters.dag_run_conf if recorded.tasks else {}
    # Parsed last, after the cheap checks, and in a child process that a hanging file cannot block.
    current = dag_parsing.current_tasks_of(source, conf)
    from airflow_repro.airflow.restore import ArchiveChecks

    return plan_replay(
        recorded,
        current.tasks,
        backends.store,
        mode=mode,
        replay_run_id=replay_run_id(run_id),
        secret_markers=_secret_markers(backends, secrets or {}),
        restore=ArchiveChecks(backends.store, current.code, _redactor(backends)),
        unrecorded_tasks=current.unrecorded,
        from_task=from_task,
        downstream=current.downstream,
    )


def _redactor(backends: Backends) -> Any:
    from airflow_repro.airflow.secrets import build_redactor

    return build_redactor(backends.settings)


def _secret_markers(backends: Backends, secrets: Mapping[str, Any]) -> dict[str, str]:
    if not secrets:
        return {}
    from airflow_repro.airflow.secrets import build_redactor

    redactor = build_redactor(backends.settings)
    return {key: redactor.marker(value) for key, value in secrets.items()}


def replay_conf(replay: ReplayPlan, secrets: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The replay run's DAG-run conf: the recorded one, its secrets given again, and the marker."""
    marker = ReplayMarker.for_plan(replay, repository=replay.original_repository)
    return marker.add_to(conf_with_secrets(replay.dag_run_conf, secrets or {}))


def trigger(
    backends: Backends,
    replay: ReplayPlan,
    *,
    triggered_by: str,
    user: str | None,
    secrets: Mapping[str, Any] | None = None,
) -> str:
    """Store the plan on the replay's branch and trigger the replay run; refuse on blocking drift.

    ``secrets`` go into the new run's conf (Airflow keeps DAG-run conf, as for the original run),
    never into the plan or the record."""
    if replay.blocking_drift:
        raise ReplayRefused(replay)
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType

    # One transaction: the run becomes visible to the scheduler only once its plan is stored, and
    # a run Airflow refuses (duplicate id, invalid params...) leaves no plan behind.
    with create_session() as session:
        trigger_dag(
            replay.dag_id,
            triggered_by=DagRunTriggeredByType[triggered_by],
            triggering_user_name=user,
            run_id=replay.replay_run_id,
            conf=replay_conf(replay, secrets),
            note=f"airflow-repro replay of {replay.original_run_id} (mode {replay.mode})",
            session=session,
        )
        session.flush()
        save_plan(backends.store, replay, default_branch=backends.settings.default_branch)
    return replay.replay_run_id


def wait(dag_id: str, run_id: str, *, timeout: float = 3600, poll: float = 2.0, on_poll: Any = None) -> str:
    deadline = time.monotonic() + timeout
    while True:
        state = dag_run_state(dag_id, run_id)
        if on_poll is not None:
            on_poll(state)
        if state in FINISHED_STATES:
            return str(state)
        if time.monotonic() > deadline:
            raise ReproInfraError(f"run {run_id!r} of {dag_id!r} did not finish within {timeout:.0f} s (now {state})")
        time.sleep(poll)


def replays_of(backends: Backends, dag_id: str, run_id: str) -> list[ReplayPlan]:
    recorded = load_run(backends.store, dag_id, run_id)
    return list_replays(backends.store, recorded.repository, dag_id, run_id)


# -- verify --------------------------------------------------------------------------------------
def verify(
    backends: Backends,
    dag_id: str,
    replay_run_id: str,
    tolerance: Tolerance | None = None,
    *,
    deep: bool = False,
) -> VerificationReport:
    """Compare a finished replay with the run it replays; store the report with the replay.

    Outputs whose hashes differ are compared by content (streamed from the store) with the
    built-in comparators and any registered in :data:`airflow_repro.core.comparison.default_registry`.
    ``tolerance``: None compares metrics exactly and each output within its declared tolerance; a
    tolerance given is the metrics' and overrides every output's. ``deep`` also re-reads both runs'
    outputs from the store and re-hashes them: a damaged object makes its task differ."""
    from airflow_repro.adapters.comparators import install_builtin_comparators

    install_builtin_comparators()
    replayed = load_run(backends.store, dag_id, replay_run_id)
    the_plan = _plan_of(backends, replayed)
    state = dag_run_state(dag_id, replay_run_id)
    if state is not None and state not in FINISHED_STATES:
        raise RunNotFinished(f"replay {replay_run_id!r} is {state}; verify it once it has finished (or use --wait)")
    original = load_run(backends.store, dag_id, the_plan.original_run_id)
    tracker = _tracker_or_none(backends)
    report = verify_replay(
        original,
        replayed,
        tolerance=tolerance,
        object_tolerance=tolerance.for_objects() if tolerance is not None else None,
        comparer=store_comparer(backends.store, original, replayed),
        original_metrics=_metrics(tracker, original),
        replay_metrics=_metrics(tracker, replayed),
    )
    if deep:
        report = add_damage(report, run_damage(backends.store, original), run_damage(backends.store, replayed))
    redactor = _redactor(backends)  # what comparisons quote of the outputs may hold secrets
    report = without_secrets(report, redactor.redact, redactor.is_sensitive_key)
    save_report(backends.store, replayed.repository, report)
    _tag_tracked_runs(tracker, replayed, report)
    from airflow_repro.airflow.lineage import emit_verdict  # OpenLineage only when it is on

    emit_verdict(report, original, replayed)
    return report


def _plan_of(backends: Backends, replayed: StoredRun) -> ReplayPlan:
    try:
        return load_plan(backends.store, replayed.repository, replayed.dag_id, replayed.run_id)
    except ObjectNotFound:
        raise NotFoundError(
            f"run {replayed.run_id!r} of {replayed.dag_id!r} is not a replay (it has no replay plan); "
            "verify the replay run, e.g. 'replay__...__of__<run id>'"
        ) from None


def stored_report(backends: Backends, dag_id: str, replay_run_id: str, *, deep: bool = False) -> VerificationReport:
    """The report an earlier verification stored; ``deep`` re-hashes both runs' outputs now and
    adds what is damaged (the stored report itself is left as it is)."""
    replayed = load_run(backends.store, dag_id, replay_run_id)
    report = load_report(backends.store, replayed.repository, dag_id, replay_run_id)
    if not deep:
        return report
    original = load_run(backends.store, dag_id, report.original_run_id)
    return add_damage(report, run_damage(backends.store, original), run_damage(backends.store, replayed))


ReplayRunner = Callable[[ReplayPlan], str]


def trigger_and_wait(
    backends: Backends, *, triggered_by: str, user: str | None, timeout: float, secrets: Mapping[str, Any] | None = None
) -> ReplayRunner:
    """A runner for :func:`repeat`: trigger the planned replay, wait for it; its run id."""

    def run(replay: ReplayPlan) -> str:
        run_id = trigger(backends, replay, triggered_by=triggered_by, user=user, secrets=secrets)
        wait(replay.dag_id, run_id, timeout=timeout)
        return run_id

    return run


def repeat(
    backends: Backends,
    report: VerificationReport,
    times: int,
    run: ReplayRunner,
    *,
    secrets: Mapping[str, Any] | None = None,
) -> VerificationReport:
    """``verify --repeat N``: replay the original ``times`` more times on the same pins (the verified
    replay's mode), then say, for each task that did not verify identical, whether the replays
    agree with each other (intrinsic nondeterminism) or only not with the original (drift).
    The report, with ``repeats``, is stored with the verified replay again."""
    if times < 1:
        raise ReproUserError(f"--repeat must be at least 1, got {times}")
    differing = [(t.task_id, t.map_index) for t in report.tasks if t.status != "identical"]
    if not differing:
        return report
    verified = load_run(backends.store, report.dag_id, report.replay_run_id)
    mode = _plan_of(backends, verified).mode
    start = _repeat_start(backends, report, mode, secrets)
    runs = []
    for _ in range(times):
        again = plan(backends, report.dag_id, report.original_run_id, mode, secrets=secrets, from_task=start)
        run_id = run(again)
        try:
            runs.append(load_run(backends.store, report.dag_id, run_id))
        except NotFoundError:  # a replay that failed before recording anything: counted as incomplete
            log.warning("repeat %s recorded nothing", run_id)
    original = load_run(backends.store, report.dag_id, report.original_run_id)
    scope = (
        f"from task {start} (it and its downstream tasks run again, the others' recorded outputs are reused)"
        if start is not None
        else "the whole run"
    )
    repeats = repeat_report(original, [verified, *runs], differing, expected=1 + times).model_copy(
        update={
            "note": f"each repeat replays {scope} on the recorded pins (mode {mode}); "
            "the tasks compared are those that did not verify identical, by output hashes"
        }
    )
    report = report.model_copy(update={"repeats": repeats})
    save_report(backends.store, verified.repository, report)
    return report


def _repeat_start(
    backends: Backends, report: VerificationReport, mode: ReplayMode, secrets: Mapping[str, Any] | None
) -> str | None:
    """The earliest task that did not verify identical, where replaying from it runs every such
    task again; else None (the whole run is replayed)."""
    differing = [t.task_id for t in report.tasks if t.status != "identical"]  # in the order the run recorded them
    if not differing or differing[0] == report.tasks[0].task_id:
        return None
    try:
        partial = plan(backends, report.dag_id, report.original_run_id, mode, secrets=secrets, from_task=differing[0])
    except ReproUserError as exc:
        log.info("repeats replay the whole run: from task %s is refused: %s", differing[0], exc)
        return None
    return differing[0] if set(differing) <= set(partial.replayed_tasks or ()) else None


def _tracker_or_none(backends: Backends) -> ExperimentTracker | None:
    try:
        return backends.tracker()
    except ReproError as exc:
        log.warning("MLflow is not available, metrics are not compared: %s", exc)
        return None


def _metrics(tracker: ExperimentTracker | None, run: StoredRun) -> dict[tuple[str, int], dict[str, float]]:
    if tracker is None:
        return {}
    metrics = {}
    for task in run.tasks:
        run_id = task.manifest.tracking.mlflow_run_id
        if run_id:
            metrics[(task.manifest.identity.task_id, task.manifest.identity.map_index)] = tracker.get_metrics(run_id)
    return metrics


def _tag_tracked_runs(tracker: ExperimentTracker | None, replayed: StoredRun, report: VerificationReport) -> None:
    if tracker is None:
        return
    by_task = {(t.task_id, t.map_index): t for t in report.tasks}
    body = report.model_dump(mode="json")
    for task in replayed.tasks:
        m = task.manifest
        if not m.tracking.mlflow_run_id:
            continue
        run = TrackerRun(
            run_id=m.tracking.mlflow_run_id,
            experiment_id=m.tracking.mlflow_experiment_id or "",
            tracking_uri=m.tracking.mlflow_tracking_uri or "",
        )
        verified = by_task.get((m.identity.task_id, m.identity.map_index))
        tags = {
            keys.MLFLOW_VERDICT: report.verdict,
            keys.MLFLOW_TASK_VERDICT: verified.status if verified is not None else "extra",
            **(_explanation_tags(verified) if verified is not None else {}),
        }
        tracker.log(run, TrackerLog(tags=tags, json_artifacts={"repro/verification.json": body}))


#: An MLflow tag of the explanation is cut to this many characters (MLflow allows 8000; a UI shows less).
MLFLOW_TAG_CHARS = 500


def _explanation_tags(task: TaskVerification) -> dict[str, str]:
    """Short, bounded tags of one task's explanation (the whole report is the JSON artifact)."""
    tags = {}
    objects = [o for o in task.objects if o.comparison is not None]
    if objects:
        tags[keys.MLFLOW_VERIFY_SUMMARY] = _cut("; ".join(f"{o.path}: {o.comparison.summary}" for o in objects))  # type: ignore[union-attr]
    if task.likely_causes:
        tags[keys.MLFLOW_VERIFY_CAUSES] = _cut("; ".join(f"{c.kind}: {c.detail}" for c in task.likely_causes))
    return tags


def _cut(text: str) -> str:
    return text if len(text) <= MLFLOW_TAG_CHARS else text[: MLFLOW_TAG_CHARS - 1] + "…"
