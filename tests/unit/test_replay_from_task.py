"""Replays from a task, in the pure core: what runs, what is reused, and the reused task's record.

Runs are recorded through the real record path against a real LocalStore (as in
``test_replay_core``); the DAG "as it is now" is given as plain task graphs. No Airflow.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.core import metadata_keys as keys
from airflow_repro.core.hashing import hash_bytes
from airflow_repro.core.manifest import AirflowIdentity, ReusedFrom
from airflow_repro.core.naming import run_branch_name
from airflow_repro.core.recorder import TaskRecorder, manifest_path
from airflow_repro.core.replay import (
    DriftKind,
    ReplayPlan,
    ReusedTask,
    downstream_closure,
    load_plan,
    plan_replay,
    replay_run_id,
    save_plan,
)
from airflow_repro.core.reuse import commit_reused_task
from airflow_repro.core.runs import StoredRun, close_run, load_run
from airflow_repro.core.spec import Input, TaskSpec
from airflow_repro.core.verify import verify_replay
from airflow_repro.errors import NotFoundError, StoreCorruption
from tests.unit.test_replay_core import (
    DAG,
    EXTRACT,
    MODEL,
    OTHER_SOURCE,
    RAW,
    REPO,
    TRAIN,
    changed,
    current_of,
    delete_object,
    record,
)
from tests.unit.test_replay_core import recorder as recorder  # the fixtures these tests use
from tests.unit.test_replay_core import store as store

RUN = "manual__chain"
REPORT = b"accuracy 0.93\n"
EVALUATE = TaskSpec(task_id="evaluate", inputs={"model": Input("model.bin")}, outputs=("report.txt",))
CHAIN = {"extract": ["train"], "train": ["evaluate"], "evaluate": []}
CONF = {"region": "eu"}


def record_chain(recorder: TaskRecorder, run_id: str = RUN) -> StoredRun:
    """extract -> train -> evaluate, each reading its upstream's output from the run's branch."""
    record(recorder, run_id, EXTRACT, {"data/raw.csv": RAW}, conf=CONF)
    record(recorder, run_id, TRAIN, {"model.bin": MODEL}, conf=CONF)
    record(recorder, run_id, EVALUATE, {"report.txt": REPORT}, conf=CONF)
    close_run(recorder.store, DAG, run_id, "success")
    return load_run(recorder.store, DAG, run_id)


@pytest.fixture
def chain(recorder: TaskRecorder) -> StoredRun:
    return record_chain(recorder)


def plan_from(
    run: StoredRun,
    store: LocalStore,
    from_task: str | None,
    *,
    current: dict | None = None,  # type: ignore[type-arg]
    graph: dict[str, list[str]] | None = None,
    mode: str = "pinned",
) -> ReplayPlan:
    return plan_replay(
        run,
        current if current is not None else current_of(run),
        store,
        mode=mode,  # type: ignore[arg-type]
        replay_run_id=replay_run_id(run.run_id),
        from_task=from_task,
        downstream=graph if graph is not None else CHAIN,
    )


def commit_of(run: StoredRun, task_id: str, map_index: int = -1) -> str:
    return next(
        t.commit_id
        for t in run.tasks
        if (t.manifest.identity.task_id, t.manifest.identity.map_index) == (task_id, map_index)
    )


# -- what runs and what is reused ---------------------------------------------------------------------


def test_downstream_closure_follows_every_path_once() -> None:
    graph = {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": [], "e": ["a"]}
    assert downstream_closure("a", graph) == {"a", "b", "c", "d"}
    assert downstream_closure("d", graph) == {"d"}
    assert downstream_closure("e", graph) == {"a", "b", "c", "d", "e"}


def test_from_a_middle_task_it_and_its_downstream_run_and_the_upstream_is_reused_at_its_commit(
    chain: StoredRun,
    store: LocalStore,
) -> None:
    the_plan = plan_from(chain, store, "train")
    assert the_plan.from_task == "train"
    assert the_plan.replayed_task_ids == ["evaluate", "train"]
    (extract,) = the_plan.reused_tasks or []
    original = next(t for t in chain.tasks if t.manifest.identity.task_id == "extract")
    assert extract == ReusedTask(
        task_id="extract",
        map_index=-1,
        commit_id=original.commit_id,
        original_manifest_digest=original.manifest.digest,
    )
    assert the_plan.reused("extract") == extract and the_plan.reused("train") is None
    assert the_plan.drift == [] and the_plan.blocking_drift == []
    # train still reads extract's output at the commit extract made in the original run
    (raw,) = the_plan.pins_for("train").inputs  # type: ignore[union-attr]
    assert raw.commit_id == original.commit_id


def test_a_leaf_task_is_a_valid_start_that_replays_just_it(chain: StoredRun, store: LocalStore) -> None:
    the_plan = plan_from(chain, store, "evaluate")
    assert the_plan.replayed_task_ids == ["evaluate"]
    assert [t.task_id for t in the_plan.reused_tasks or []] == ["extract", "train"]


def test_from_the_first_task_nothing_is_reused(chain: StoredRun, store: LocalStore) -> None:
    the_plan = plan_from(chain, store, "extract")
    assert the_plan.replayed_task_ids == ["evaluate", "extract", "train"] and the_plan.reused_tasks == []


def test_a_full_replay_keeps_its_plan_as_before_and_replays_every_recorded_task(
    chain: StoredRun,
    store: LocalStore,
) -> None:
    the_plan = plan_from(chain, store, None)
    assert the_plan.from_task is None and the_plan.reused_tasks is None
    assert the_plan.replayed_task_ids == ["evaluate", "extract", "train"]
    document = the_plan.model_dump(mode="json")
    assert not {"from_task", "replayed_tasks", "reused_tasks"} & set(document), "older plans keep their digest"


def test_drift_of_a_reused_task_is_reported_but_blocks_nothing(chain: StoredRun, store: LocalStore) -> None:
    current = changed(current_of(chain), "extract", source_hash=OTHER_SOURCE)
    full = plan_from(chain, store, None, current=current)
    assert [d.kind for d in full.blocking_drift] == [DriftKind.CODE_CHANGED], "a full pinned replay refuses it"

    partial = plan_from(chain, store, "train", current=current)
    (drift,) = partial.drift
    assert (drift.kind, drift.task_id, drift.reused) == (DriftKind.CODE_CHANGED, "extract", True)
    assert partial.blocking_drift == []

    replayed_drift = plan_from(chain, store, "train", current=changed(current, "train", source_hash=OTHER_SOURCE))
    assert [(d.task_id, d.reused) for d in replayed_drift.blocking_drift] == [("train", None)]


def test_a_reused_output_that_can_no_longer_be_read_blocks_every_mode(chain: StoredRun, store: LocalStore) -> None:
    delete_object(store, hash_bytes(MODEL))  # train's output: evaluate reads it
    for mode in ("pinned", "latest-code"):
        the_plan = plan_from(chain, store, "evaluate", mode=mode)
        blocking = {(d.kind, d.task_id) for d in the_plan.blocking_drift}
        assert (DriftKind.OUTPUT_MISSING, "train") in blocking
        (missing,) = [d for d in the_plan.drift if d.kind == DriftKind.OUTPUT_MISSING]
        assert "'model.bin' of the reused task can no longer be read" in missing.detail
        assert "replay from this task (or an earlier one)" in missing.detail
        assert missing.recorded == f"{REPO}@{commit_of(chain, 'train')}:model.bin"


def test_an_unknown_start_task_is_refused_with_the_recorded_tasks(chain: StoredRun, store: LocalStore) -> None:
    with pytest.raises(NotFoundError) as refused:
        plan_from(chain, store, "trian")
    message = str(refused.value)
    assert "recorded no task 'trian' to replay from" in message
    assert "its recorded tasks are: evaluate, extract, train" in message

    without_train = {"extract": [], "evaluate": []}
    with pytest.raises(NotFoundError, match="'train' was recorded .* but is no longer in DAG"):
        plan_from(chain, store, "train", graph=without_train)


SHARDS_GRAPH = {"shard": ["merge"], "merge": []}


@pytest.fixture
def sharded(recorder: TaskRecorder) -> StoredRun:
    """A run of a task mapped over three shards, and the task that merges them."""
    shard = TaskSpec(task_id="shard", outputs=("shards/{map_index}.csv",))
    merge = TaskSpec(task_id="merge", outputs=("merged.csv",))
    for n in range(3):
        record(recorder, RUN, shard, {f"shards/{n}.csv": f"shard {n}\n".encode()}, map_index=n)
    record(recorder, RUN, merge, {"merged.csv": b"all shards\n"})
    return load_run(recorder.store, DAG, RUN)


def test_mapped_tasks_are_reused_per_map_index_and_replayed_as_a_whole(sharded: StoredRun, store: LocalStore) -> None:
    run, graph = sharded, SHARDS_GRAPH

    from_merge = plan_from(run, store, "merge", graph=graph)
    assert from_merge.replayed_task_ids == ["merge"]
    assert [(t.task_id, t.map_index, t.commit_id) for t in from_merge.reused_tasks or []] == [
        ("shard", n, commit_of(run, "shard", n)) for n in range(3)
    ]
    from_shard = plan_from(run, store, "shard", graph=graph)
    assert from_shard.replayed_task_ids == ["merge", "shard"] and from_shard.reused_tasks == []


def test_a_reused_mapped_task_that_now_expands_differently_blocks_every_mode(
    sharded: StoredRun, store: LocalStore
) -> None:
    run, graph = sharded, SHARDS_GRAPH
    current = changed(current_of(run), "shard", mapped=True, map_count=4)

    for mode in ("pinned", "latest-code"):
        the_plan = plan_from(run, store, "merge", current=current, graph=graph, mode=mode)
        (blocking,) = the_plan.blocking_drift  # three recorded outputs cannot stand in for four
        assert (blocking.kind, blocking.task_id, blocking.reused) == (DriftKind.MAP_COUNT_CHANGED, "shard", True)
        assert "start the replay at shard or earlier" in (blocking.restore_note or "")
    assert plan_from(run, store, "shard", current=current, graph=graph, mode="latest-code").blocking_drift == []


def test_a_plan_from_a_task_is_saved_and_loads_back_identical(chain: StoredRun, store: LocalStore) -> None:
    the_plan = plan_from(chain, store, "train")
    save_plan(store, the_plan, default_branch="main")
    loaded = load_plan(store, REPO, DAG, the_plan.replay_run_id)
    assert loaded == the_plan and loaded.digest == the_plan.digest
    assert loaded.reused("extract") == the_plan.reused("extract")


# -- the reused task's record in the replay -------------------------------------------------------------


def identity(run_id: str, task_id: str, try_number: int = 1) -> AirflowIdentity:
    return AirflowIdentity(dag_id=DAG, run_id=run_id, task_id=task_id, try_number=try_number, run_type="manual")


def test_a_reused_task_commits_the_original_outputs_and_a_manifest_that_says_so(
    recorder: TaskRecorder,
    store: LocalStore,
    chain: StoredRun,
    tmp_path: Path,
) -> None:
    the_plan = plan_from(chain, store, "train")
    save_plan(store, the_plan, default_branch="main")
    reused = the_plan.reused("extract")
    assert reused is not None
    done = commit_reused_task(
        store, the_plan, reused, identity(the_plan.replay_run_id, "extract"), default_branch="main", work_root=tmp_path
    )
    assert not done.adopted
    original = next(t.manifest for t in chain.tasks if t.manifest.identity.task_id == "extract")
    manifest = done.manifest
    assert manifest.replay is not None
    assert manifest.replay.reused_from == ReusedFrom(run_id=RUN, commit_id=reused.commit_id)
    assert manifest.replay.original_manifest_digest == original.digest
    assert manifest.replay.plan_digest == the_plan.digest
    assert manifest.outputs == original.outputs and manifest.inputs == original.inputs
    assert manifest.identity.run_id == the_plan.replay_run_id
    assert manifest.output_branch == run_branch_name(DAG, the_plan.replay_run_id)
    assert manifest.tracking.mlflow_run_id is None, "nothing ran: no MLflow run"

    branch = run_branch_name(DAG, the_plan.replay_run_id)
    with store.open_object(REPO, branch, "data/raw.csv") as handle:
        assert handle.read() == RAW
    commit = store.get_commit(REPO, done.commit.id)
    assert commit.metadata[keys.MANIFEST_DIGEST] == manifest.digest
    assert commit.metadata[keys.MANIFEST_PATH] == manifest_path("extract", -1)
    assert commit.metadata[keys.REPLAY_OF] == RUN
    assert store.resolve_ref(REPO, chain.ref) == chain.head_commit, "the original run is untouched"

    again = commit_reused_task(
        store,
        the_plan,
        reused,
        identity(the_plan.replay_run_id, "extract", try_number=2),
        default_branch="main",
        work_root=tmp_path,
    )
    assert again.adopted and again.commit.id == done.commit.id and again.manifest == manifest


def test_verify_marks_reused_tasks_and_compares_the_replayed_ones(
    recorder: TaskRecorder,
    store: LocalStore,
    chain: StoredRun,
    tmp_path: Path,
) -> None:
    the_plan = plan_from(chain, store, "train")
    save_plan(store, the_plan, default_branch="main")
    replay = the_plan.replay_run_id
    for reused in the_plan.reused_tasks or []:
        commit_reused_task(
            store, the_plan, reused, identity(replay, reused.task_id), default_branch="main", work_root=tmp_path
        )
    record(recorder, replay, TRAIN, {"model.bin": MODEL}, conf=CONF)
    record(recorder, replay, EVALUATE, {"report.txt": b"accuracy 0.10\n"}, conf=CONF)
    metrics = {("extract", -1): {"rows": 1.0}}
    report = verify_replay(chain, load_run(store, DAG, replay), original_metrics=metrics, replay_metrics={})
    by_task = {t.task_id: t for t in report.tasks}
    assert by_task["extract"].reused and by_task["extract"].status == "identical"
    assert by_task["extract"].metrics == [], "a reused task's metrics are the original's own"
    assert not by_task["train"].reused and by_task["train"].status == "identical"
    assert by_task["evaluate"].status == "differs" and report.verdict == "differs"


def test_a_reused_output_whose_bytes_changed_is_refused_and_commits_nothing(
    recorder: TaskRecorder,
    store: LocalStore,
    chain: StoredRun,
    tmp_path: Path,
) -> None:
    the_plan = plan_from(chain, store, "train")
    save_plan(store, the_plan, default_branch="main")
    branch = run_branch_name(DAG, the_plan.replay_run_id)
    head = store.resolve_ref(REPO, branch)
    path = store.object_path(hash_bytes(RAW))
    path.chmod(0o644)
    path.write_bytes(b"tampered\n")
    reused = the_plan.reused("extract")
    assert reused is not None
    with pytest.raises(StoreCorruption):
        commit_reused_task(
            store,
            the_plan,
            reused,
            identity(the_plan.replay_run_id, "extract"),
            default_branch="main",
            work_root=tmp_path,
        )
    assert store.resolve_ref(REPO, branch) == head, "nothing half-written on the replay's branch"
