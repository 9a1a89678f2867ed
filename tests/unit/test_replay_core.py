"""Replay planning, verification and run diffs: the pure core, against a real LocalStore.

Runs are recorded through the real record path (``TaskRecorder`` with no tracker), so the
manifests, commits and commit metadata are exactly what a DAG run leaves behind. No Airflow.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import pytest

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.core import metadata_keys as keys
from airflow_repro.core.environment import fingerprint_pin, hardware, versions
from airflow_repro.core.hashing import hash_bytes
from airflow_repro.core.manifest import AirflowIdentity, CodeVersion, Parameters, canonical_json
from airflow_repro.core.naming import run_branch_name, run_tag_name
from airflow_repro.core.recorder import RecordedAttempt, TaskEnvironment, TaskRecorder, manifest_path
from airflow_repro.core.replay import (
    REPLAY_PLAN_PATH,
    CurrentTask,
    Drift,
    DriftKind,
    ReplayPlan,
    list_replays,
    load_plan,
    plan_replay,
    replay_marker,
    replay_run_id,
    save_plan,
)
from airflow_repro.core.runs import StoredRun, close_run, load_run
from airflow_repro.core.spec import Input, TaskSpec
from airflow_repro.core.verify import (
    VERIFICATION_PATH,
    MetricDifference,
    ObjectDifference,
    ObjectSide,
    Tolerance,
    compare_metrics,
    diff_runs,
    load_report,
    save_report,
    verify_replay,
)
from airflow_repro.errors import ManifestError, NotFoundError, ReplayRefused, ReproUserError

DAG = "dag"
REPO = "repro"
RUN = "manual__1"
SOURCE = "sha256:" + "0" * 64
OTHER_SOURCE = "sha256:" + "1" * 64
RAW = b"id,value\n1,raw-data-of-the-replay-core-tests\n"
MODEL = b"model weights v1"


# -- recording helpers --------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def recorder(store: LocalStore, tmp_path: Path) -> TaskRecorder:
    return TaskRecorder(store, None, default_repository=REPO, default_branch="main", work_root=tmp_path / "work")


def record(
    recorder: TaskRecorder,
    run_id: str,
    spec: TaskSpec,
    files: dict[str, bytes],
    *,
    seed: int | None = 7,
    params: dict[str, object] | None = None,
    conf: dict[str, object] | None = None,
    source_hash: str = SOURCE,
    bundle_version: str | None = "bundle-v1",
    map_index: int = -1,
) -> RecordedAttempt:
    env = TaskEnvironment(
        identity=AirflowIdentity(dag_id=DAG, run_id=run_id, task_id=spec.task_id, map_index=map_index, try_number=1),
        code=CodeVersion(source_hash=source_hash, bundle_version=bundle_version),
        environment=fingerprint_pin(),
        parameters=Parameters(seed=seed, task_params=params or {}, dag_run_conf=conf or {}),
        versions=versions("test"),
        hardware=hardware(),
    )
    prepared = recorder.prepare(spec, env)
    for path, data in files.items():
        target = prepared.output_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return recorder.finish(prepared)


EXTRACT = TaskSpec(task_id="extract", outputs=("data/raw.csv",))
TRAIN = TaskSpec(task_id="train", inputs={"raw": Input("data/raw.csv")}, outputs=("model.bin",))


def record_pipeline(recorder: TaskRecorder, run_id: str, *, model: bytes = MODEL, close: bool = True) -> StoredRun:
    """extract -> train (train reads extract's output from the run branch), like a two-task DAG."""
    conf = {"region": "eu"}
    record(recorder, run_id, EXTRACT, {"data/raw.csv": RAW}, conf=conf)
    record(recorder, run_id, TRAIN, {"model.bin": model}, params={"lr": 0.1, "layers": [8, 4]}, conf=conf)
    if close:
        close_run(recorder.store, DAG, run_id, "success")
    return load_run(recorder.store, DAG, run_id)


def current_of(run: StoredRun) -> dict[str, CurrentTask]:
    """The DAG 'as it is now' when nothing changed since the run."""
    return {
        t.manifest.identity.task_id: CurrentTask(
            task_id=t.manifest.identity.task_id,
            source_hash=t.manifest.code.source_hash,
            environment_digest=t.manifest.environment.digest,
            bundle_version=t.manifest.code.bundle_version,
            task_params=dict(t.manifest.parameters.task_params),
        )
        for t in run.tasks
    }


def changed(current: dict[str, CurrentTask], task_id: str, **changes: object) -> dict[str, CurrentTask]:
    return {**current, task_id: dataclasses.replace(current[task_id], **changes)}


def plan(run: StoredRun, current: dict[str, CurrentTask], store: LocalStore, mode: str = "pinned") -> ReplayPlan:
    return plan_replay(run, current, store, mode=mode, replay_run_id=replay_run_id(run.run_id))  # type: ignore[arg-type]


def delete_object(store: LocalStore, content_hash: str) -> None:
    """What garbage collection does to an object's data."""
    path = store.object_path(content_hash)
    os.chmod(path, 0o644)
    path.unlink()


@pytest.fixture
def run(recorder: TaskRecorder) -> StoredRun:
    return record_pipeline(recorder, RUN)


# -- plan_replay: pins and drift ----------------------------------------------------------------------


def test_an_unchanged_dag_plans_without_drift_and_pins_exactly_what_was_recorded(
    run: StoredRun, store: LocalStore
) -> None:
    the_plan = plan(run, current_of(run), store)
    assert the_plan.drift == [] and the_plan.blocking_drift == []
    assert (the_plan.dag_id, the_plan.original_run_id, the_plan.mode) == (DAG, RUN, "pinned")
    assert the_plan.original_repository == REPO and the_plan.original_ref == run_tag_name(DAG, RUN)
    assert the_plan.dag_run_conf == {"region": "eu"}
    assert [p.task_id for p in the_plan.tasks] == ["extract", "train"]
    for view in run.tasks:
        m = view.manifest
        pins = the_plan.pins_for(m.identity.task_id)
        assert pins is not None
        assert pins.original_manifest_digest == m.digest
        assert pins.inputs == m.inputs
        assert pins.seed == m.parameters.seed == 7
        assert pins.environment_digest == m.environment.digest == fingerprint_pin().digest
        assert pins.source_hash == SOURCE and pins.bundle_version == "bundle-v1"
        assert pins.task_params == m.parameters.task_params
    # train's input is pinned to the very commit extract made, not to the branch
    (raw,) = the_plan.pins_for("train").inputs  # type: ignore[union-attr]
    extract_view = next(t for t in run.tasks if t.manifest.identity.task_id == "extract")
    assert (raw.name, raw.path, raw.commit_id) == ("raw", "data/raw.csv", extract_view.commit_id)
    assert raw.content_hash == hash_bytes(RAW) and raw.size == len(RAW)
    assert the_plan.pins_for("train", map_index=0) is None


@pytest.mark.parametrize(
    ("kind", "changes", "recorded", "current"),
    [
        (DriftKind.CODE_CHANGED, {"source_hash": OTHER_SOURCE}, SOURCE, OTHER_SOURCE),
        (DriftKind.BUNDLE_VERSION_CHANGED, {"bundle_version": "bundle-v2"}, "bundle-v1", "bundle-v2"),
        (DriftKind.ENVIRONMENT_CHANGED, {"environment_digest": "sha256:" + "e" * 64}, None, "sha256:" + "e" * 64),
    ],
)
def test_each_code_drift_names_the_task_and_both_values(
    run: StoredRun, store: LocalStore, kind: DriftKind, changes: dict[str, str], recorded: str | None, current: str
) -> None:
    recorded = recorded or fingerprint_pin().digest
    the_plan = plan(run, changed(current_of(run), "train", **changes), store)
    (drift,) = the_plan.drift
    assert (drift.kind, drift.task_id, drift.recorded, drift.current) == (kind, "train", recorded, current)
    assert the_plan.blocking_drift == [drift]
    assert plan(run, changed(current_of(run), "train", **changes), store, "latest-code").blocking_drift == []


def test_an_environment_the_planner_cannot_check_is_not_drift(run: StoredRun, store: LocalStore) -> None:
    current = changed(current_of(run), "train", environment_digest=None, source_hash=OTHER_SOURCE)
    (drift,) = plan(run, current, store).drift
    assert (drift.kind, drift.task_id) == (DriftKind.CODE_CHANGED, "train")


def test_changed_params_are_drift_that_names_the_params(run: StoredRun, store: LocalStore) -> None:
    current = changed(current_of(run), "train", task_params={"lr": 0.2, "layers": [8, 4], "new": 1})
    (drift,) = plan(run, current, store).drift
    assert (drift.kind, drift.task_id) == (DriftKind.PARAMS_CHANGED, "train")
    assert "['lr', 'new']" in drift.detail
    assert drift.recorded == '{"layers":[8,4],"lr":0.1}'
    assert drift.current == '{"layers":[8,4],"lr":0.2,"new":1}'
    assert plan(run, current, store, "latest-code").blocking_drift == [drift]


def test_tasks_added_and_removed_since_the_run_are_drift(run: StoredRun, store: LocalStore) -> None:
    current = current_of(run)
    del current["train"]
    current["evaluate"] = CurrentTask(task_id="evaluate", source_hash=SOURCE, environment_digest="sha256:x")
    the_plan = plan(run, current, store)
    assert {(d.kind, d.task_id) for d in the_plan.drift} == {
        (DriftKind.TASK_ADDED, "evaluate"),
        (DriftKind.TASK_REMOVED, "train"),
    }
    assert [p.task_id for p in the_plan.tasks] == ["extract", "train"], "a removed task keeps its recorded pins"
    assert the_plan.pins_for("evaluate") is None
    assert len(the_plan.blocking_drift) == 2
    assert plan(run, current, store, "latest-code").blocking_drift == []


def test_an_input_whose_data_was_deleted_is_drift_that_blocks_every_mode(run: StoredRun, store: LocalStore) -> None:
    (raw,) = run.tasks[1].manifest.inputs
    delete_object(store, raw.content_hash)
    for mode in ("pinned", "latest-code"):
        the_plan = plan(run, current_of(run), store, mode)
        (drift,) = the_plan.drift
        assert (drift.kind, drift.task_id) == (DriftKind.INPUT_MISSING, "train")
        assert drift.recorded == f"{REPO}@{raw.commit_id}:data/raw.csv"
        assert "input 'raw' can no longer be read" in drift.detail and "gone" in drift.detail
        assert the_plan.blocking_drift == [drift]


@pytest.mark.parametrize("kind", list(DriftKind))
def test_pinned_blocks_every_drift_and_latest_code_only_data_and_params(kind: DriftKind) -> None:
    drift = Drift(kind=kind, task_id="t", detail="d")
    assert drift.blocks("pinned")
    assert drift.blocks("latest-code") == (
        kind in {DriftKind.PARAMS_CHANGED, DriftKind.INPUT_MISSING, DriftKind.SECRET_MISSING, DriftKind.OUTPUT_MISSING}
    )


def test_refusal_lists_each_blocking_drift_and_suggests_latest_code_only_for_code_drift(
    run: StoredRun, store: LocalStore
) -> None:
    code_only = changed(current_of(run), "train", source_hash=OTHER_SOURCE)
    code_only = changed(code_only, "extract", bundle_version="bundle-v2")
    message = str(ReplayRefused(plan(run, code_only, store)))
    assert "2 pin(s) no longer hold" in message
    assert "[code_changed] train: the task's source code changed" in message
    assert "[bundle_version_changed] extract: the DAG bundle is at another version" in message
    assert "--mode latest-code" in message

    mixed = changed(code_only, "train", source_hash=OTHER_SOURCE, task_params={"lr": 0.5, "layers": [8, 4]})
    message = str(ReplayRefused(plan(run, mixed, store)))
    assert "3 pin(s) no longer hold" in message and "[params_changed] train" in message
    assert "--mode latest-code" not in message, "latest-code would refuse changed params too"

    refused = ReplayRefused(plan(run, mixed, store, "latest-code"))
    message = str(refused)
    assert "1 pin(s) no longer hold" in message and "[params_changed] train" in message
    assert "code_changed" not in message and "--mode latest-code" not in message
    assert isinstance(refused, ReproUserError) and refused.plan.mode == "latest-code"


def test_unknown_mode_and_a_run_without_tasks_are_refused(run: StoredRun, store: LocalStore) -> None:
    with pytest.raises(ReproUserError, match="unknown replay mode 'fast'"):
        plan_replay(run, current_of(run), store, mode="fast", replay_run_id="r")  # type: ignore[arg-type]
    store.create_branch(REPO, run_branch_name(DAG, "empty__1"), "main")
    empty = load_run(store, DAG, "empty__1")
    assert empty.tasks == []
    with pytest.raises(NotFoundError, match="recorded no task"):
        plan_replay(empty, {}, store, mode="pinned", replay_run_id="r")


# -- plans on the store ----------------------------------------------------------------------------


def test_a_saved_plan_lives_on_the_replays_branch_and_loads_back_identical(run: StoredRun, store: LocalStore) -> None:
    the_plan = plan(run, changed(current_of(run), "train", source_hash=OTHER_SOURCE), store, "latest-code")
    original_head = store.resolve_ref(REPO, run.ref)
    commit_id = save_plan(store, the_plan, default_branch="main")

    branch = run_branch_name(DAG, the_plan.replay_run_id)
    assert store.resolve_ref(REPO, branch) == commit_id
    assert [o.path for o in store.list_objects(REPO, branch)] == [REPLAY_PLAN_PATH]
    with store.open_object(REPO, branch, REPLAY_PLAN_PATH) as handle:
        assert handle.read() == the_plan.canonical_json()
    commit = store.get_commit(REPO, commit_id)
    assert commit.metadata[keys.REPLAY_OF] == RUN and commit.metadata[keys.REPLAY_MODE] == "latest-code"
    assert store.resolve_ref(REPO, run.ref) == original_head, "the original run is untouched"

    loaded = load_plan(store, REPO, DAG, the_plan.replay_run_id)
    assert loaded == the_plan
    assert loaded.digest == the_plan.digest == ReplayPlan.model_validate_json(the_plan.canonical_json()).digest
    assert loaded.drift[0].kind == DriftKind.CODE_CHANGED
    assert replay_marker(loaded) == {
        "of": RUN,
        "mode": "latest-code",
        "plan": REPLAY_PLAN_PATH,
        "plan_digest": the_plan.digest,
    }
    with pytest.raises(NotFoundError):
        load_plan(store, REPO, DAG, "replay__never__of__manual__1")


def test_list_replays_finds_only_the_replays_of_the_given_run(recorder: TaskRecorder, store: LocalStore) -> None:
    run_1 = record_pipeline(recorder, "manual__1")
    run_2 = record_pipeline(recorder, "manual__2")
    plans_1 = [plan(run_1, current_of(run_1), store), plan(run_1, current_of(run_1), store, "latest-code")]
    plans_2 = [plan(run_2, current_of(run_2), store)]
    for p in plans_1 + plans_2:
        save_plan(store, p, default_branch="main")
    assert len({p.replay_run_id for p in plans_1 + plans_2}) == 3

    assert sorted(p.replay_run_id for p in list_replays(store, REPO, DAG, "manual__1")) == sorted(
        p.replay_run_id for p in plans_1
    )
    assert list_replays(store, REPO, DAG, "manual__2") == plans_2
    assert list_replays(store, REPO, DAG, "manual__3") == []
    assert list_replays(store, REPO, "other_dag", "manual__1") == []


# -- verify_replay --------------------------------------------------------------------------------------


@pytest.fixture
def replay_id() -> str:
    return replay_run_id(RUN)


def test_a_faithful_replay_verifies_identical(recorder: TaskRecorder, run: StoredRun, replay_id: str) -> None:
    replay = record_pipeline(recorder, replay_id)
    report = verify_replay(run, replay)
    assert report.verdict == "identical" and report.summary() == {
        "identical": 2,
        "equivalent": 0,
        "differs": 0,
        "missing": 0,
    }
    assert (report.original_run_id, report.replay_run_id, report.tolerance) == (RUN, replay_id, Tolerance())
    by_task = {t.task_id: t for t in report.tasks}
    assert by_task["train"].objects_compared == 1 and by_task["train"].objects == []
    assert by_task["train"].original_manifest_digest == run.tasks[1].manifest.digest
    assert by_task["train"].replay_manifest_digest == replay.tasks[1].manifest.digest


def test_a_changed_output_names_the_path_sizes_and_both_hashes(
    recorder: TaskRecorder, run: StoredRun, replay_id: str
) -> None:
    other_model = b"model weights v2, a little longer"
    replay = record_pipeline(recorder, replay_id, model=other_model)
    report = verify_replay(run, replay)
    assert report.verdict == "differs"
    by_task = {t.task_id: t for t in report.tasks}
    assert by_task["extract"].status == "identical"
    assert by_task["train"].status == "differs"
    assert by_task["train"].objects == [
        ObjectDifference(
            path="model.bin",
            change="changed",
            original=ObjectSide(content_hash=hash_bytes(MODEL), size=len(MODEL)),
            replay=ObjectSide(content_hash=hash_bytes(other_model), size=len(other_model)),
        )
    ]


def test_outputs_missing_from_or_extra_in_the_replay(recorder: TaskRecorder, replay_id: str) -> None:
    record(recorder, RUN, TaskSpec(task_id="t", outputs=("a.txt", "b.txt")), {"a.txt": b"a", "b.txt": b"b"})
    original = load_run(recorder.store, DAG, RUN)
    record(recorder, replay_id, TaskSpec(task_id="t", outputs=("a.txt", "c.txt")), {"a.txt": b"a", "c.txt": b"cc"})
    replay = load_run(recorder.store, DAG, replay_id)
    (task,) = verify_replay(original, replay).tasks
    assert task.status == "differs" and task.objects_compared == 3
    assert task.objects == [
        ObjectDifference(
            path="b.txt", change="missing_in_replay", original=ObjectSide(content_hash=hash_bytes(b"b"), size=1)
        ),
        ObjectDifference(
            path="c.txt", change="extra_in_replay", replay=ObjectSide(content_hash=hash_bytes(b"cc"), size=2)
        ),
    ]


def test_a_task_missing_from_the_replay(recorder: TaskRecorder, run: StoredRun, replay_id: str) -> None:
    record(recorder, replay_id, EXTRACT, {"data/raw.csv": RAW}, conf={"region": "eu"})
    replay = load_run(recorder.store, DAG, replay_id)
    report = verify_replay(run, replay)
    assert report.verdict == "differs" and report.summary() == {
        "identical": 1,
        "equivalent": 0,
        "differs": 0,
        "missing": 1,
    }
    train = next(t for t in report.tasks if t.task_id == "train")
    assert train.status == "missing" and train.replay_manifest_digest is None and train.objects_compared == 0


def test_verifying_against_another_dags_run_is_refused(run: StoredRun) -> None:
    with pytest.raises(ReproUserError, match="against a run of 'dag'"):
        verify_replay(run, dataclasses.replace(run, dag_id="other"))


KEY = ("train", -1)


def test_metrics_are_exact_by_default_and_within_a_tolerance_when_given(
    recorder: TaskRecorder, run: StoredRun, replay_id: str
) -> None:
    replay = record_pipeline(recorder, replay_id)
    before, after = {KEY: {"acc": 0.9}}, {KEY: {"acc": 0.9000001}}
    exact = verify_replay(run, replay, original_metrics=before, replay_metrics=after)
    assert exact.verdict == "differs"
    (difference,) = next(t for t in exact.tasks if t.task_id == "train").metrics
    assert (difference.name, difference.original, difference.replay) == ("acc", 0.9, 0.9000001)
    assert difference.abs_diff == pytest.approx(1e-7)
    within = verify_replay(run, replay, original_metrics=before, replay_metrics=after, tolerance=Tolerance(abs=1e-3))
    # within the tolerance but not equal: equivalent, and the metric is listed as within it
    assert within.verdict == "equivalent" and within.tolerance == Tolerance(abs=1e-3)
    (close,) = next(t for t in within.tasks if t.task_id == "train").metrics
    assert close.name == "acc" and close.within_tolerance
    assert verify_replay(run, replay, original_metrics=before, replay_metrics=before).verdict == "identical"


@pytest.mark.parametrize(
    ("a", "b", "tolerance", "matches"),
    [
        (100.0, 100.00005, Tolerance(rel=1e-6), True),
        (100.0, 100.001, Tolerance(rel=1e-6), False),
        (0.0, 1e-12, Tolerance(rel=1.0), False),  # rel is relative to |original|: no help at 0
        (0.0, 1e-12, Tolerance(abs=1e-9, rel=1.0), True),
        (math.nan, math.nan, Tolerance(), True),
        (0.5, math.nan, Tolerance(abs=10.0), False),
        (math.nan, 0.5, Tolerance(abs=10.0), False),
    ],
)
def test_relative_tolerance_and_nan(a: float, b: float, tolerance: Tolerance, matches: bool) -> None:
    assert tolerance.matches(a, b) is matches
    assert all(m.within_tolerance for m in compare_metrics({"m": a}, {"m": b}, tolerance)) is matches


def test_a_metric_logged_on_one_side_only_differs() -> None:
    assert compare_metrics({"loss": 1.0}, {}, Tolerance(abs=1e9)) == [
        MetricDifference(name="loss", original=1.0, replay=None, abs_diff=None)
    ]
    assert compare_metrics({}, {"loss": 1.0}, Tolerance())[0].original is None
    with pytest.raises(ValueError):
        Tolerance(abs=-1.0)


def test_equal_infinite_metrics_match() -> None:
    assert Tolerance().matches(math.inf, math.inf)


def test_a_report_with_a_nan_metric_difference_can_be_saved(
    recorder: TaskRecorder, run: StoredRun, replay_id: str
) -> None:
    replay = record_pipeline(recorder, replay_id)
    report = verify_replay(run, replay, original_metrics={KEY: {"loss": 0.5}}, replay_metrics={KEY: {"loss": math.nan}})
    assert report.verdict == "differs"
    save_report(recorder.store, REPO, report)
    (difference,) = next(t for t in report.tasks if t.metrics).metrics
    assert (difference.original, difference.replay, difference.abs_diff) == (0.5, "NaN", "NaN")
    assert load_report(recorder.store, REPO, report.dag_id, replay_id) == report


def test_a_saved_report_lives_on_the_replays_branch_and_loads_back(
    recorder: TaskRecorder, run: StoredRun, replay_id: str
) -> None:
    replay = record_pipeline(recorder, replay_id, model=b"other")
    report = verify_replay(
        run,
        replay,
        original_metrics={KEY: {"acc": 0.9}},
        replay_metrics={KEY: {"acc": 0.8}},
        tolerance=Tolerance(abs=1e-6, rel=1e-3),
    )
    store = recorder.store
    replay_head = store.resolve_ref(REPO, replay.branch)
    commit_id = save_report(store, REPO, report)
    assert store.get_commit(REPO, commit_id).parents == (replay_head,)
    assert store.get_commit(REPO, commit_id).metadata[keys.VERDICT] == "differs"
    with store.open_object(REPO, replay.branch, VERIFICATION_PATH) as handle:
        assert handle.read() == report.canonical_json()
    loaded = load_report(store, REPO, DAG, replay_id)
    assert loaded == report and loaded.canonical_json() == report.canonical_json()
    assert load_run(store, DAG, replay_id).tasks == replay.tasks, "the report is not mistaken for a manifest"


# -- diff_runs ------------------------------------------------------------------------------------------


@pytest.fixture
def reference(store: LocalStore, tmp_path: Path) -> str:
    """A labels file in another repository, read at its branch head (so each run pins a commit)."""
    store.create_repository("reference-data")
    set_labels(store, tmp_path, b"labels v1")
    return "reference-data"


def set_labels(store: LocalStore, tmp_path: Path, data: bytes) -> str:
    source = tmp_path / "labels.csv"
    source.write_bytes(data)
    staged = store.stage_file("reference-data", source)
    return store.commit("reference-data", "main", {"labels.csv": staged}, message="labels").id


LABELLED = TaskSpec(
    task_id="fit", inputs={"labels": Input("labels.csv", repository="reference-data", ref="main")}, outputs=("out.bin",)
)


def test_two_runs_with_the_same_pins_and_outputs_diff_identical(recorder: TaskRecorder, reference: str) -> None:
    for run_id in ("manual__a", "manual__b"):
        record(recorder, run_id, LABELLED, {"out.bin": b"same"}, params={"k": 1})
    diff = diff_runs(load_run(recorder.store, DAG, "manual__a"), load_run(recorder.store, DAG, "manual__b"))
    assert diff.identical and (diff.run_a, diff.run_b) == ("manual__a", "manual__b")


def _labels_at(commit_id: str) -> str:
    return canonical_json([f"labels=reference-data@{commit_id}:labels.csv"]).decode()


@pytest.mark.parametrize("what", ["seed", "params", "inputs", "outputs"])
def test_diff_names_exactly_what_changed(
    recorder: TaskRecorder, store: LocalStore, reference: str, tmp_path: Path, what: str
) -> None:
    first_labels = store.resolve_ref(reference, "main")
    record(recorder, "manual__a", LABELLED, {"out.bin": b"same"}, seed=7, params={"k": 1})
    second_labels = set_labels(store, tmp_path, b"labels v2") if what == "inputs" else first_labels
    record(
        recorder,
        "manual__b",
        LABELLED,
        {"out.bin": b"other" if what == "outputs" else b"same"},
        seed=8 if what == "seed" else 7,
        params={"k": 2} if what == "params" else {"k": 1},
    )
    diff = diff_runs(load_run(store, DAG, "manual__a"), load_run(store, DAG, "manual__b"))
    assert not diff.identical and diff.only_in_a == diff.only_in_b == []
    fields = [(f.task_id, f.field, f.a, f.b) for f in diff.fields]
    expected = {
        "seed": [("fit", "parameters.seed", "7", "8")],
        "params": [("fit", "parameters.task_params", '{"k":1}', '{"k":2}')],
        "inputs": [("fit", "inputs", _labels_at(first_labels), _labels_at(second_labels))],
        "outputs": [],
    }[what]
    assert fields == expected
    if what == "outputs":
        assert diff.objects == {
            "fit": [
                ObjectDifference(
                    path="out.bin",
                    change="changed",
                    original=ObjectSide(content_hash=hash_bytes(b"same"), size=4),
                    replay=ObjectSide(content_hash=hash_bytes(b"other"), size=5),
                )
            ]
        }
    else:
        assert diff.objects == {}


def test_diff_lists_tasks_recorded_in_only_one_run(recorder: TaskRecorder) -> None:
    for task_id in ("a", "b"):
        record(recorder, "manual__a", TaskSpec(task_id=task_id, outputs=("o",)), {"o": task_id.encode()})
    record(recorder, "manual__a", TaskSpec(task_id="m", outputs=("m/{map_index}",)), {"m/0": b"m0"}, map_index=0)
    for task_id in ("a", "c"):
        record(recorder, "manual__b", TaskSpec(task_id=task_id, outputs=("o",)), {"o": task_id.encode()})
    diff = diff_runs(load_run(recorder.store, DAG, "manual__a"), load_run(recorder.store, DAG, "manual__b"))
    assert (diff.only_in_a, diff.only_in_b) == (["b", "m[0]"], ["c"])
    assert diff.fields == [] and diff.objects == {} and not diff.identical


# -- tampered manifests ----------------------------------------------------------------------------------


def _tamper(store: LocalStore, run: StoredRun, task_id: str) -> None:
    """Commit on the run's branch a different, valid manifest for ``task_id``, without repro metadata."""
    view = next(t for t in run.tasks if t.manifest.identity.task_id == task_id)
    forged = view.manifest.model_copy(update={"parameters": view.manifest.parameters.model_copy(update={"seed": 999})})
    assert forged.digest != view.manifest.digest
    staged = store.stage_bytes(REPO, forged.canonical_json())
    store.commit(REPO, run.branch, {manifest_path(task_id, -1): staged}, message="edit a manifest by hand")


def test_a_manifest_replaced_after_recording_fails_its_digest_check(recorder: TaskRecorder, store: LocalStore) -> None:
    run = record_pipeline(recorder, RUN, close=False)
    _tamper(store, run, "train")
    with pytest.raises(ManifestError, match="digest mismatch"):
        load_run(store, DAG, RUN)
    with pytest.raises(ManifestError, match="digest mismatch"):
        close_run(store, DAG, RUN, "success")


def test_a_closed_run_reads_its_tag_so_a_later_edit_of_the_branch_does_not_reach_it(
    run: StoredRun, store: LocalStore
) -> None:
    _tamper(store, run, "train")
    again = load_run(store, DAG, RUN)
    assert again.closed and again.tasks == run.tasks
