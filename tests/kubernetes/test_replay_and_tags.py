"""A replayed pod asks for the hardware the original recorded; a tag resolved at run time is
recorded with its digest. Through the real operator, the fake Kubernetes API and, for the tag, a
registry double served over HTTP on this machine."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from airflow_repro.core.gpus import task_resources
from airflow_repro.core.replay import plan_replay, replay_run_id
from airflow_repro.core.runs import load_run
from tests.kubernetes.fake_cluster import FakeCoreV1Api
from tests.support.airflow_session import load_dag, run_replay
from tests.support.kubernetes import current_pod_tasks

pytestmark = pytest.mark.usefixtures("repro_env")
RESOLVED = "sha256:" + "9e" * 32


def test_a_replay_requests_the_recorded_hardware(repro_env: dict[str, str], fake_cluster: FakeCoreV1Api) -> None:
    from airflow_repro.adapters import k8s_podspec as podspec
    from airflow_repro.airflow import replay as service

    dag = load_dag("k8s_record", "k8s_test_dags.py")
    original = dag.test()
    assert original.state == "success"
    backends = service.Backends.from_airflow_conf()
    recorded = load_run(backends.store, dag.dag_id, original.run_id)

    # The DAG now asks for two L4s instead of one H100: the replay must still ask for the H100.
    produce = dag.get_task("produce")
    changed = task_resources("produce", cpu="1", memory="1Gi", gpu=2, accelerator="l4")
    produce.container_resources = podspec.to_model(podspec.resource_requirements(changed), "V1ResourceRequirements")
    produce.node_selector = podspec.gpu_node_selector(changed)
    current = current_pod_tasks(dag, scale=3)
    plan = plan_replay(recorded, current, backends.store, mode="pinned", replay_run_id=replay_run_id(original.run_id))
    assert plan.drift == []
    fake_cluster.created.clear()
    assert run_replay(dag, plan, backends).state == "success"

    pod = next(b for b in fake_cluster.created if "produce" in b["metadata"]["name"])
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    replayed = {
        t.manifest.identity.task_id: t.manifest for t in load_run(backends.store, dag.dag_id, plan.replay_run_id).tasks
    }
    before = {t.manifest.identity.task_id: t.manifest for t in recorded.tasks}
    assert replayed["produce"].resources == before["produce"].resources
    assert replayed["produce"].replay is not None and replayed["produce"].inputs == before["produce"].inputs


def test_replay_planning_sees_pod_tasks_and_their_image_digests() -> None:
    from airflow_repro.airflow import dag_parsing

    dag = load_dag("k8s_record", "k8s_test_dags.py")
    current, _code = dag_parsing.current_tasks(dag, {})
    assert set(current) == {t.task_id for t in dag.tasks}  # not reported as "task removed"
    for task in dag.tasks:
        digest = task.repro_environment_pin().digest
        assert digest.startswith("sha256:") and current[task.task_id].environment_digest == digest


class _Registry(BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        if (
            self.path == "/v2/acme/train/manifests/v1"
            and "application/vnd.oci.image.index.v1+json" in self.headers["Accept"]
        ):
            self.send_response(200)
            self.send_header("Docker-Content-Digest", RESOLVED)
        else:
            self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"localhost:{server.server_address[1]}"
    monkeypatch.setenv("REPRO_TEST_TAGGED_IMAGE", f"{host}/acme/train:v1")
    yield host
    server.shutdown()


def test_a_tag_is_resolved_when_the_task_starts_and_both_are_recorded(
    repro_env: dict[str, str], fake_cluster: FakeCoreV1Api, registry: str
) -> None:
    dag = load_dag("k8s_resolve", "k8s_test_dags.py")
    dag_run = dag.test()
    assert dag_run.state == "success", [r["stderr"][-2000:] for r in fake_cluster.ran]
    (pod,) = fake_cluster.created
    assert pod["spec"]["containers"][0]["image"] == f"{registry}/acme/train:v1@{RESOLVED}"
    assert pod["metadata"]["annotations"]["airflow-repro.dev/resolved-from-tag"] == f"{registry}/acme/train:v1"
    (task,) = load_run(_store(repro_env), dag.dag_id, dag_run.run_id).tasks
    m = task.manifest
    assert m.environment.digest == RESOLVED and m.kubernetes.image_digest == RESOLVED
    assert m.kubernetes.resolved_from_tag == f"{registry}/acme/train:v1"
    assert json.loads(m.canonical_json())["kubernetes"]["image"] == f"{registry}/acme/train:v1@{RESOLVED}"


def _store(repro_env: dict[str, str]):
    from airflow_repro.adapters.local_store import LocalStore

    return LocalStore(Path(repro_env["home"]) / "store")


def test_a_pinned_replay_sends_the_archived_script_when_the_function_changed(
    repro_env: dict[str, str], fake_cluster: FakeCoreV1Api
) -> None:
    """The pod runs the script recorded for the original, not one built from today's function."""
    from airflow_repro.airflow import replay as service
    from airflow_repro.airflow.restore import ArchiveChecks
    from airflow_repro.core.archive import load_archived

    dag = load_dag("k8s_record", "k8s_test_dags.py")
    original = dag.test()
    assert original.state == "success"
    backends = service.Backends.from_airflow_conf()
    recorded = load_run(backends.store, dag.dag_id, original.run_id)
    total = next(t.manifest for t in recorded.tasks if t.manifest.identity.task_id == "total")
    assert total.code.script is not None
    archived_script = load_archived(backends.store, recorded.repository, "script", total.code.script).decode()

    def edited_total() -> None:  # what the DAG file's function became since
        from airflow_repro import runtime

        runtime.current().output_path("data/total.txt").write_text("edited")

    task = dag.get_task("total")
    task.python_callable = edited_total
    current = current_pod_tasks(dag, scale=3)
    plan = plan_replay(
        recorded,
        current,
        backends.store,
        mode="pinned",
        replay_run_id=replay_run_id(original.run_id),
        restore=ArchiveChecks(backends.store, None),
    )
    (drift,) = plan.drift
    assert (drift.kind, drift.task_id, drift.restorable) == ("code_changed", "total", True)
    assert "archived script" in (drift.restore_note or "")
    fake_cluster.created.clear()
    assert run_replay(dag, plan, backends).state == "success"
    pod = next(b for b in fake_cluster.created if "total" in b["metadata"]["name"])
    assert pod["spec"]["containers"][0]["command"] == ["python", "-c", archived_script]
    assert service.verify(backends, dag.dag_id, plan.replay_run_id).verdict == "identical"
    replayed = next(
        t.manifest
        for t in load_run(backends.store, dag.dag_id, plan.replay_run_id).tasks
        if t.manifest.identity.task_id == "total"
    )
    assert replayed.replay is not None and replayed.replay.code == "restored"
    assert replayed.code.script == total.code.script
