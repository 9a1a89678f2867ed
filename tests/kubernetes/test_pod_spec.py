"""The pods the real operator builds (``build_pod_request_obj``), validated against the Kubernetes
OpenAPI schema; bad declarations fail at DAG parse time; the example DAG parses in both modes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from kubernetes.client import ApiClient

from tests.support.airflow_session import DAGS_FOLDER
from tests.support.kubernetes import DIGEST, IMAGE

SCHEMA_VERSIONS = ("1.31", "1.34")


def pod_of(operator: Any) -> dict[str, Any]:
    return ApiClient().sanitize_for_serialization(operator.build_pod_request_obj(dry_run=True))


def validate(body: dict[str, Any]) -> None:
    for version in SCHEMA_VERSIONS:
        kubernetes_validate.validate(body, version, strict=True)


def test_a_gpu_pod_is_valid_kubernetes_with_its_pins(airflow_db: Path) -> None:
    from airflow.providers.cncf.kubernetes.secret import Secret
    from kubernetes.client import models as k8s

    from airflow_repro.airflow.kubernetes import ReproKubernetesPodOperator
    from airflow_repro.core.gpus import A100_40GB

    operator = ReproKubernetesPodOperator(
        task_id="train",
        namespace="ml",
        image=IMAGE,
        cmds=["python", "-m", "train"],
        outputs=["m.pt"],
        resources={
            "cpu": "2",
            "memory": "8Gi",
            "cpu_limit": "4",
            "memory_limit": "8Gi",
            "gpu": 1,
            "accelerator": A100_40GB.mig("3g.20gb"),
        },
        secrets=[Secret("env", "TOKEN", "train-secrets", "token")],
        env_from=[k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name="s3-credentials"))],
        tolerations=[{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
        node_selector={"topology.kubernetes.io/zone": "eu-west-1a"},
    )
    body = pod_of(operator)
    validate(body)
    container = body["spec"]["containers"][0]
    assert container["image"] == IMAGE and container["terminationMessagePath"] == "/dev/termination-log"
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/mig-3g.20gb": "1"},
        "limits": {"cpu": "4", "memory": "8Gi", "nvidia.com/mig-3g.20gb": "1"},
    }
    assert body["spec"]["nodeSelector"] == {
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB",
        "topology.kubernetes.io/zone": "eu-west-1a",
    }
    assert [t["key"] for t in body["spec"]["tolerations"]] == ["nvidia.com/gpu", "dedicated"]
    assert {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"key": "token", "name": "train-secrets"}}} in container[
        "env"
    ]
    assert container["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    # only names are recorded
    assert sorted(operator.repro_spec.secret_names) == ["k8s:s3-credentials", "k8s:train-secrets/token"]


def test_pins_of_an_attempt_are_valid_kubernetes(airflow_db: Path) -> None:
    from airflow_repro.adapters import k8s_podspec as podspec
    from airflow_repro.core.manifest import AirflowIdentity
    from airflow_repro.task_formats import PinnedInput, PodEnv

    pins = podspec.PodPins(
        identity=AirflowIdentity(
            dag_id="d", run_id="manual__2026-11-27T00:36:12.662144+00:00", task_id="t", try_number=3
        ),
        env=PodEnv(
            task="d.t",
            seed=42,
            inputs={
                "raw": PinnedInput(
                    name="raw", path=Path("/w/in/raw.csv"), repository="repro", commit_id="c" * 64, store_path="raw.csv"
                )
            },
            declared_outputs=("model.pt",),
            output_uri="file:///w/out",
            output_repository="repro",
            output_branch="run_d_x",
            metrics_file="/w/metrics.json",
            params={"lr": 0.1},
            kwargs={},
            mlflow_run_id="abc",
            mlflow_tracking_uri="http://mlflow:5000",
            report_file=podspec.TERMINATION_MESSAGE_PATH,
        ),
        manifest_path="_repro/manifests/t.json",
        environment_digest=DIGEST,
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "p",
            "labels": podspec.pod_labels(pins.identity),
            "annotations": podspec.pod_annotations(pins, image=IMAGE, resolved_from_tag="x:v1"),
        },
        "spec": {
            "containers": [{"name": "base", "image": IMAGE, "env": podspec.pin_env(pins)}],
            "volumes": [podspec.work_volume("repro-work", "/w")[0]],
        },
    }
    pod["spec"]["containers"][0]["volumeMounts"] = [podspec.work_volume("repro-work", "/w")[1]]
    validate(pod)
    env = {e["name"]: e["value"] for e in podspec.pin_env(pins)}
    assert env["AIRFLOW_REPRO_SEED"] == "42" and env["MLFLOW_RUN_ID"] == "abc"
    assert '"commit_id": "' + "c" * 64 in env["AIRFLOW_REPRO_INPUTS"]
    assert pod["metadata"]["annotations"]["airflow-repro.dev/input-commits"] == '{"raw": "' + "c" * 64 + '"}'


DAG_TEMPLATE = """
from airflow.sdk import dag
from airflow_repro import repro_task
from airflow_repro.airflow.kubernetes import ReproKubernetesPodOperator

@dag(dag_id="bad_{name}", schedule=None)
def bad():
    @repro_task.kubernetes({arguments})
    def the_task():
        pass
    the_task()

bad()
"""
GOOD = f'image="{IMAGE}", kubernetes={{"namespace": "ml"}}'


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("tag", 'image="ghcr.io/acme/train:latest"', r"mutable tag.*docker buildx imagetools inspect.*crane digest"),
        ("digest", 'image="ghcr.io/acme/train@sha256:1234"', r"malformed digest 'sha256:1234'.*64 lowercase hex"),
        ("gpu0", GOOD + ', resources={"gpu": 0}', r"gpu must be a positive number of GPUs"),
        ("gpuneg", GOOD + ', resources={"gpu": -1}', r"gpu must be a positive number of GPUs"),
        ("gpustr", GOOD + ', resources={"gpu": "2"}', r"gpu must be a positive whole number.*got '2'"),
        (
            "accel",
            GOOD + ', resources={"gpu": 1, "accelerator": "b200"}',
            r"unknown accelerator 'b200'.*nvidia.com/gpu.product",
        ),
        ("memory", GOOD + ', resources={"memory": "2 GB"}', r"memory '2 GB' is not a Kubernetes quantity.*'4Gi'"),
        ("cpu", GOOD + ', resources={"cpu": "two"}', r"cpu 'two' is not a Kubernetes quantity"),
        ("deferrable", GOOD + ", deferrable=True", r"deferrable=True is not supported"),
        ("both", GOOD + ', resources={"cpu": "1"}, container_resources=object()', r"not both"),
    ],
)
def test_bad_pod_declarations_are_import_errors_naming_task_and_fix(
    airflow_db: Path, tmp_path: Path, name: str, arguments: str, message: str
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    dag_file = tmp_path / f"bad_{name}.py"
    dag_file.write_text(DAG_TEMPLATE.format(name=name, arguments=arguments))
    bag = DagBag(dag_folder=str(dag_file))
    assert f"bad_{name}" not in bag.dags
    (error,) = bag.import_errors.values()
    assert "task the_task" in error, error
    assert re.search(message, error, re.S), error


def test_the_example_parses_locally_and_for_kubernetes(airflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from airflow_repro.airflow.kubernetes import ReproKubernetesPodOperator
    from airflow_repro.airflow.operators import ReproPythonOperator

    example = str(DAGS_FOLDER / "example_k8s_gpu_pipeline.py")
    local = DagBag(dag_folder=example)
    assert not local.import_errors, local.import_errors
    assert all(isinstance(t, ReproPythonOperator) for t in local.dags["example_k8s_gpu_pipeline"].tasks)

    monkeypatch.setenv("AIRFLOW__REPRO__EXECUTION", "kubernetes")
    on_k8s = DagBag(dag_folder=example)
    assert not on_k8s.import_errors, on_k8s.import_errors
    train = on_k8s.dags["example_k8s_gpu_pipeline"].get_task("train")
    assert isinstance(train, ReproKubernetesPodOperator)
    body = pod_of(train)
    validate(body)
    container = body["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"memory": "16Gi", "nvidia.com/gpu": "1"}
    assert body["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert container["command"][:2] == ["python", "-c"] and "runtime.run_callable(train)" in container["command"][2]
    assert "import torch" in container["command"][2], "torch is imported in the pod only"

    monkeypatch.setenv("AIRFLOW__REPRO__EXECUTION", "cluster")
    wrong = DagBag(dag_folder=example)
    assert "AIRFLOW__REPRO__EXECUTION" in next(iter(wrong.import_errors.values()))


def test_the_decorator_module_stays_cheap_to_import() -> None:
    """Airflow imports the plugin (and with it the decorator) in every task process."""
    code = (
        "import sys, airflow_repro.airflow.operators; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes' "
        "or m.startswith(('airflow.providers.cncf.kubernetes.operators', 'airflow_repro.airflow.kubernetes'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_openlineage_methods_on_the_operator(airflow_db: Path) -> None:
    from airflow_repro.airflow.kubernetes import ReproKubernetesPodOperator
    from airflow_repro.core.spec import Input

    operator = ReproKubernetesPodOperator(
        task_id="train",
        namespace="ml",
        image=IMAGE,
        cmds=["true"],
        inputs={"raw": Input("raw.csv")},
        outputs=["model.pt"],
    )
    lineage = operator.get_openlineage_facets_on_start()
    assert [d.name for d in lineage.inputs] == ["repro/raw.csv"]
    assert [d.name for d in lineage.outputs] == ["repro/model.pt"]
    assert "sourceCodeLocation" in lineage.job_facets or lineage.job_facets == {}
    assert operator.get_openlineage_facets_on_failure(None) is not None


def test_image_and_gpu_rules_and_pod_pieces_import_no_outside_system() -> None:
    code = (
        "import sys, airflow_repro.core.images, airflow_repro.core.gpus, airflow_repro.adapters.k8s_podspec; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'airflow', 'kubernetes', 'httpx', 'mlflow'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
