"""Pod tasks: positional arguments recorded and passed to the pod, mapped instances writing apart,
a runtime misuse not retried. The real operator and PodManager; a fake Kubernetes API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.core.naming import run_branch_name
from airflow_repro.core.redaction import is_redacted
from airflow_repro.core.runs import load_run
from tests.kubernetes.fake_cluster import FakeCoreV1Api
from tests.support import airflow_session
from tests.support.airflow_session import load_dag

DAGS = "k8s_arguments_dags.py"
airflow_session.install_dag(Path(__file__).parent / "dags" / DAGS)
pytestmark = pytest.mark.usefixtures("repro_env")


def store(repro_env: dict[str, str]) -> LocalStore:
    return LocalStore(Path(repro_env["home"]) / "store")


def test_positional_arguments_reach_the_pod_and_are_recorded(
    repro_env: dict[str, str], fake_cluster: FakeCoreV1Api
) -> None:
    dag = load_dag("k8s_positional", DAGS)
    dag_run = dag.test()
    assert dag_run.state == "success", [r["stderr"][-2000:] for r in fake_cluster.ran]
    (task,) = load_run(store(repro_env), dag.dag_id, dag_run.run_id).tasks
    numbers, offset, source = task.manifest.parameters.op_args
    assert (numbers, offset) == ([1, 2, 3], 10) and is_redacted(source)
    assert task.manifest.parameters.op_kwargs == {"scale": 2}
    assert "hunter2" not in task.manifest.canonical_json().decode()
    with store(repro_env).open_object("repro", task.commit_id, "sum.json") as handle:
        assert json.load(handle) == {"total": 32, "source_is_real": True}
    (ran,) = fake_cluster.ran
    assert json.loads(ran["env"]["AIRFLOW_REPRO_ARGS"])[:2] == [[1, 2, 3], 10]
    assert json.loads(ran["env"]["AIRFLOW_REPRO_KWARGS"]) == {"scale": 2}


def test_mapped_pod_tasks_write_apart(repro_env: dict[str, str], fake_cluster: FakeCoreV1Api) -> None:
    dag = load_dag("k8s_mapped", DAGS)
    dag_run = dag.test()
    assert dag_run.state == "success", [r["stderr"][-2000:] for r in fake_cluster.ran]
    local = store(repro_env)
    head = local.resolve_ref("repro", run_branch_name(dag.dag_id, dag_run.run_id))
    parts = {
        o.path: local.open_object("repro", head, o.path).read().decode() for o in local.list_objects("repro", head)
    }
    assert {p: v for p, v in parts.items() if p.startswith("parts/")} == {
        "parts/0.txt": "5 at 0",
        "parts/1.txt": "6 at 1",
    }
    assert sorted(r["env"]["AIRFLOW_REPRO_MAP_INDEX"] for r in fake_cluster.ran) == ["0", "1"]
    assert sorted(json.loads(r["env"]["AIRFLOW_REPRO_OUTPUTS"])[0] for r in fake_cluster.ran) == [
        "parts/0.txt",
        "parts/1.txt",
    ]


def test_a_pod_misusing_the_runtime_is_not_retried(repro_env: dict[str, str], fake_cluster: FakeCoreV1Api) -> None:
    dag = load_dag("k8s_runtime_misuse", DAGS)
    dag_run = dag.test()
    assert dag_run.state == "failed"
    tasks = {r["env"]["AIRFLOW_REPRO_TASK"] for r in fake_cluster.ran}
    assert tasks == {"k8s_runtime_misuse.misuses", "k8s_runtime_misuse.script_misuses"}
    assert len(fake_cluster.ran) == 2, "one pod per task: no retry"
    by_task = {r["env"]["AIRFLOW_REPRO_TASK"].split(".")[1]: r for r in fake_cluster.ran}
    assert by_task["misuses"]["returncode"] == 78, "run_callable exits with the no-retry status"
    assert "RuntimeContextError" in by_task["script_misuses"]["stderr"]
    for task_id in ("misuses", "script_misuses"):
        ti = dag_run.get_task_instance(task_id)
        assert ti.state == "failed" and ti.try_number == 1
