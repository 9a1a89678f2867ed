"""Pods without a shared volume: inputs and outputs travel through presigned URLs.

Through Airflow's task runner, the real KubernetesPodOperator and PodManager against the fake
Kubernetes API (whose kubelet runs the container as a process with only the standard library and
the runtime), and lakeFS as the store: the double, with its presign routes and an object store that
honours only signed, unexpired URLs and refuses requests carrying credentials
(tests/doubles/lakefs_presign.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from airflow_repro.adapters.lakefs_store import LakeFSConnection, LakeFSStore
from airflow_repro.core import metadata_keys as keys
from airflow_repro.core.hashing import hash_bytes
from airflow_repro.core.naming import run_branch_name
from airflow_repro.core.runs import load_run
from tests.doubles.lakefs_double import ACCESS_KEY_ID, SECRET_ACCESS_KEY, LakeFSDouble
from tests.doubles.lakefs_presign import PresignRoutes
from tests.kubernetes.conftest import RAW_TEXT, STORAGE_NAMESPACE
from tests.kubernetes.fake_cluster import FakeCoreV1Api
from tests.support.airflow_session import load_dag, run_replay

pytestmark = pytest.mark.usefixtures("repro_env")
CREDENTIAL_ENV = ("LAKEFS_", "LAKECTL_", "AWS_")
SIGNATURE_MARKS = ("X-Signature", "X-Expires", "/_store/")


def lakefs(double: LakeFSDouble) -> LakeFSStore:
    connection = LakeFSConnection(double.url, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    return LakeFSStore.from_connection(connection, storage_namespace=STORAGE_NAMESPACE)


def task_commits(store: LakeFSStore, dag_id: str, run_id: str) -> list[Any]:
    return [
        c
        for c in store.log("repro", run_branch_name(dag_id, run_id))
        if c.metadata.get(keys.TASK_KEY, "").startswith(f"{dag_id}/")
    ]


def leftovers(double: LakeFSDouble, cluster: FakeCoreV1Api) -> dict[str, list[str]]:
    """Transaction branches and transfer Secrets still there."""
    return {
        "branches": sorted(b for b in double.repos["repro"].branches if b.startswith("repro_tx_")),
        "secrets": sorted(name for (_ns, name) in cluster.secrets if name.startswith("airflow-repro-")),
    }


def pod_failures(cluster: FakeCoreV1Api) -> list[str]:
    return [r["stderr"][-2000:] for r in cluster.ran if r["returncode"]]


@pytest.fixture
def task_errors(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[BaseException]]:
    """What each pod task's execute() raised (the task fails with it)."""
    from airflow_repro.airflow.kubernetes import ReproKubernetesPodOperator

    raised: list[BaseException] = []
    original = ReproKubernetesPodOperator.execute

    def keep(self: ReproKubernetesPodOperator, context: Any) -> Any:
        try:
            return original(self, context)
        except BaseException as exc:
            raised.append(exc)
            raise

    monkeypatch.setattr(ReproKubernetesPodOperator, "execute", keep)
    yield raised


# -- the round trip ----------------------------------------------------------------------------------
def test_pods_move_data_through_presigned_urls_and_the_worker_commits_once(
    repro_env: dict[str, str],
    fake_cluster: FakeCoreV1Api,
    presigned_lakefs: PresignRoutes,
    lakefs_double: LakeFSDouble,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    dag = load_dag("k8s_presigned", "k8s_test_dags.py")
    dag_run = dag.test()
    assert dag_run.state == "success", pod_failures(fake_cluster)
    store = lakefs(lakefs_double)
    run = {t.manifest.identity.task_id: t for t in load_run(store, dag.dag_id, dag_run.run_id).tasks}
    assert list(run) == ["lengths", "total"]

    # one commit per task on the run branch, holding its outputs and its manifest together
    commits = task_commits(store, dag.dag_id, dag_run.run_id)
    assert sorted(c.metadata[keys.TASK_KEY].split("/")[2] for c in commits) == ["lengths", "total"]
    lengths = run["lengths"]
    committed = {o.path for o in store.list_objects("repro", lengths.commit_id)}
    assert {"data/lengths.txt", "data/count.txt", "_repro/manifests/lengths.json"} <= committed
    # the manifest's hashes are the BLAKE3 of the bytes the pod wrote
    for output in lengths.manifest.outputs:
        data = store.open_object("repro", lengths.commit_id, output.path).read()
        assert output.content_hash == hash_bytes(data) and output.size == len(data)
    words = RAW_TEXT.split()
    written = store.open_object("repro", lengths.commit_id, "data/lengths.txt").read().decode()
    assert written == " ".join(str(len(w) * 2) for w in words), "the pod read the pinned input and its params"
    total = store.open_object("repro", run["total"].commit_id, "data/total.txt").read().decode()
    assert int(total) == sum(len(w) * 2 for w in words), "the downstream pod read the upstream commit"
    assert run["total"].manifest.inputs[0].commit_id == lengths.commit_id

    # the bytes went from the pod to the object store, without credentials; nothing is left behind
    puts = [r for r in presigned_lakefs.requests if r.method == "PUT"]
    assert sorted(len(r.address) > 0 and r.status for r in puts) == [200, 200, 200]
    assert presigned_lakefs.uploaded_bytes() == sum(o.size for t in run.values() for o in t.manifest.outputs)
    assert not any(r.authorization for r in presigned_lakefs.requests)
    transactions = [
        s["metadata"]["name"].removeprefix("airflow-repro-").replace("-", "_") for s in fake_cluster.secret_bodies
    ]
    for tx in transactions:  # through lakeFS itself, the worker uploaded the manifest only
        assert [m for m, p in lakefs_double.requests if p.endswith(f"/branches/{tx}/objects")] == ["POST"]
    assert leftovers(lakefs_double, fake_cluster) == {"branches": [], "secrets": []}
    assert [e[0] for e in fake_cluster.secret_events] == ["create", "delete", "create", "delete"]

    # the pods: no shared volume, no credential, the URLs only in the Secret they mount
    for body in fake_cluster.created:
        for version in ("1.31", "1.34"):
            kubernetes_validate.validate(body, version, strict=True)
        text = json.dumps(body)
        assert not any(mark in text for mark in SIGNATURE_MARKS) and SECRET_ACCESS_KEY not in text
        volumes = body["spec"]["volumes"]
        assert not any("persistentVolumeClaim" in v for v in volumes)
        assert any(v.get("secret", {}).get("secretName", "").startswith("airflow-repro-repro-tx-") for v in volumes)
        env = {e["name"] for e in body["spec"]["containers"][0]["env"]}
        assert not any(name.startswith(CREDENTIAL_ENV) for name in env)
        assert "AIRFLOW_REPRO_OUTPUT_URI" not in env and "AIRFLOW_REPRO_TRANSFER_FILE" in env
    for secret in fake_cluster.secret_bodies:
        assert secret["metadata"]["labels"]["airflow-repro.dev/transfer"] == "presigned"
    # no URL in the worker's log (the task logs go to stdout/stderr here) or the pods' output
    out, err = capfd.readouterr()
    assert "travel through presigned URLs (Secret ml/airflow-repro-" in out + err, "the task log was captured"
    logged = out + err + caplog.text + "".join(r["stdout"] + r["stderr"] for r in fake_cluster.ran)
    assert not any(mark in logged for mark in SIGNATURE_MARKS)

    # MLflow got the metric the pod reported (no shared metrics file)
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=repro_env["mlflow"])
    assert client.get_run(lengths.manifest.tracking.mlflow_run_id).data.metrics["words"] == len(words)


# -- a pinned replay reads the recorded commits through presigned GETs, and verifies identical --------
def test_a_pinned_replay_through_presigned_urls_verifies_identical(
    fake_cluster: FakeCoreV1Api,
    presigned_lakefs: PresignRoutes,
    lakefs_double: LakeFSDouble,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from airflow_repro.airflow import replay as service

    monkeypatch.setenv("AIRFLOW__REPRO__K8S_TRANSPORT", "presigned")  # the setting, not the task argument
    dag = load_dag("k8s_auto", "k8s_test_dags.py")
    original = dag.test()
    assert original.state == "success", pod_failures(fake_cluster)
    store = lakefs(lakefs_double)
    (recorded,) = load_run(store, dag.dag_id, original.run_id).tasks

    # main moves on; the pinned replay still reads the commit the original read
    changed = tmp_path / "raw.txt"
    changed.write_text("something else entirely")
    store.commit("repro", "main", {"data/raw.txt": store.stage_file("repro", changed)}, message="moved on")
    backends = service.Backends.from_airflow_conf()
    plan = service.plan(backends, dag.dag_id, original.run_id, "pinned")
    assert plan.drift == []
    gets_before = len([r for r in presigned_lakefs.requests if r.method == "GET"])
    replayed = run_replay(dag, plan, backends)
    assert replayed.state == "success", pod_failures(fake_cluster)
    assert len([r for r in presigned_lakefs.requests if r.method == "GET"]) == gets_before + 1
    assert service.verify(backends, dag.dag_id, plan.replay_run_id).verdict == "identical"
    (replay,) = load_run(store, dag.dag_id, plan.replay_run_id).tasks
    assert replay.manifest.inputs == recorded.manifest.inputs
    assert leftovers(lakefs_double, fake_cluster) == {"branches": [], "secrets": []}


# -- limits, each with its error, before the pod where it can be -------------------------------------
def test_urls_that_expire_before_the_pod_could_run_are_refused_before_it(
    fake_cluster: FakeCoreV1Api,
    presigned_lakefs: PresignRoutes,
    lakefs_double: LakeFSDouble,
    task_errors: list[BaseException],
) -> None:
    presigned_lakefs.configure(expiry_s=60)  # lakeFS's pre_signed_expiry; [repro] k8s_presign_min_expiry is 600
    dag = load_dag("k8s_presigned", "k8s_test_dags.py")
    dag_run = dag.test()
    assert dag_run.state == "failed"
    assert fake_cluster.created == [], "no pod (and no GPU hour) for URLs that would expire first"
    message = str(task_errors[0])
    assert "expire in" in message and "k8s_presign_min_expiry" in message and "pre_signed_expiry" in message
    assert dag_run.get_task_instance("lengths").try_number == 1, "a setting to change: not retried"
    assert leftovers(lakefs_double, fake_cluster) == {"branches": [], "secrets": []}
    assert task_commits(lakefs(lakefs_double), dag.dag_id, dag_run.run_id) == []


def test_urls_that_expire_while_the_pod_starts_fail_it_and_leave_nothing(
    fake_cluster: FakeCoreV1Api,
    presigned_lakefs: PresignRoutes,
    lakefs_double: LakeFSDouble,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    presigned_lakefs.configure(expiry_s=1)
    monkeypatch.setenv("AIRFLOW__REPRO__K8S_PRESIGN_MIN_EXPIRY", "0")
    fake_cluster.start_delay_s = 2.5  # a GPU node scaling up
    dag = load_dag("k8s_presigned", "k8s_test_dags.py")
    dag_run = dag.test()
    assert dag_run.state == "failed"
    (pod,) = fake_cluster.ran
    assert pod["returncode"] != 0
    assert (
        "HTTP 403: AccessDenied: Request has expired" in pod["stderr"] and "presigned URL expired at" in pod["stderr"]
    )
    assert not any(mark in pod["stderr"] + pod["stdout"] for mark in SIGNATURE_MARKS), "the URL is never printed"
    assert leftovers(lakefs_double, fake_cluster) == {"branches": [], "secrets": []}
    assert task_commits(lakefs(lakefs_double), dag.dag_id, dag_run.run_id) == []


def test_a_declared_output_the_pod_did_not_write_fails_the_task(
    fake_cluster: FakeCoreV1Api,
    presigned_lakefs: PresignRoutes,
    lakefs_double: LakeFSDouble,
    task_errors: list[BaseException],
) -> None:
    dag = load_dag("k8s_presigned_missing", "k8s_test_dags.py")
    dag_run = dag.test()
    assert dag_run.state == "failed"
    assert "declared outputs it did not write: ['b.txt']" in str(task_errors[0])
    assert leftovers(lakefs_double, fake_cluster) == {"branches": [], "secrets": []}
    assert task_commits(lakefs(lakefs_double), dag.dag_id, dag_run.run_id) == []


def test_lakefs_local_blockstore_is_explained_or_falls_back_to_the_volume(
    fake_cluster: FakeCoreV1Api,
    presigned_lakefs: PresignRoutes,
    lakefs_double: LakeFSDouble,
    monkeypatch: pytest.MonkeyPatch,
    task_errors: list[BaseException],
) -> None:
    presigned_lakefs.configure(blockstore_type="local")  # the compose stack: GET /config pre_sign_support false
    monkeypatch.setenv("AIRFLOW__REPRO__K8S_TRANSPORT", "presigned")
    dag = load_dag("k8s_auto", "k8s_test_dags.py")
    assert dag.test().state == "failed"
    assert fake_cluster.created == []
    message = str(task_errors[0])
    assert "blockstore is 'local'" in message and "k8s_transport = shared-volume" in message and "'auto'" in message

    monkeypatch.setenv("AIRFLOW__REPRO__K8S_TRANSPORT", "auto")
    dag = load_dag("k8s_auto", "k8s_test_dags.py")
    dag_run = dag.test()
    assert dag_run.state == "success", pod_failures(fake_cluster)
    (pod,) = fake_cluster.created
    assert any("persistentVolumeClaim" in v for v in pod["spec"]["volumes"]), "the shared volume, as configured"
    assert presigned_lakefs.requests == [], "nothing went through presigned URLs"
    (task,) = load_run(lakefs(lakefs_double), dag.dag_id, dag_run.run_id).tasks
    assert lakefs(lakefs_double).open_object("repro", task.commit_id, "up.txt").read() == RAW_TEXT.upper().encode()


def test_folder_outputs_and_too_many_outputs_are_refused_when_the_dag_is_parsed() -> None:
    from airflow_repro.airflow.kubernetes import ReproKubernetesPodOperator
    from airflow_repro.errors import ReproUserError
    from tests.support.kubernetes import IMAGE

    with pytest.raises(
        ReproUserError, match=r"task t: output folder\(s\) \['reports/'\] cannot travel by the presigned"
    ):
        ReproKubernetesPodOperator(task_id="t", image=IMAGE, outputs=["reports/", "a.txt"], transport="presigned")
    many = [f"shards/part-{n:05d}.parquet" for n in range(200)]
    with pytest.raises(ReproUserError, match="task t: its 200 outputs are too many for the presigned transport"):
        ReproKubernetesPodOperator(task_id="t", image=IMAGE, outputs=many, transport="presigned")
    with pytest.raises(ReproUserError, match="k8s_transport 'nfs' is not one of"):
        ReproKubernetesPodOperator(task_id="t", image=IMAGE, outputs=["a.txt"], transport="nfs")
    # the other transports take both
    ReproKubernetesPodOperator(task_id="t", image=IMAGE, outputs=["reports/", *many], transport="auto")
    ReproKubernetesPodOperator(task_id="t", image=IMAGE, outputs=["reports/"], transport="shared-volume")


# -- the adapter on the double: what the worker checks before it commits -------------------------------
@pytest.fixture
def transfer(presigned_lakefs: PresignRoutes, lakefs_double: LakeFSDouble) -> Any:
    from airflow_repro.adapters.lakefs_presign import PresignedTransfers

    store = lakefs(lakefs_double)
    store.create_branch("repro", "run_x", "main", exist_ok=True)
    transfers = PresignedTransfers(store)
    return transfers, transfers.open("repro", "run_x", [], ["out/a.txt"])


def upload(opened: Any, tmp_path: Path, data: bytes) -> dict[str, tuple[int, str]]:
    from airflow_repro.runtime import PresignedTransport

    outputs = tmp_path / "pod-outputs"
    (outputs / "out").mkdir(parents=True, exist_ok=True)
    (outputs / "out" / "a.txt").write_bytes(data)
    transport = PresignedTransport(opened.pod)
    transport.publish(outputs, ("out/a.txt",))
    return transport.uploads


def test_a_size_the_pod_misreports_is_refused_and_nothing_lands(
    transfer: Any, lakefs_double: LakeFSDouble, tmp_path: Path
) -> None:
    from airflow_repro.errors import TransferError

    transfers, opened = transfer
    uploads = upload(opened, tmp_path, b"twelve bytes")
    assert uploads["out/a.txt"][0] == 12
    with pytest.raises(TransferError, match="holds 12 bytes, but the pod reported 11"):
        transfers.link(opened, {"out/a.txt": (11, uploads["out/a.txt"][1])}, task_id="t")
    transfers.discard(opened)
    assert opened.tx not in lakefs_double.repos["repro"].branches
    assert "out/a.txt" not in {o.path for o in lakefs(lakefs_double).list_objects("repro", "run_x")}


def test_an_upload_address_binds_its_branch_and_path(
    transfer: Any, lakefs_double: LakeFSDouble, tmp_path: Path
) -> None:
    import dataclasses

    from airflow_repro.errors import ReproUserError

    transfers, opened = transfer
    uploads = upload(opened, tmp_path, b"data")
    elsewhere = dataclasses.replace(opened, staging={"out/b.txt": opened.staging["out/a.txt"]})
    with pytest.raises(ReproUserError, match="link address invalid signature"):
        transfers.link(elsewhere, {"out/b.txt": uploads["out/a.txt"]}, task_id="t")
    transfers.discard(opened)


def test_an_output_over_the_single_upload_limit_is_refused_with_the_fix(transfer: Any, tmp_path: Path) -> None:
    import dataclasses

    from airflow_repro.errors import OutputError

    _transfers, opened = transfer
    small_limit = dataclasses.replace(opened, pod=dataclasses.replace(opened.pod, max_upload_bytes=3))
    with pytest.raises(OutputError, match="over the object store's single-upload limit of 3 bytes.*shared-volume"):
        upload(small_limit, tmp_path, b"four")
    assert opened.pod.max_upload_bytes == 5 * 1024**3, "S3's single PUT limit"


def test_the_transport_settings_are_checked_with_the_fix() -> None:
    from airflow_repro.config import ReproSettings
    from airflow_repro.errors import ConfigError

    chosen = ReproSettings.from_env(
        {"AIRFLOW__REPRO__K8S_TRANSPORT": "Presigned", "AIRFLOW__REPRO__K8S_PRESIGN_MIN_EXPIRY": "900"}
    )
    assert (chosen.k8s_transport, chosen.k8s_presign_min_expiry) == ("presigned", 900)
    defaults = ReproSettings.from_env({})
    assert (defaults.k8s_transport, defaults.k8s_presign_min_expiry) == ("shared-volume", 600)
    with pytest.raises(ConfigError, match=r"k8s_transport 'nfs' is not one of .*AIRFLOW__REPRO__K8S_TRANSPORT"):
        ReproSettings.from_env({"AIRFLOW__REPRO__K8S_TRANSPORT": "nfs"})
    with pytest.raises(ConfigError, match=r"k8s_presign_min_expiry '10m' must be a whole number of seconds"):
        ReproSettings.from_env({"AIRFLOW__REPRO__K8S_PRESIGN_MIN_EXPIRY": "10m"})


def test_presign_support_is_read_from_lakefs_config(
    presigned_lakefs: PresignRoutes, lakefs_double: LakeFSDouble
) -> None:
    from airflow_repro.adapters.lakefs_presign import PresignedTransfers

    transfers = PresignedTransfers(lakefs(lakefs_double))
    assert transfers.support("not-created-yet").pre_sign_support, "a repository the first task will create"
    presigned_lakefs.configure(blockstore_type="local")
    support = transfers.support("repro")
    assert (support.blockstore_type, support.pre_sign_support) == ("local", False)


# -- the third transport: lakeFS credentials in the pod, from a Secret the cluster's admin made ---------
def test_a_pod_with_lakefs_credentials_from_a_secret_writes_through_lakefs_and_the_worker_commits_once(
    fake_cluster: FakeCoreV1Api,
    presigned_lakefs: PresignRoutes,
    lakefs_double: LakeFSDouble,
    monkeypatch: pytest.MonkeyPatch,
    task_errors: list[BaseException],
) -> None:
    presigned_lakefs.configure(blockstore_type="local")  # works where lakeFS cannot presign (the compose stack)
    credentials = {"LAKEFS_ENDPOINT": lakefs_double.url, "LAKEFS_ACCESS_KEY_ID": ACCESS_KEY_ID}
    fake_cluster.secrets[("ml", "lakefs-creds")] = {**credentials, "LAKEFS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY}
    monkeypatch.setenv("AIRFLOW__REPRO__K8S_TRANSPORT", "lakefs-secret")
    monkeypatch.setenv("AIRFLOW__REPRO__K8S_LAKEFS_SECRET", "lakefs-creds")
    dag = load_dag("k8s_auto", "k8s_test_dags.py")
    dag_run = dag.test()
    assert dag_run.state == "success", pod_failures(fake_cluster)
    store = lakefs(lakefs_double)
    (task,) = load_run(store, dag.dag_id, dag_run.run_id).tasks
    assert len(task_commits(store, dag.dag_id, dag_run.run_id)) == 1
    assert store.open_object("repro", task.commit_id, "up.txt").read() == RAW_TEXT.upper().encode()
    assert task.manifest.outputs[0].content_hash == hash_bytes(RAW_TEXT.upper().encode())
    (pod,) = fake_cluster.created
    container = pod["spec"]["containers"][0]
    assert {"secretRef": {"name": "lakefs-creds"}} in container["envFrom"], "a reference to the admin's Secret"
    assert SECRET_ACCESS_KEY not in json.dumps(pod) and not any(
        "persistentVolumeClaim" in v for v in pod["spec"]["volumes"]
    )
    tx = fake_cluster.secret_bodies[0]["metadata"]["name"].removeprefix("airflow-repro-").replace("-", "_")
    assert ("POST", f"/api/v1/repositories/repro/branches/{tx}/objects") in lakefs_double.requests, "the pod uploaded"
    assert presigned_lakefs.requests == [], "no presigned URL was used"
    assert leftovers(lakefs_double, fake_cluster) == {"branches": [], "secrets": []}

    monkeypatch.delenv("AIRFLOW__REPRO__K8S_LAKEFS_SECRET")
    fake_cluster.created.clear()
    assert load_dag("k8s_auto", "k8s_test_dags.py").test().state == "failed"
    assert fake_cluster.created == [], "without the Secret's name, no pod"
    assert "needs [repro] k8s_lakefs_secret (AIRFLOW__REPRO__K8S_LAKEFS_SECRET)" in str(task_errors[-1])
