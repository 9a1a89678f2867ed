"""A pod attempt's seams: the pins the real operator writes are the documented ones and read back
as the recorder laid them out; a replay's recorded hardware reaches the pod through the attempt,
never by rewriting what the DAG declared."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes.client import ApiClient

from airflow_repro import runtime
from airflow_repro.adapters import k8s_podspec as podspec
from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.airflow.kubernetes import PodAttempt, ReproKubernetesPodOperator
from airflow_repro.core.environment import hardware, versions
from airflow_repro.core.gpus import task_resources
from airflow_repro.core.manifest import AirflowIdentity, CodeVersion, EnvironmentPin, Parameters
from airflow_repro.core.ports import TrackerRun
from airflow_repro.core.recorder import TaskEnvironment, TaskRecorder
from airflow_repro.core.spec import TaskSpec
from airflow_repro.task_formats import PodEnv
from tests.support.kubernetes import DEDICATED, DIGEST, IMAGE, ZONE, documented_pod_variables, replay_pod_resources


def test_the_operator_writes_the_documented_pod_variables(tmp_path: Path) -> None:
    op = ReproKubernetesPodOperator(task_id="t", image=IMAGE, outputs=["model.pt"], seed=4)
    recorder = TaskRecorder(
        LocalStore(tmp_path / "store"),
        None,
        default_repository="repro",
        default_branch="main",
        work_root=tmp_path / "work",
    )
    environment = TaskEnvironment(
        identity=AirflowIdentity(dag_id="d", run_id="manual__1", task_id="t", try_number=1),
        code=CodeVersion(source_hash="sha256:" + "0" * 64),
        environment=EnvironmentPin(kind="image", digest=DIGEST, python="unknown", image=IMAGE),
        parameters=Parameters(seed=4, task_params={"lr": "<redacted>"}),
        versions=versions("test"),
        hardware=hardware(),
        runtime_params={"lr": 0.1},
        runtime_kwargs={"epochs": 3},
    )
    prepared = recorder.prepare(TaskSpec(task_id="t", outputs=("model.pt",), seed=4), environment)
    prepared.tracked_run = TrackerRun(run_id="abc", experiment_id="1", tracking_uri="http://mlflow:5000")

    written = {variable["name"]: variable["value"] for variable in podspec.pin_env(op._pod_pins(prepared))}
    # the presigned transport's Secret file is the one documented variable a shared-volume pod lacks
    assert set(written) - {"PYTHONHASHSEED"} == documented_pod_variables() - {"AIRFLOW_REPRO_TRANSFER_FILE"}
    ctx = runtime.TaskContext.from_env(written)
    assert ctx.task == prepared.context.task and ctx.seed == 4 and ctx.declared_outputs == ("model.pt",)
    assert ctx.params == {"lr": 0.1}, "the pod gets the real params; the manifest records the redacted ones"
    assert PodEnv.from_env(written).kwargs == {"epochs": 3}
    assert ctx.metrics_file == prepared.metrics_file and ctx.output_branch == prepared.branch


def test_a_replays_hardware_reaches_the_pod_through_the_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    op = ReproKubernetesPodOperator(
        task_id="t",
        image=IMAGE,
        namespace="ml",
        node_selector=ZONE,
        tolerations=[DEDICATED],
        resources={"gpu": 2, "accelerator": "l4"},
    )
    declared = (op.container_resources, dict(op.node_selector), list(op.tolerations))

    def pod() -> dict:
        return ApiClient().sanitize_for_serialization(op.build_pod_request_obj(dry_run=True))

    replay_pod_resources(monkeypatch, op, task_resources("t", cpu="1", memory="1Gi", gpu=1, accelerator="h100"))
    replayed = pod()
    assert replayed["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1"},
        "limits": {"nvidia.com/gpu": "1"},
    }
    assert replayed["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", **ZONE}
    assert [t["key"] for t in replayed["spec"]["tolerations"]] == ["nvidia.com/gpu", "dedicated"]
    assert (op.container_resources, op.node_selector, op.tolerations) == declared, "the DAG's own arguments stay"

    op.repro_attempt = PodAttempt()  # the next attempt (not a replay) asks for what the DAG declares
    assert pod()["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert pod()["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4", **ZONE}
