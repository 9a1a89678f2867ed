"""The record path of pod tasks, through Airflow's real task runner and the real KubernetesPodOperator;
only the Kubernetes API is simulated (tests/kubernetes/fake_cluster.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.core import metadata_keys as keys
from airflow_repro.core.naming import run_branch_name
from airflow_repro.core.runs import load_run
from tests.kubernetes.fake_cluster import FakeCoreV1Api
from tests.support.airflow_session import load_dag
from tests.support.kubernetes import DIGEST, TOKEN

pytestmark = pytest.mark.usefixtures("repro_env")
SCHEMA_VERSIONS = ("1.31", "1.34")


def store(repro_env: dict[str, str]) -> LocalStore:
    return LocalStore(Path(repro_env["home"]) / "store")


def test_pod_tasks_are_recorded_like_local_tasks(repro_env: dict[str, str], fake_cluster: FakeCoreV1Api) -> None:
    import mlflow

    dag = load_dag("k8s_record", "k8s_test_dags.py")
    dag_run = dag.test()
    assert dag_run.state == "success", [r["stderr"][-2000:] for r in fake_cluster.ran]
    run = load_run(store(repro_env), dag.dag_id, dag_run.run_id)
    by_task = {t.manifest.identity.task_id: t for t in run.tasks}
    assert list(by_task) == ["produce", "total"]

    produce = by_task["produce"].manifest
    # what ran, as the cluster and the task reported it
    assert produce.environment.kind == "image" and produce.environment.digest == DIGEST
    assert produce.environment.python.startswith("CPython")
    assert produce.kubernetes is not None
    assert produce.kubernetes.image_id == f"registry.test/acme/train@{DIGEST}"
    assert produce.kubernetes.image_digest == DIGEST
    assert produce.kubernetes.node_name == "gpu-node-1" and produce.kubernetes.namespace == "ml"
    assert produce.kubernetes.secret_refs == ["train-secrets/token"]
    assert produce.hardware.gpus == [
        {
            "name": "NVIDIA H100 80GB HBM3",
            "driver": "550.54.15",
            "memory": "81559 MiB",
            "uuid": "GPU-5f3c2a51-0000-4000-8000-000000000001",
        }
    ]
    # what it asked for, which a replay asks for again
    assert produce.resources.gpu == 1 and produce.resources.gpu_product == "NVIDIA-H100-80GB-HBM3"
    assert produce.resources.cpu == 1.0 and produce.resources.memory == "1Gi"
    assert produce.parameters.seed == 11 and produce.parameters.task_params == {"scale": 3}
    assert produce.versions.python == produce.environment.python, "Python is the image's, not the worker's"

    # outputs and manifest in one commit; the downstream pod read the upstream commit
    local = store(repro_env)
    numbers = local.open_object("repro", by_task["produce"].commit_id, "data/numbers.txt").read().decode()
    assert [int(n) % 3 for n in numbers.split()] == [0] * 5, "params reached the pod"
    total = by_task["total"].manifest
    assert total.inputs[0].commit_id == by_task["produce"].commit_id
    written = local.open_object("repro", by_task["total"].commit_id, "data/total.txt").read().decode()
    assert int(written) == sum(int(n) for n in numbers.split())

    # the pod saw its pins as environment variables, and ran without Airflow
    seen = {r["pod"].split("-")[1]: r["env"] for r in fake_cluster.ran}
    produce_env = next(env for env in seen.values() if env["AIRFLOW_REPRO_TASK"] == "k8s_record.produce")
    assert produce_env["AIRFLOW_REPRO_SEED"] == "11"
    assert produce_env["AIRFLOW_REPRO_OUTPUT_BRANCH"] == run_branch_name(dag.dag_id, dag_run.run_id)
    assert produce_env["MLFLOW_RUN_ID"] == produce.tracking.mlflow_run_id
    total_env = next(env for env in seen.values() if env["AIRFLOW_REPRO_TASK"] == "k8s_record.total")
    assert json.loads(total_env["AIRFLOW_REPRO_INPUTS"])["numbers"]["commit_id"] == by_task["produce"].commit_id

    # MLflow linked both ways, with the metric the pod logged
    client = mlflow.MlflowClient(tracking_uri=repro_env["mlflow"])
    mlrun = client.get_run(produce.tracking.mlflow_run_id)
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.tags[keys.MLFLOW_COMMIT_ID] == by_task["produce"].commit_id
    assert mlrun.data.tags[keys.MLFLOW_MANIFEST_DIGEST] == produce.digest
    assert mlrun.data.metrics["count"] == 5
    commit = local.get_commit("repro", by_task["produce"].commit_id)
    assert commit.metadata[keys.MANIFEST_DIGEST] == produce.digest

    # the secret's value is nowhere in what was recorded; its name is
    recorded = produce.canonical_json().decode() + json.dumps(mlrun.data.to_dictionary())
    assert TOKEN not in recorded and "train-secrets/token" in recorded
    assert fake_cluster.ran[0]["env"]["API_TOKEN"] == TOKEN, "the fake kubelet resolved the secretKeyRef"
    assert all(TOKEN not in json.dumps(body) for body in fake_cluster.created), "the pod spec holds a reference"
    assert fake_cluster.deleted, "KPO cleaned up its pods"


def test_the_pods_sent_to_the_cluster_are_valid_kubernetes(
    repro_env: dict[str, str], fake_cluster: FakeCoreV1Api
) -> None:
    dag = load_dag("k8s_record", "k8s_test_dags.py")
    dag_run = dag.test()
    assert dag_run.state == "success"
    produce = next(b for b in fake_cluster.created if "produce" in b["metadata"]["name"])
    for version in SCHEMA_VERSIONS:
        for body in fake_cluster.created:
            kubernetes_validate.validate(body, version, strict=True)
    container = produce["spec"]["containers"][0]
    assert container["image"] == f"registry.test/acme/train:1.0@{DIGEST}"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert produce["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in produce["spec"]["tolerations"]
    env = {e["name"]: e for e in container["env"]}
    assert env["API_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "train-secrets", "key": "token"}}
    assert "value" not in env["API_TOKEN"]
    labels, annotations = produce["metadata"]["labels"], produce["metadata"]["annotations"]
    assert labels["airflow-repro.dev/task-id"] == "produce" and labels["airflow-repro.dev/try-number"] == "1"
    assert all(len(value) <= 63 for value in labels.values())
    # a run id like manual__2026-11-27T00:36:12.662144+00:00 is no label value: sanitized and hashed
    # in the label, whole in the annotation
    assert annotations["airflow-repro.dev/run-id"] == dag_run.run_id
    assert labels["airflow-repro.dev/run-id"] != dag_run.run_id
    assert annotations["airflow-repro.dev/manifest"].endswith("_repro/manifests/produce.json")


def test_a_plain_image_task_is_recorded(repro_env: dict[str, str], fake_cluster: FakeCoreV1Api) -> None:
    dag = load_dag("k8s_operator", "k8s_test_dags.py")
    dag_run = dag.test()
    assert dag_run.state == "success", [r["stderr"][-2000:] for r in fake_cluster.ran]
    (task,) = load_run(store(repro_env), dag.dag_id, dag_run.run_id).tasks
    assert task.manifest.kubernetes.image_digest == DIGEST and task.manifest.code.callable is None
    hello = store(repro_env).open_object("repro", task.commit_id, "out/hello.txt").read()
    assert hello == b"hello from the pod"


def test_a_failed_pod_commits_nothing(repro_env: dict[str, str], fake_cluster: FakeCoreV1Api) -> None:
    import mlflow

    dag = load_dag("k8s_failing", "k8s_test_dags.py")
    dag_run = dag.test()
    assert dag_run.state == "failed"
    assert "boom in the pod" in fake_cluster.ran[0]["stderr"]
    local = store(repro_env)
    commits = [
        c
        for c in local.log("repro", run_branch_name(dag.dag_id, dag_run.run_id))
        if c.metadata.get(keys.TASK_KEY, "").startswith(f"{dag.dag_id}/")
    ]
    assert commits == []
    client: Any = mlflow.MlflowClient(tracking_uri=repro_env["mlflow"])
    experiment = client.get_experiment_by_name("k8s_failing")
    runs = client.search_runs([experiment.experiment_id], f"tags.`airflow.run_id` = '{dag_run.run_id}'")
    assert [r.info.status for r in runs] == ["FAILED"]


def test_outputs_the_worker_cannot_see_fail_with_the_fix(
    repro_env: dict[str, str], fake_cluster: FakeCoreV1Api, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without a shared work volume the pod hands its outputs over to a folder only it sees."""
    original = fake_cluster._container_env

    def unshared(container: dict[str, Any], namespace: str, root: Path) -> dict[str, str]:
        env = original(container, namespace, root)
        env["AIRFLOW_REPRO_OUTPUT_URI"] = (tmp_path / "pod-only").as_uri()
        return env

    monkeypatch.setattr(fake_cluster, "_container_env", unshared)
    dag = load_dag("k8s_operator", "k8s_test_dags.py")
    dag_run = dag.test()
    assert dag_run.state == "failed"
    assert (tmp_path / "pod-only" / "out" / "hello.txt").exists()
    ti = dag_run.get_task_instance("script")
    assert ti.try_number == 1, "a configuration error is not retried"


def test_openlineage_on_complete_carries_the_image_pin(
    repro_env: dict[str, str], fake_cluster: FakeCoreV1Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider's listener calls these methods on the operator that ran (KPO has none of its own)."""
    from airflow_repro.airflow.kubernetes import ReproKubernetesPodOperator

    dag = load_dag("k8s_operator", "k8s_test_dags.py")
    ran: list[ReproKubernetesPodOperator] = []
    original = ReproKubernetesPodOperator.execute

    def keep(self: ReproKubernetesPodOperator, context: Any) -> Any:
        ran.append(self)
        return original(self, context)

    monkeypatch.setattr(ReproKubernetesPodOperator, "execute", keep)
    dag_run = dag.test()
    assert dag_run.state == "success"
    (operator,) = ran
    ti = dag_run.get_task_instance("script")
    lineage = operator.get_openlineage_facets_on_complete(ti)
    facet = lineage.run_facets["repro_manifest"]
    assert facet.environment.kind == "image" and facet.environment.digest == DIGEST
    assert [d.name for d in lineage.outputs] == ["repro/out/hello.txt"]
    assert facet.manifestDigest == operator.repro_attempt.recorded.manifest.digest
