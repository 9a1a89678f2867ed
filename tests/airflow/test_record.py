"""The record path, run for real through Airflow's task runner (``dag.test()``, in process)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.core import metadata_keys as keys
from airflow_repro.core.environment import lockfile_digest
from airflow_repro.core.naming import run_branch_name, run_tag_name
from airflow_repro.core.runs import DAG_RUN_MANIFEST_PATH, load_dag_run_manifest_at, load_run
from tests.support.airflow_session import DAGS_FOLDER, load_dag

pytestmark = pytest.mark.usefixtures("repro_env")


def store(repro_env: dict[str, str]) -> LocalStore:
    return LocalStore(Path(repro_env["home"]) / "store")


def mlflow_client(repro_env: dict[str, str]) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=repro_env["mlflow"])


def branch_commits(local: LocalStore, dag_id: str, run_id: str) -> list[Any]:
    commits = list(local.log("repro", run_branch_name(dag_id, run_id)))
    return [c for c in commits if c.metadata.get(keys.TASK_KEY, "").startswith(f"{dag_id}/")]


def test_example_pipeline_is_recorded_end_to_end(repro_env: dict[str, str], tmp_path: Path) -> None:
    dag = load_dag("example_ml_pipeline", "example_ml_pipeline.py")
    dag_run = dag.test()
    assert dag_run.state == "success"
    local = store(repro_env)
    run = load_run(local, dag.dag_id, dag_run.run_id)

    assert [t.manifest.identity.task_id for t in run.tasks] == ["ingest", "featurize", "train", "evaluate"]
    assert run.closed and run.ref == run_tag_name(dag.dag_id, dag_run.run_id)
    by_task = {t.manifest.identity.task_id: t for t in run.tasks}
    for task in run.tasks:
        m = task.manifest
        assert len(task.commit_id) == 64
        assert m.environment.kind == "fingerprint" and m.environment.digest.startswith("sha256:")
        assert m.parameters.seed == 42 and m.parameters.task_params == {"test_size": 0.25, "n_estimators": 50}
        assert m.code.source_hash.startswith("sha256:") and m.code.callable.endswith(m.identity.task_id)
        # the module as the user named it, not Airflow's path-derived import name
        assert m.code.callable.split(":")[0] == Path(m.code.dag_file).stem
        assert m.versions.airflow == "3.3.2" and m.hardware.cpu_count
        # outputs and manifest are in the same commit, with the hashes the manifest states
        for output in m.outputs:
            assert local.stat_object("repro", task.commit_id, output.path).content_hash == output.content_hash
        commit = local.get_commit("repro", task.commit_id)
        assert commit.metadata[keys.MANIFEST_DIGEST] == m.digest
        assert commit.metadata[keys.LAKEFS_MLFLOW_RUN_ID] == m.tracking.mlflow_run_id
        assert commit.metadata[keys.LAKEFS_AIRFLOW_RUN_ID] == dag_run.run_id

    # inputs were resolved to the commit the upstream task made
    featurize_input = by_task["featurize"].manifest.inputs[0]
    assert featurize_input.commit_id == by_task["ingest"].commit_id
    assert featurize_input.content_hash == by_task["ingest"].manifest.outputs[0].content_hash

    # the DAG-run manifest lists every task, under the run's immutable tag
    dag_manifest = load_dag_run_manifest_at(local, "repro", run.ref)
    assert {t.task_id: t.commit_id for t in dag_manifest.tasks} == {k: v.commit_id for k, v in by_task.items()}
    assert local.stat_object("repro", run.ref, DAG_RUN_MANIFEST_PATH)

    # one MLflow run per task attempt, linked both ways
    client = mlflow_client(repro_env)
    for task in run.tasks:
        mlrun = client.get_run(task.manifest.tracking.mlflow_run_id)
        assert mlrun.info.status == "FINISHED"
        assert mlrun.data.tags[keys.MLFLOW_COMMIT_ID] == task.commit_id
        assert mlrun.data.tags[keys.MLFLOW_MANIFEST_DIGEST] == task.manifest.digest
        assert mlrun.data.tags[keys.MLFLOW_ENV_PIN] == task.manifest.environment.digest
        assert mlrun.data.params["seed"] == "42"
    evaluate = client.get_run(by_task["evaluate"].manifest.tracking.mlflow_run_id)
    assert 0.8 <= evaluate.data.metrics["accuracy"] <= 1.0
    local_copy = client.download_artifacts(evaluate.info.run_id, "repro/manifest.json", str(tmp_path))
    assert json.loads(Path(local_copy).read_text()) == json.loads(by_task["evaluate"].manifest.canonical_json())

    # XCom carries the record for downstream tools and the UI
    ti = dag_run.get_task_instance("evaluate")
    assert ti.xcom_pull(task_ids="evaluate", key="repro")["commit_id"] == by_task["evaluate"].commit_id


def test_failed_task_commits_nothing(repro_env: dict[str, str]) -> None:
    dag = load_dag("repro_failing", "repro_test_dags.py")
    dag_run = dag.test()
    assert dag_run.state == "failed"
    local = store(repro_env)
    assert branch_commits(local, dag.dag_id, dag_run.run_id) == []
    head = local.resolve_ref("repro", run_branch_name(dag.dag_id, dag_run.run_id))
    assert [o.path for o in local.list_objects("repro", head) if o.path == "partial.txt"] == []
    assert run_tag_name(dag.dag_id, dag_run.run_id) not in local.list_tags("repro")
    client = mlflow_client(repro_env)
    experiment = client.get_experiment_by_name("repro_failing")
    runs = client.search_runs([experiment.experiment_id], f"tags.`airflow.run_id` = '{dag_run.run_id}'")
    assert [r.info.status for r in runs] == ["FAILED"]


def test_retry_after_a_late_failure_reuses_its_commit(
    repro_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Try 1 commits, then fails linking MLflow; try 2 finds its own commit instead of a second."""
    from airflow_repro.core.recorder import TaskRecorder
    from airflow_repro.errors import TrackerUnavailable

    original = TaskRecorder._link_tracked_run
    calls = {"n": 0}

    def flaky_link(self: TaskRecorder, *args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise TrackerUnavailable("MLflow went away (injected)")
        original(self, *args, **kwargs)

    monkeypatch.setattr(TaskRecorder, "_link_tracked_run", flaky_link)
    dag = load_dag("repro_retry", "repro_test_dags.py")
    dag_run = dag.test()
    assert dag_run.state == "success"
    assert calls["n"] == 2
    commits = branch_commits(store(repro_env), dag.dag_id, dag_run.run_id)
    assert len(commits) == 1
    ti = dag_run.get_task_instance("stable_output")
    summary = ti.xcom_pull(task_ids="stable_output", key="repro")
    assert summary["reused_commit"] is True and summary["commit_id"] == commits[0].id
    # What the retry reports is what is committed: try 1's manifest and MLflow run ...
    assert summary["manifest_digest"] == commits[0].metadata[keys.MANIFEST_DIGEST]
    committed_run = commits[0].metadata[keys.LAKEFS_MLFLOW_RUN_ID]
    assert summary["mlflow_run_id"] == committed_run
    client = mlflow_client(repro_env)
    first = client.get_run(committed_run)
    assert first.info.status == "FINISHED", "the run the commit links to must not stay RUNNING"
    assert first.data.tags[keys.MLFLOW_COMMIT_ID] == commits[0].id
    assert first.data.tags[keys.MLFLOW_MANIFEST_DIGEST] == summary["manifest_digest"]
    # ... and try 2's own run is ended as superseded by it.
    (second,) = client.search_runs(
        [first.info.experiment_id], f"tags.`airflow.run_id` = '{dag_run.run_id}' and tags.`airflow.try_number` = '2'"
    )
    assert second.info.status == "FAILED" and second.data.tags[keys.MLFLOW_SUPERSEDED_BY] == committed_run


def test_missing_input_fails_before_the_task_runs(
    repro_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    side_effect = tmp_path / "ran.txt"
    monkeypatch.setenv("REPRO_TEST_SIDE_EFFECT", str(side_effect))
    dag = load_dag("repro_bad_input", "repro_test_dags.py")
    dag_run = dag.test()
    assert dag_run.state == "failed"
    assert not side_effect.exists(), "the callable must not run when an input cannot be pinned"
    assert dag_run.get_task_instance("reads_missing").try_number == 1  # a user error is not retried
    assert branch_commits(store(repro_env), dag.dag_id, dag_run.run_id) == []


def test_lockfile_task_runs_in_its_own_pinned_venv(repro_env: dict[str, str]) -> None:
    dag = load_dag("repro_lockfile", "repro_test_dags.py")
    dag_run = dag.test()
    assert dag_run.state == "success"
    run = load_run(store(repro_env), dag.dag_id, dag_run.run_id)
    (task,) = run.tasks
    pin = task.manifest.environment
    assert pin.kind == "lockfile" and pin.lockfile == "lockfiles/six.lock"
    assert pin.digest == lockfile_digest(DAGS_FOLDER / "lockfiles" / "six.lock")
    assert task.manifest.parameters.op_kwargs == {"greeting": "hello"}
    with store(repro_env).open_object("repro", task.commit_id, "env.json") as handle:
        env = json.load(handle)
    assert env["six"] == "1.16.0"
    assert env["airflow_importable"] is False, "the venv must not see the worker's packages"
    assert Path(env["prefix"]).parent == Path(repro_env["home"]) / "venvs"
    assert env["seed"] == 3 and env["greeting"] == "hello"
    import random

    random.seed(3)
    assert env["first_random"] == random.random(), "the recorded seed seeds the task's RNG"
    mlrun = mlflow_client(repro_env).get_run(task.manifest.tracking.mlflow_run_id)
    assert mlrun.data.metrics["answer"] == 42
    assert dag_run.get_task_instance("in_pinned_venv").xcom_pull(task_ids="in_pinned_venv") == {"ok": True}


def test_a_task_misusing_the_runtime_is_not_retried(repro_env: dict[str, str]) -> None:
    """Retrying cannot make an undeclared output declared: the attempt fails once, for good."""
    dag = load_dag("repro_runtime_misuse", "repro_test_dags.py")
    dag_run = dag.test()
    assert dag_run.state == "failed"
    assert dag_run.get_task_instance("writes_undeclared").try_number == 1
    assert branch_commits(store(repro_env), dag.dag_id, dag_run.run_id) == []


def test_only_faults_a_retry_can_mend_are_left_to_airflows_retries() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_repro import runtime
    from airflow_repro.airflow.operators import raise_if_final
    from airflow_repro.errors import InvalidNameError, StoreCorruption, StoreUnavailable, TrackerUnavailable

    for final in (StoreCorruption("damaged object"), InvalidNameError("bad"), runtime.RuntimeContextError("misuse")):
        with pytest.raises(AirflowFailException, match=str(final)):
            raise_if_final(final)
    for transient in (StoreUnavailable("down"), TrackerUnavailable("down"), OSError("disk"), ValueError("task bug")):
        raise_if_final(transient)  # returns: the caller re-raises it and Airflow may retry
