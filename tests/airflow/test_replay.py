"""Replay and verify, in process: pins hold, drift is caught before anything runs, verdicts are true."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_repro.airflow import replay as service
from airflow_repro.core import metadata_keys as keys
from airflow_repro.core.replay import REPLAY_CONF_KEY, DriftKind, ReplayPlan, save_plan
from airflow_repro.core.runs import load_run
from airflow_repro.errors import NotFoundError, ReplayRefused
from tests.support.airflow_session import DAGS_FOLDER, load_dag, run_id_for_next_test_run, run_replay

pytestmark = pytest.mark.usefixtures("repro_env")


def test_replay_of_the_example_is_identical_and_replayable_again(repro_env: dict[str, str]) -> None:
    dag = load_dag("example_ml_pipeline", "example_ml_pipeline.py")
    original = dag.test()
    backends = service.Backends.from_airflow_conf()
    plan = service.plan(backends, dag.dag_id, original.run_id, "pinned")
    assert plan.drift == [] and [p.task_id for p in plan.tasks] == ["ingest", "featurize", "train", "evaluate"]
    assert plan.replay_run_id.startswith("replay__") and plan.replay_run_id.endswith(f"__of__{original.run_id}")

    replayed = run_replay(dag, plan, backends)
    assert replayed.state == "success" and replayed.run_id == plan.replay_run_id
    report = service.verify(backends, dag.dag_id, plan.replay_run_id)
    assert report.verdict == "identical"
    assert [(t.task_id, t.status) for t in report.tasks] == [
        (t, "identical") for t in ("ingest", "featurize", "train", "evaluate")
    ]
    assert all(t.objects_compared > 0 for t in report.tasks)
    assert service.stored_report(backends, dag.dag_id, plan.replay_run_id) == report

    # the replay read exactly the original's input commits and recorded what it replays
    before = {
        t.manifest.identity.task_id: t.manifest for t in load_run(backends.store, dag.dag_id, original.run_id).tasks
    }
    after = load_run(backends.store, dag.dag_id, plan.replay_run_id)
    for task in after.tasks:
        m = task.manifest
        assert m.replay is not None and m.replay.of_run_id == original.run_id and m.replay.mode == "pinned"
        assert m.replay.original_manifest_digest == before[m.identity.task_id].digest
        assert m.inputs == before[m.identity.task_id].inputs
        assert m.parameters.seed == before[m.identity.task_id].parameters.seed
        assert REPLAY_CONF_KEY not in m.parameters.dag_run_conf and REPLAY_CONF_KEY not in m.parameters.task_params
    assert after.branch != load_run(backends.store, dag.dag_id, original.run_id).branch

    import mlflow

    tags = mlflow.MlflowClient(repro_env["mlflow"]).get_run(after.tasks[-1].manifest.tracking.mlflow_run_id).data.tags
    assert tags[keys.MLFLOW_VERDICT] == "identical" and tags[keys.MLFLOW_REPLAY_OF] == original.run_id
    assert [p.replay_run_id for p in service.replays_of(backends, dag.dag_id, original.run_id)] == [plan.replay_run_id]

    # a replay of a replay works, and is identical too
    again = service.plan(backends, dag.dag_id, plan.replay_run_id, "pinned")
    assert again.drift == [] and again.original_run_id == plan.replay_run_id
    assert run_replay(dag, again, backends).state == "success"
    assert service.verify(backends, dag.dag_id, again.replay_run_id).verdict == "identical"


def test_unseeded_randomness_is_reported_naming_the_objects(repro_env: dict[str, str]) -> None:
    dag = load_dag("repro_nondeterministic", "repro_test_dags.py")
    original = dag.test()
    backends = service.Backends.from_airflow_conf()
    plan = service.plan(backends, dag.dag_id, original.run_id, "pinned")
    assert run_replay(dag, plan, backends).state == "success"
    report = service.verify(backends, dag.dag_id, plan.replay_run_id)
    assert report.verdict == "differs"
    (task,) = report.tasks
    assert task.status == "differs" and task.objects_compared == 2
    (difference,) = task.objects
    assert difference.path == "noise.bin" and difference.change == "changed"
    assert difference.original.size == difference.replay.size == 32
    assert difference.original.content_hash != difference.replay.content_hash


DRIFT_DAG = """
from airflow.sdk import dag
from airflow_repro import Input, repro_task, runtime
import drift_helpers

@dag(dag_id="repro_drift", schedule=None, params={{"alpha": {alpha}}})
def repro_drift():
    @repro_task(outputs=["a.txt"], seed=1)
    def make():
        runtime.current().output_path("a.txt").write_text(drift_helpers.decorate("{text}"))

    @repro_task(inputs={{"a": Input("a.txt")}}, outputs=["b.txt"], seed=2)
    def use():
        ctx = runtime.current()
        ctx.output_path("b.txt").write_text(ctx.input_path("a").read_text().upper())
{extra}
    make() >> use()

repro_drift()
"""
EXTRA_TASK = """
    @repro_task(outputs=["c.txt"], seed=3)
    def added():
        runtime.current().output_path("c.txt").write_text("new")
    added()
"""


DRIFT_HELPERS = """
def decorate(text):
    return {body}
"""


def write_drift_dag(alpha: int = 1, text: str = "a", extra: str = "", helper: str = "text") -> None:
    (DAGS_FOLDER / "drift_helpers.py").write_text(DRIFT_HELPERS.format(body=helper))
    sys.modules.pop("drift_helpers", None)  # a task process imports it afresh; this test process must too
    (DAGS_FOLDER / "repro_drift.py").write_text(DRIFT_DAG.format(alpha=alpha, text=text, extra=extra))


@pytest.fixture
def recorded_drift_run(repro_env: dict[str, str]) -> Iterator[tuple[service.Backends, str]]:
    write_drift_dag()
    dag = load_dag("repro_drift", "repro_drift.py")
    run = dag.test()
    assert run.state == "success"
    yield service.Backends.from_airflow_conf(), run.run_id
    write_drift_dag()


def drift_kinds(plan: ReplayPlan) -> set[tuple[str, str]]:
    return {(d.kind.value, d.task_id) for d in plan.drift}


@pytest.mark.parametrize(
    ("change", "expected", "latest_code_ok"),
    [
        ({"extra": EXTRA_TASK}, {("task_added", "added")}, True),
        ({"alpha": 2}, {("params_changed", "make"), ("params_changed", "use")}, False),
    ],
)
def test_drift_is_detected_before_anything_runs(
    recorded_drift_run: tuple[service.Backends, str],
    change: dict[str, Any],
    expected: set[tuple[str, str]],
    latest_code_ok: bool,
) -> None:
    backends, run_id = recorded_drift_run
    write_drift_dag(**change)
    plan = service.plan(backends, "repro_drift", run_id, "pinned")
    # the DAG file itself changed too: every task's code drifted, and a pinned replay restores it
    assert drift_kinds(plan) == expected | {("code_changed", "make"), ("code_changed", "use")}
    assert {(d.kind.value, d.task_id) for d in plan.blocking_drift} == expected
    with pytest.raises(ReplayRefused, match="pin\\(s\\) no longer hold"):
        service.trigger(backends, plan, triggered_by="CLI", user="test")
    assert service.dag_run_state("repro_drift", plan.replay_run_id) is None, "nothing was triggered"
    latest = service.plan(backends, "repro_drift", run_id, "latest-code")
    assert bool(latest.blocking_drift) is not latest_code_ok


@pytest.mark.parametrize(
    ("change", "changed_file"),
    [({"text": "changed"}, "repro_drift.py"), ({"helper": "text + '!'"}, "drift_helpers.py")],
    ids=["task-source", "module-helper"],
)
def test_a_pinned_replay_after_a_code_edit_runs_the_archived_code(
    recorded_drift_run: tuple[service.Backends, str], change: dict[str, Any], changed_file: str
) -> None:
    """The task's own source, or a module of the DAG folder it imports, was edited: the drift is
    named with a diff, restorable, and the replay runs the code as recorded (identical)."""
    backends, run_id = recorded_drift_run
    write_drift_dag(**change)
    plan = service.plan(backends, "repro_drift", run_id, "pinned")
    assert {("code_changed", "make"), ("code_changed", "use")} <= drift_kinds(plan)
    assert not plan.blocking_drift, plan.refusal_message()
    make = next(d for d in plan.drift if d.task_id == "make")
    assert make.restorable and "archived code snapshot" in (make.restore_note or "")
    assert changed_file in make.detail and make.diff is not None
    assert f"--- a/{changed_file}" in make.diff and f"+++ b/{changed_file}" in make.diff

    dag = load_dag("repro_drift", "repro_drift.py")
    assert run_replay(dag, plan, backends).state == "success"
    report = service.verify(backends, "repro_drift", plan.replay_run_id)
    assert report.verdict == "identical", report
    replayed = load_run(backends.store, "repro_drift", plan.replay_run_id)
    original = {t.manifest.identity.task_id: t.manifest for t in load_run(backends.store, "repro_drift", run_id).tasks}
    for task in replayed.tasks:
        m = task.manifest
        assert m.replay is not None and m.replay.code == "restored" and m.replay.environment == "current"
        assert m.code.snapshot == original[m.identity.task_id].code.snapshot, "the manifest records the code that ran"

    # latest-code runs the edited code instead: make's output differs, use's (pinned input) does not
    latest = service.plan(backends, "repro_drift", run_id, "latest-code")
    assert run_replay(load_dag("repro_drift", "repro_drift.py"), latest, backends).state == "success"
    statuses = {t.task_id: t.status for t in service.verify(backends, "repro_drift", latest.replay_run_id).tasks}
    assert statuses == {"make": "differs", "use": "identical"}


def test_code_that_cannot_be_restored_is_refused_before_anything_runs(
    recorded_drift_run: tuple[service.Backends, str],
) -> None:
    backends, run_id = recorded_drift_run
    recorded = load_run(backends.store, "repro_drift", run_id)
    snapshot = recorded.tasks[0].manifest.code.snapshot
    assert snapshot is not None
    from airflow_repro.core.archive import ARCHIVE_BRANCH, archive_path

    path = archive_path("code", snapshot)
    info = backends.store.stat_object(recorded.repository, ARCHIVE_BRANCH, path)
    object_file = backends.store.object_path(info.content_hash)  # type: ignore[attr-defined]
    object_file.chmod(0o644)
    object_file.write_bytes(b"{}")  # damaged on disk
    write_drift_dag(text="changed")
    plan = service.plan(backends, "repro_drift", run_id, "pinned")
    blocking = {(d.kind.value, d.task_id) for d in plan.blocking_drift}
    assert ("code_changed", "make") in blocking
    note = next(d for d in plan.blocking_drift if d.task_id == "make").restore_note or ""
    assert note.startswith("not restorable") and snapshot.removeprefix("sha256:")[:12] in note
    with pytest.raises(ReplayRefused, match="not restorable"):
        service.trigger(backends, plan, triggered_by="CLI", user="test")
    assert service.dag_run_state("repro_drift", plan.replay_run_id) is None, "nothing was triggered"


def test_a_garbage_collected_input_is_drift(recorded_drift_run: tuple[service.Backends, str]) -> None:
    backends, run_id = recorded_drift_run
    recorded = load_run(backends.store, "repro_drift", run_id)
    (pinned,) = next(t for t in recorded.tasks if t.manifest.identity.task_id == "use").manifest.inputs
    object_file = backends.store.object_path(pinned.content_hash)  # type: ignore[attr-defined]
    object_file.chmod(0o644)
    object_file.unlink()  # what lakeFS garbage collection does to the data behind an old commit
    plan = service.plan(backends, "repro_drift", run_id, "latest-code")
    assert drift_kinds(plan) == {("input_missing", "use")}
    assert plan.blocking_drift and "garbage collection" in plan.drift[0].detail
    assert plan.drift[0].kind is DriftKind.INPUT_MISSING


def test_unknown_runs_are_refused(repro_env: dict[str, str]) -> None:
    backends = service.Backends.from_airflow_conf()
    with pytest.raises(NotFoundError, match="has no run 'nope'"):
        service.plan(backends, "example_ml_pipeline", "nope", "pinned")
    with pytest.raises(NotFoundError, match="not known to Airflow"):
        service.load_current_dag("no_such_dag")


def test_latest_code_replays_current_code_on_pinned_data_and_records_the_choice(
    recorded_drift_run: tuple[service.Backends, str],
) -> None:
    backends, run_id = recorded_drift_run
    write_drift_dag(text="changed")
    plan = service.plan(backends, "repro_drift", run_id, "latest-code")
    assert drift_kinds(plan) == {("code_changed", "make"), ("code_changed", "use")} and not plan.blocking_drift
    dag = load_dag("repro_drift", "repro_drift.py")
    assert run_replay(dag, plan, backends).state == "success"
    replayed = load_run(backends.store, "repro_drift", plan.replay_run_id)
    assert {t.manifest.replay.mode for t in replayed.tasks} == {"latest-code"}
    assert {(t.manifest.replay.code, t.manifest.replay.environment) for t in replayed.tasks} == {("current", "current")}
    report = service.verify(backends, "repro_drift", plan.replay_run_id)
    assert report.verdict == "differs"
    statuses = {t.task_id: t.status for t in report.tasks}
    # make's new code writes other bytes; use still reads make's ORIGINAL output (pinned data)
    assert statuses == {"make": "differs", "use": "identical"}


def test_a_run_still_queued_is_refused_and_a_run_never_recorded_too(repro_env: dict[str, str]) -> None:
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.utils.types import DagRunTriggeredByType

    load_dag("repro_failing", "repro_test_dags.py").test()  # makes sure the DAG is in the metadata DB
    trigger_dag("repro_failing", run_id="still_queued", triggered_by=DagRunTriggeredByType.CLI)
    backends = service.Backends.from_airflow_conf()
    with pytest.raises(service.RunNotFinished, match="'still_queued' of 'repro_failing' is queued"):
        service.plan(backends, "repro_failing", "still_queued", "pinned")
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    with create_session() as session:
        run = session.query(DagRun).filter_by(dag_id="repro_failing", run_id="still_queued").one()
        run.state = DagRunState.FAILED
    with pytest.raises(NotFoundError, match="no recorded run 'still_queued'"):
        service.plan(backends, "repro_failing", "still_queued", "pinned")


def test_a_replay_takes_each_recorded_secret_again_and_checks_it(repro_env: dict[str, str]) -> None:
    """The record holds only a keyed marker of a conf secret: a replay must be given the value,
    and says so before anything runs; a rotated value is named, and accepted only in latest-code."""
    dag = load_dag("repro_conf_secret", "repro_test_dags.py")
    original = dag.test(run_conf={"api_token": "tok-original-123", "size": 1})
    assert original.state == "success"
    backends = service.Backends.from_airflow_conf()

    refused = service.plan(backends, dag.dag_id, original.run_id, "latest-code")
    (missing,) = refused.blocking_drift
    assert missing.kind is DriftKind.SECRET_MISSING and "api_token" in missing.detail and "--secret" in missing.detail
    assert "tok-original-123" not in refused.model_dump_json()

    rotated = service.plan(backends, dag.dag_id, original.run_id, "pinned", secrets={"api_token": "tok-rotated"})
    assert [d.kind for d in rotated.blocking_drift] == [DriftKind.SECRET_CHANGED]

    plan = service.plan(backends, dag.dag_id, original.run_id, "pinned", secrets={"api_token": "tok-original-123"})
    assert plan.drift == []
    assert "tok-original-123" not in plan.model_dump_json(), "the stored plan holds no secret"
    conf = service.replay_conf(plan, {"api_token": "tok-original-123"})
    assert conf["api_token"] == "tok-original-123" and conf["size"] == 1
    save_plan(backends.store, plan, default_branch=backends.settings.default_branch)
    with run_id_for_next_test_run(plan.replay_run_id):
        replayed = dag.test(run_conf=conf)
    assert replayed.state == "success"
    report = service.verify(backends, dag.dag_id, plan.replay_run_id)
    assert report.verdict == "identical", "the task got the same secret again"


SECRET_LITERAL_DAG = """
from airflow.sdk import dag
from airflow_repro import repro_task, runtime

@dag(dag_id="repro_secret_literal", schedule=None, params={"api_token": "tok-literal-5e5e5e", "n": 2})
def repro_secret_literal():
    @repro_task(outputs=["n.txt"], seed=1)
    def use(params=None):
        assert params["api_token"] == "tok-literal-5e5e5e"
        runtime.current().output_path("n.txt").write_text(str(params["n"]))
    use()

repro_secret_literal()
"""


def test_a_secret_hard_coded_in_the_dag_file_is_archived_as_its_marker(repro_env: dict[str, str]) -> None:
    """The archive is a sink like any other: a params default that is a secret is recorded as its
    marker in the archived source too, and planning scrubs the current file the same way (no drift)."""
    from airflow_repro.core.archive import load_archived

    (DAGS_FOLDER / "repro_secret_literal.py").write_text(SECRET_LITERAL_DAG)
    dag = load_dag("repro_secret_literal", "repro_secret_literal.py")
    original = dag.test()
    assert original.state == "success"
    backends = service.Backends.from_airflow_conf()
    (task,) = load_run(backends.store, dag.dag_id, original.run_id).tasks
    marker = task.manifest.parameters.task_params["api_token"]
    archived = load_archived(backends.store, "repro", "code", task.manifest.code.snapshot or "").decode()
    assert "tok-literal-5e5e5e" not in archived and marker in archived
    plan = service.plan(backends, dag.dag_id, original.run_id, "pinned")
    assert plan.drift == [], plan.drift
    assert run_replay(dag, plan, backends).state == "success"
    assert service.verify(backends, dag.dag_id, plan.replay_run_id).verdict == "identical"


ARGUMENTS_DAG = """
from airflow.sdk import dag
from airflow_repro import repro_task, runtime

@dag(dag_id="repro_pinned_arguments", schedule=None)
def repro_pinned_arguments():
    @repro_task(outputs=["g.txt"], seed=1)
    def greet(greeting: str, n: int):
        runtime.current().output_path("g.txt").write_text(greeting * n)
    greet({args})

repro_pinned_arguments()
"""


def test_a_pinned_replay_passes_the_recorded_arguments(repro_env: dict[str, str]) -> None:
    """The call in the DAG file was edited (another positional and keyword argument): the pinned
    replay calls the task as recorded; latest-code calls it as the file does now."""
    path = DAGS_FOLDER / "repro_pinned_arguments.py"
    path.write_text(ARGUMENTS_DAG.format(args='"hi", n=2'))
    dag = load_dag("repro_pinned_arguments", "repro_pinned_arguments.py")
    original = dag.test()
    assert original.state == "success"
    backends = service.Backends.from_airflow_conf()
    path.write_text(ARGUMENTS_DAG.format(args='"yo", n=3'))
    plan = service.plan(backends, dag.dag_id, original.run_id, "pinned")
    (pins,) = plan.tasks
    assert (pins.op_args, pins.op_kwargs) == (["hi"], {"n": 2})
    assert run_replay(load_dag(dag.dag_id, "repro_pinned_arguments.py"), plan, backends).state == "success"
    assert service.verify(backends, dag.dag_id, plan.replay_run_id).verdict == "identical"
    (task,) = load_run(backends.store, dag.dag_id, plan.replay_run_id).tasks
    assert (task.manifest.parameters.op_args, task.manifest.parameters.op_kwargs) == (["hi"], {"n": 2})
    latest = service.plan(backends, dag.dag_id, original.run_id, "latest-code")
    assert run_replay(load_dag(dag.dag_id, "repro_pinned_arguments.py"), latest, backends).state == "success"
    assert service.verify(backends, dag.dag_id, latest.replay_run_id).verdict == "differs"
