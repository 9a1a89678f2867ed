"""Retries, failed handovers, replays and misconfigurations of pod tasks: each fails early and clearly,
and never records another try's or a half-copied result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_repro import runtime
from airflow_repro.airflow.kubernetes import PodAttempt, ReproKubernetesPodOperator
from airflow_repro.core.gpus import ResourceError, task_resources
from airflow_repro.core.manifest import Resources
from airflow_repro.errors import ConfigError, ReproUserError
from tests.kubernetes.fake_cluster import FakeCoreV1Api
from tests.support.airflow_session import load_dag
from tests.support.kubernetes import DEDICATED, IMAGE, SCRIPT, ZONE, pod_env, replay_pod_resources


# -- 1. a retry never attaches to an earlier try's pod --------------------------------------------
def test_a_pod_task_never_reattaches_to_another_tries_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    op = ReproKubernetesPodOperator(task_id="t", image=IMAGE)
    assert op.reattach_on_restart is False and op.durable is False

    def no_search(*_: Any, **__: Any) -> Any:
        raise AssertionError("a recorded pod task must not look for an earlier try's pod")

    created: list[Any] = []
    monkeypatch.setattr(op, "find_pod", no_search)
    monkeypatch.setattr(op, "_get_pod_from_task_state_store", no_search)
    monkeypatch.setattr(type(op), "pod_manager", SimpleNamespace(create_pod=lambda pod: created.append(pod) or pod))
    pod = SimpleNamespace(metadata=SimpleNamespace(namespace="ml"), to_dict=dict)
    assert op.get_or_create_pod(pod, context={}) is pod and created == [pod]


@pytest.mark.parametrize("option", ["reattach_on_restart", "durable"])
def test_asking_a_pod_task_to_reattach_is_refused(option: str) -> None:
    with pytest.raises(ReproUserError, match=f"{option}=True is not supported.*earlier try"):
        ReproKubernetesPodOperator(task_id="t", image=IMAGE, **{option: True})
    assert ReproKubernetesPodOperator(task_id="t", image=IMAGE, **{option: False}).reattach_on_restart is False


# -- 2. a failed handover fails the pod, and the worker commits nothing half-copied ---------------
def test_a_failed_handover_fails_the_pod(tmp_path: Path) -> None:
    env = pod_env(tmp_path)
    (tmp_path / "handed over").write_text("a file where the output folder should be")  # the copy fails
    done = subprocess.run([sys.executable, "-S", "-c", SCRIPT], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 1, done.stderr
    assert "handing the outputs over failed" in done.stderr
    assert not (tmp_path / "termination-log").exists(), "no report: the handover did not happen"


def test_the_handover_never_copies_partial_files(tmp_path: Path) -> None:
    source = tmp_path / "out"
    (source / "models").mkdir(parents=True)
    (source / "models" / "m.pt").write_text("weights")
    (source / "models" / ".m2.pt.partial").write_text("half")
    assert runtime.SharedVolumeTransport(tmp_path / "to").publish(source, ("models/",)) == 1
    assert sorted(p.name for p in (tmp_path / "to").rglob("*") if p.is_file()) == ["m.pt"]


def _finished_pod(message: str | None) -> Any:
    from kubernetes.client import models as k8s

    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="p", namespace="ml"),
        status=k8s.V1PodStatus(
            phase="Succeeded",
            container_statuses=[
                k8s.V1ContainerStatus(
                    name="base",
                    image=IMAGE,
                    image_id=IMAGE,
                    ready=False,
                    restart_count=0,
                    state=k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(exit_code=0, message=message)),
                )
            ],
        ),
    )


def _prepared(tmp_path: Path, outputs: tuple[str, ...]) -> Any:
    out = tmp_path / "outputs"
    out.mkdir()
    return SimpleNamespace(output_dir=out, spec=SimpleNamespace(task_id="t", outputs=outputs))


def test_declared_outputs_without_a_pod_report_fail_the_task(tmp_path: Path) -> None:
    op = ReproKubernetesPodOperator(task_id="t", image=IMAGE, outputs=["out/x.txt"])
    op.remote_pod, op.repro_attempt = _finished_pod(None), PodAttempt(image=op.repro_image)
    with pytest.raises(ReproUserError, match="left no report that it handed them over"):
        op._what_ran(_prepared(tmp_path, ("out/x.txt",)))


def test_a_half_copied_output_fails_the_task(tmp_path: Path) -> None:
    op = ReproKubernetesPodOperator(task_id="t", image=IMAGE, outputs=["out/"])
    report = json.dumps({"kind": runtime.REPORT_KIND, "outputs": 2})
    op.remote_pod, op.repro_attempt = _finished_pod(report), PodAttempt(image=op.repro_image)
    prepared = _prepared(tmp_path, ("out/",))
    (prepared.output_dir / "out").mkdir()
    (prepared.output_dir / "out" / "a.txt").write_text("a")
    (prepared.output_dir / "out" / ".b.txt.partial").write_text("b, half")
    with pytest.raises(ReproUserError, match=r"handover was interrupted \(out/.b.txt.partial"):
        op._what_ran(prepared)


# -- 3. a replay requests the recorded hardware and keeps the DAG's own placement ------------------
def test_a_replay_keeps_the_dags_own_node_selector_and_tolerations(monkeypatch: pytest.MonkeyPatch) -> None:
    op = ReproKubernetesPodOperator(
        task_id="t", image=IMAGE, node_selector=ZONE, tolerations=[DEDICATED], resources={"gpu": 2, "accelerator": "l4"}
    )
    original = task_resources("t", cpu="1", memory="1Gi", gpu=1, accelerator="h100")
    prepared, requested = replay_pod_resources(monkeypatch, op, original)
    assert requested.node_selector == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", **ZONE}
    assert [t.key for t in requested.tolerations] == ["nvidia.com/gpu", "dedicated"]
    assert requested.container_resources.limits["nvidia.com/gpu"] == "1"
    assert prepared.spec.resources == original


def test_a_replay_of_a_task_that_recorded_no_resources_requests_none(monkeypatch: pytest.MonkeyPatch) -> None:
    op = ReproKubernetesPodOperator(
        task_id="t",
        image=IMAGE,
        node_selector=ZONE,
        tolerations=[DEDICATED],
        resources={"gpu": 1, "accelerator": "h100", "memory": "8Gi"},
    )
    _, requested = replay_pod_resources(monkeypatch, op, Resources())
    assert requested.container_resources is None
    assert requested.node_selector == ZONE and [t.key for t in requested.tolerations] == ["dedicated"]


# -- 4. no work volume: fail before the pod --------------------------------------------------------
@pytest.mark.usefixtures("repro_env")
def test_a_pod_task_without_a_work_volume_claim_fails_before_its_pod(
    fake_cluster: FakeCoreV1Api,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AIRFLOW__REPRO__K8S_WORK_VOLUME_CLAIM")
    op = ReproKubernetesPodOperator(task_id="t", image=IMAGE, outputs=["x.txt"])
    with pytest.raises(AirflowFailException, match=r"\[repro\] k8s_work_volume_claim.*work_volume_claim="):
        op._require_work_volume()
    ReproKubernetesPodOperator(
        task_id="t", image=IMAGE, outputs=["x.txt"], work_volume_claim="w"
    )._require_work_volume()
    ReproKubernetesPodOperator(task_id="t", image=IMAGE)._require_work_volume()  # nothing to hand over

    dag = load_dag("k8s_record", "k8s_test_dags.py")
    assert dag.test().state == "failed"
    assert fake_cluster.created == [], "no pod is started (and no GPU hours spent) without the work volume"


# -- 5. local tasks record an accelerator name as free text; pods stay strict --------------------
def test_a_local_task_records_an_unknown_accelerator_as_given() -> None:
    from airflow_repro.airflow.operators import ReproPythonOperator

    op = ReproPythonOperator(task_id="t", python_callable=lambda: None, resources={"gpu": 1, "accelerator": "rtx4090"})
    assert op.repro_spec.resources.accelerator == "rtx4090" and op.repro_spec.resources.gpu == 1
    op = ReproPythonOperator(task_id="t", python_callable=lambda: None, resources={"accelerator": "h100"})
    assert op.repro_spec.resources.accelerator == "nvidia-h100-80gb" and op.repro_spec.resources.gpu == 0
    with pytest.raises(ResourceError, match="not a Kubernetes quantity"):
        ReproPythonOperator(task_id="t", python_callable=lambda: None, resources={"memory": "2 GB"})


def test_a_pod_task_keeps_the_strict_accelerator_check() -> None:
    with pytest.raises(ResourceError, match="unknown accelerator 'rtx4090'"):
        ReproKubernetesPodOperator(task_id="t", image=IMAGE, resources={"gpu": 1, "accelerator": "rtx4090"})
    with pytest.raises(ResourceError, match="without gpu="):
        ReproKubernetesPodOperator(task_id="t", image=IMAGE, resources={"accelerator": "h100"})


# -- 6. clear errors for the remaining misconfigurations ---------------------------------------------
def test_a_kubernetes_task_without_an_image_says_how_to_fix_it() -> None:
    from airflow_repro import repro_task

    with pytest.raises(ReproUserError, match="has no image: give image="):
        repro_task(lambda: None, execution="kubernetes")


def test_a_kubernetes_task_without_an_image_is_named_when_its_dag_is_parsed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``@repro_task(...)`` with arguments learns its name from the function it decorates next."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW__REPRO__EXECUTION", "kubernetes")
    dag_file = tmp_path / "no_image.py"
    dag_file.write_text(
        "from airflow.sdk import dag\n"
        "from airflow_repro import repro_task\n"
        "@dag(dag_id='no_image', schedule=None)\n"
        "def no_image():\n"
        "    @repro_task(outputs=['model.pt'], seed=1)\n"
        "    def train():\n"
        "        pass\n"
        "    train()\n"
        "no_image()\n"
    )
    bag = DagBag(dag_folder=str(dag_file))
    (error,) = bag.import_errors.values()
    assert "task train: runs in a Kubernetes pod" in error and "but has no image: give image=" in error
    assert "task ?" not in error


def test_execution_must_be_a_string() -> None:
    from airflow_repro.airflow.operators import _execution_mode

    with pytest.raises(ConfigError, match="must be 'local' or 'kubernetes'"):
        _execution_mode(True)  # type: ignore[arg-type]


def test_a_pod_template_that_renames_the_base_container_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    renamed = k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="p"), spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="trainer")])
    )
    monkeypatch.setattr(KubernetesPodOperator, "build_pod_request_obj", lambda self, context=None, **_: renamed)
    op = ReproKubernetesPodOperator(task_id="t", image=IMAGE)
    with pytest.raises(AirflowFailException, match="no container named 'base'"):
        op.build_pod_request_obj({})
