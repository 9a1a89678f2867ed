"""The record path on lakeFS: TaskRecorder commits into LakeFSStore (through the spec-validated
double), a retried task finds its own commit, the closed run keeps a retention branch, and the run
can be planned for replay, which names an input that lakeFS GC collected."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_repro.adapters.lakefs_store import LakeFSStore
from airflow_repro.core import metadata_keys as keys
from airflow_repro.core.environment import fingerprint_pin, hardware, versions
from airflow_repro.core.manifest import AirflowIdentity, CodeVersion, Parameters
from airflow_repro.core.naming import retention_branch_name, run_branch_name, run_tag_name
from airflow_repro.core.recorder import RecordedAttempt, TaskEnvironment, TaskRecorder
from airflow_repro.core.replay import CurrentTask, DriftKind, plan_replay, replay_run_id
from airflow_repro.core.runs import StoredRun, close_run, load_run
from airflow_repro.core.spec import Input, TaskSpec
from tests.doubles.lakefs_double import LakeFSDouble
from tests.support.stores import double_store

REPO, DAG, RUN = "ml-data", "train_model", "manual__2026-01-01T00:00:00+00:00"
EXTRACT = TaskSpec(task_id="extract", outputs=("data/raw.csv",))
TRAIN = TaskSpec(task_id="train", inputs={"raw": Input("data/raw.csv")}, outputs=("model.bin",))


@pytest.fixture
def store(lakefs_double: LakeFSDouble) -> LakeFSStore:
    return double_store(lakefs_double, airflow_ui_url="http://localhost:8080")


@pytest.fixture
def recorder(store: LakeFSStore, tmp_path: Path) -> TaskRecorder:
    return TaskRecorder(store, None, default_repository=REPO, default_branch="main", work_root=tmp_path / "work")


def record(recorder: TaskRecorder, spec: TaskSpec, files: dict[str, bytes], try_number: int = 1) -> RecordedAttempt:
    env = TaskEnvironment(
        identity=AirflowIdentity(dag_id=DAG, run_id=RUN, task_id=spec.task_id, try_number=try_number),
        code=CodeVersion(source_hash="sha256:" + "0" * 64, bundle_version="v1"),
        environment=fingerprint_pin(),
        parameters=Parameters(seed=7),
        versions=versions("test"),
        hardware=hardware(),
    )
    prepared = recorder.prepare(spec, env)
    for path, data in files.items():
        (prepared.output_dir / path).parent.mkdir(parents=True, exist_ok=True)
        (prepared.output_dir / path).write_bytes(data)
    return recorder.finish(prepared)


def current_of(run: StoredRun) -> dict[str, CurrentTask]:
    return {
        t.manifest.identity.task_id: CurrentTask(
            task_id=t.manifest.identity.task_id,
            source_hash=t.manifest.code.source_hash,
            environment_digest=t.manifest.environment.digest,
            bundle_version=t.manifest.code.bundle_version,
        )
        for t in run.tasks
    }


def test_a_run_recorded_on_lakefs_is_replayable(
    recorder: TaskRecorder, store: LakeFSStore, lakefs_double: LakeFSDouble
) -> None:
    extract = record(recorder, EXTRACT, {"data/raw.csv": b"id,x\n1,2\n"})
    train = record(recorder, TRAIN, {"model.bin": b"weights"})
    retried = record(recorder, TRAIN, {"model.bin": b"weights"}, try_number=2)

    branch = run_branch_name(DAG, RUN)
    assert retried.reused_commit and retried.commit.id == train.commit.id  # no second commit
    assert [c.id for c in store.log(REPO, branch, limit=2)] == [train.commit.id, extract.commit.id]
    (pinned,) = train.manifest.inputs
    assert pinned.commit_id == extract.commit.id and len(pinned.commit_id) == 64
    assert train.commit.metadata[keys.MANIFEST_DIGEST] == train.manifest.digest
    assert train.commit.metadata["::lakefs::Airflow::url[url:ui]"].startswith("http://localhost:8080/dags/train_model/")

    head = close_run(store, DAG, RUN, "success")
    assert store.retention_branches(REPO) == {retention_branch_name(run_tag_name(DAG, RUN)): head}
    run = load_run(store, DAG, RUN)
    assert run.closed and [t.commit_id for t in run.tasks] == [extract.commit.id, train.commit.id]

    plan = plan_replay(run, current_of(run), store, mode="pinned", replay_run_id=replay_run_id(RUN))
    assert plan.blocking_drift == []
    assert plan.pins_for("train").inputs[0].commit_id == extract.commit.id  # type: ignore[union-attr]

    lakefs_double.collect_garbage(REPO, extract.commit.id, "data/raw.csv")
    plan = plan_replay(run, current_of(run), store, mode="pinned", replay_run_id=replay_run_id(RUN))
    (missing,) = [d for d in plan.drift if d.kind is DriftKind.INPUT_MISSING]
    assert missing.task_id == "train" and "garbage collection" in missing.detail
