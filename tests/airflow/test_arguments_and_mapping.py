"""Every argument is recorded and reaches the task in each mode; map indexes write apart; a task
misusing the runtime is not retried. Run for real through Airflow's task runner (``dag.test()``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.core import metadata_keys as keys
from airflow_repro.core.naming import run_branch_name
from airflow_repro.core.redaction import is_redacted
from airflow_repro.core.runs import load_run
from airflow_repro.errors import NotFoundError
from tests.support.airflow_session import load_dag

pytestmark = pytest.mark.usefixtures("repro_env")
DAGS = "repro_arguments_dags.py"
SECRET = "hunter2-never-recorded"


def store(repro_env: dict[str, str]) -> LocalStore:
    return LocalStore(Path(repro_env["home"]) / "store")


def task_commits(local: LocalStore, dag_id: str, run_id: str) -> list[Any]:
    """The commits tasks made on the run's branch (none where no task got as far as making it)."""
    try:
        commits = local.log("repro", run_branch_name(dag_id, run_id))
    except NotFoundError:
        return []
    return [c for c in commits if c.metadata.get(keys.TASK_KEY, "").startswith(f"{dag_id}/")]


def read(local: LocalStore, commit_id: str, path: str) -> bytes:
    with local.open_object("repro", commit_id, path) as handle:
        return handle.read()


# -- A. positional arguments ---------------------------------------------------------------------------
def test_positional_arguments_are_recorded_redacted_and_passed_in_process(repro_env: dict[str, str]) -> None:
    dag = load_dag("repro_positional", DAGS)
    dag_run = dag.test()
    assert dag_run.state == "success"
    (task,) = load_run(store(repro_env), dag.dag_id, dag_run.run_id).tasks
    parameters = task.manifest.parameters
    features, source = parameters.op_args
    assert features == {"rows": 3, "columns": ["a", "b"]}, "the XCom given positionally is recorded"
    assert is_redacted(source), "a URL with a password is recorded as its keyed marker"
    assert parameters.op_kwargs == {"epochs": 4}
    assert SECRET not in task.manifest.canonical_json().decode()
    from airflow_repro.core.archive import load_archived

    archived = load_archived(store(repro_env), "repro", "code", task.manifest.code.snapshot or "").decode()
    assert SECRET not in archived and source in archived, "the DAG file is archived with the secret as its marker"
    model = json.loads(read(store(repro_env), task.commit_id, "model.json"))
    assert model == {"features": {"rows": 3, "columns": ["a", "b"]}, "source_is_real": True, "epochs": 4}


def test_positional_arguments_reach_a_lockfile_task(repro_env: dict[str, str]) -> None:
    dag = load_dag("repro_positional_lockfile", DAGS)
    dag_run = dag.test()
    assert dag_run.state == "success"
    (task,) = load_run(store(repro_env), dag.dag_id, dag_run.run_id).tasks
    assert task.manifest.environment.kind == "lockfile"
    assert task.manifest.parameters.op_args == ["hello from upstream", 2]
    assert task.manifest.parameters.op_kwargs == {"shout": True}
    written = json.loads(read(store(repro_env), task.commit_id, "args.json"))
    assert written == {"greeting": "HELLO FROM UPSTREAM", "count": 2}
    returned = dag_run.get_task_instance("in_venv").xcom_pull(task_ids="in_venv")
    assert returned == written


def test_a_task_without_positional_arguments_records_none() -> None:
    """Added after 1.0: a manifest without positional arguments keeps the digest it had before."""
    from airflow_repro.core.manifest import Parameters

    assert "op_args" not in Parameters(op_kwargs={"a": 1}).model_dump(mode="json")
    assert Parameters(op_args=[1]).model_dump(mode="json")["op_args"] == [1]


# -- B. map indexes write apart ---------------------------------------------------------------------------
def test_a_mapped_task_records_one_object_per_map_index(repro_env: dict[str, str]) -> None:
    dag = load_dag("repro_mapped", DAGS)
    dag_run = dag.test()
    assert dag_run.state == "success"
    local = store(repro_env)
    commits = task_commits(local, dag.dag_id, dag_run.run_id)
    assert len(commits) == 3
    head = local.resolve_ref("repro", run_branch_name(dag.dag_id, dag_run.run_id))
    shards = {o.path for o in local.list_objects("repro", head) if o.path.startswith("shards/")}
    assert shards == {"shards/0.txt", "shards/1.txt", "shards/2.txt"}
    contents = {read(local, head, path).decode() for path in shards}
    assert contents == {"shard of 10 at index 0", "shard of 20 at index 1", "shard of 30 at index 2"}
    hashes = set()
    for commit in commits:
        map_index = int(commit.metadata[keys.TASK_KEY].rsplit("/", 1)[1])
        manifest_path = commit.metadata[keys.MANIFEST_PATH]
        assert manifest_path == f"_repro/manifests/shard.{map_index}.json"
        manifest = json.loads(read(local, commit.id, manifest_path))
        assert manifest["identity"]["map_index"] == map_index
        (output,) = manifest["outputs"]
        assert output["path"] == f"shards/{map_index}.txt"
        hashes.add(output["content_hash"])
    assert len(hashes) == 3, "each map index recorded its own object"


def test_a_mapped_task_without_the_placeholder_is_refused_before_it_runs(
    repro_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    attempts = tmp_path / "attempts.txt"
    monkeypatch.setenv("REPRO_TEST_ATTEMPTS", str(attempts))
    dag = load_dag("repro_mapped_clash", DAGS)
    dag_run = dag.test()
    assert dag_run.state == "failed"
    assert not attempts.exists(), "the callable must not run"
    assert task_commits(store(repro_env), dag.dag_id, dag_run.run_id) == []
    for ti in dag_run.get_task_instances():
        if ti.task_id == "shard":
            assert ti.state == "failed" and ti.try_number == 1
    out, err = capfd.readouterr()
    assert (
        "task shard is mapped: its map indexes would overwrite each other's 'shard.txt'; "
        "declare outputs=['shard/{map_index}.txt'] (or any path with {map_index})"
    ) in out + err


# -- C4. a task misusing the runtime is not retried, in every mode ----------------------------------------
def test_a_wrapped_runtime_misuse_is_not_retried(
    repro_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = tmp_path / "attempts.txt"
    monkeypatch.setenv("REPRO_TEST_ATTEMPTS", str(attempts))
    dag = load_dag("repro_runtime_misuse_wrapped", DAGS)
    dag_run = dag.test()
    assert dag_run.state == "failed"
    assert attempts.read_text().splitlines() == ["wraps_the_misuse"], "one attempt, no retry"
    assert dag_run.get_task_instance("wraps_the_misuse").try_number == 1


def test_a_runtime_misuse_in_a_lockfile_venv_is_not_retried(
    repro_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    attempts = tmp_path / "attempts.txt"
    monkeypatch.setenv("REPRO_TEST_ATTEMPTS", str(attempts))
    dag = load_dag("repro_runtime_misuse_in_venv", DAGS)
    dag_run = dag.test()
    assert dag_run.state == "failed"
    assert attempts.read_text().splitlines() == ["misuses_in_venv"], "one attempt, no retry"
    assert dag_run.get_task_instance("misuses_in_venv").try_number == 1
    out, err = capfd.readouterr()
    assert "misuses_in_venv misused the runtime in its pinned environment" in out + err


# -- parse time: an unmapped task holding {map_index}, each message naming its task once -----------------
DAG_TEMPLATE = """
from airflow.sdk import dag
from airflow_repro import Input, repro_task

@dag(dag_id="bad_{name}", schedule=None)
def bad():
    @repro_task({arguments})
    def the_task(n=1):
        pass
    the_task{call}

bad()
"""
IMAGE = "registry.test/acme/train:1.0@sha256:" + "4f" * 32


def _import_error(tmp_path: Path, name: str, arguments: str, call: str = "()") -> str | None:
    from airflow.dag_processing.dagbag import DagBag

    dag_file = tmp_path / f"bad_{name}.py"
    dag_file.write_text(DAG_TEMPLATE.format(name=name, arguments=arguments, call=call))
    bag = DagBag(dag_folder=str(dag_file))
    if not bag.import_errors:
        return None
    (error,) = bag.import_errors.values()
    return str(error)


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("unmapped", 'outputs=["shards/{map_index}.csv"]', "task the_task is not mapped, but its outputs"),
        ("unmapped_pod", f'outputs=["s/{{map_index}}.csv"], image="{IMAGE}", execution="kubernetes"', "is not mapped"),
        ("brace", 'outputs=["shards/{n}.csv"]', r"the only placeholder an output path may hold is \{map_index\}"),
        ("folder_input", 'inputs={"m": Input("models/")}', r"a folder \('models/'\) cannot be an input"),
        ("seed", "seed=-3", "task the_task: seed must be a non-negative int"),
        ("repository", 'repository="Not_Valid"', "task the_task: invalid repository name 'Not_Valid'"),
        ("pod_seed", f'seed=-3, image="{IMAGE}", execution="kubernetes"', "task the_task: seed must be"),
    ],
)
def test_declaration_errors_name_the_task_once(tmp_path: Path, name: str, arguments: str, message: str) -> None:
    import re

    error = _import_error(tmp_path, name, arguments)
    assert error is not None and re.search(message, error), error
    last_line = error.strip().splitlines()[-1]
    assert len(re.findall(r"task '?the_task'?", last_line)) == 1, last_line


def test_a_mapped_task_with_the_placeholder_parses(tmp_path: Path) -> None:
    assert _import_error(tmp_path, "mapped", 'outputs=["shards/{map_index}.csv"]', ".expand(n=[1, 2])") is None


# -- a restored replay passes the positional arguments too ------------------------------------------------
POSITIONAL_DRIFT_DAG = """
from airflow.sdk import dag
from airflow_repro import repro_task, runtime

@dag(dag_id="repro_positional_drift", schedule=None)
def repro_positional_drift():
    @repro_task(outputs=["total.txt"], seed=1)
    def total(numbers, offset, scale=1):
        runtime.current().output_path("total.txt").write_text(str((sum(numbers) + offset) * scale{edit}))

    total([1, 2, 3], 10, scale=2)

repro_positional_drift()
"""


def test_a_pinned_replay_after_a_code_edit_passes_positional_arguments(repro_env: dict[str, str]) -> None:
    from airflow_repro.airflow import replay as service
    from tests.support.airflow_session import DAGS_FOLDER, run_replay

    dag_file = DAGS_FOLDER / "repro_positional_drift.py"
    dag_file.write_text(POSITIONAL_DRIFT_DAG.format(edit=""))
    recorded = load_dag("repro_positional_drift", dag_file.name).test()
    assert recorded.state == "success"
    backends = service.Backends.from_airflow_conf()
    try:
        dag_file.write_text(POSITIONAL_DRIFT_DAG.format(edit=" + 1000"))  # the current code would write 1032
        plan = service.plan(backends, "repro_positional_drift", recorded.run_id, "pinned")
        assert not plan.blocking_drift, plan.refusal_message()
        replay = run_replay(load_dag("repro_positional_drift", dag_file.name), plan, backends)
        assert replay.state == "success"
        (task,) = load_run(backends.store, "repro_positional_drift", plan.replay_run_id).tasks
        assert task.manifest.replay is not None and task.manifest.replay.code == "restored"
        assert task.manifest.parameters.op_args == [[1, 2, 3], 10]
        assert read(backends.store, task.commit_id, "total.txt") == b"32", "the archived code, given its arguments"
        assert service.verify(backends, "repro_positional_drift", plan.replay_run_id).verdict == "identical"
    finally:
        dag_file.unlink()
