"""Review fixes for the presigned transport: cleanup when the tracker is down or the task is killed,
``auto`` and the termination-message limit, and run times the stale-transaction sweep would cut."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from tests.doubles.lakefs_double import LakeFSDouble
from tests.doubles.lakefs_presign import PresignRoutes
from tests.kubernetes.fake_cluster import FakeCoreV1Api
from tests.kubernetes.test_presigned_transport import leftovers
from tests.support.airflow_session import load_dag
from tests.support.kubernetes import IMAGE

MANY = [f"shards/part-{n:05d}.parquet" for n in range(200)]


@pytest.mark.usefixtures("repro_env")
def test_an_abort_that_raises_still_deletes_the_secret_and_the_transaction_branch(
    fake_cluster: FakeCoreV1Api,
    presigned_lakefs: PresignRoutes,
    lakefs_double: LakeFSDouble,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_repro.core.recorder import TaskRecorder

    aborted: list[BaseException | None] = []

    def tracker_down(self: TaskRecorder, prepared: Any, error: BaseException | None = None) -> None:
        aborted.append(error)
        raise ConnectionError("MLflow is down")

    monkeypatch.setattr(TaskRecorder, "abort", tracker_down)
    dag = load_dag("k8s_presigned_missing", "k8s_test_dags.py")  # the pod fails: execute aborts
    assert dag.test().state == "failed"
    assert aborted, "the pod failed and the recorder was asked to abort"
    assert fake_cluster.secret_bodies, "a Secret was made for the attempt"
    assert leftovers(lakefs_double, fake_cluster) == {"branches": [], "secrets": []}


class _Transfers:
    def __init__(self) -> None:
        self.discarded: list[Any] = []

    def discard(self, opened: Any) -> None:
        self.discarded.append(opened)
        raise ConnectionError("lakeFS is down")


class _Client:
    def __init__(self) -> None:
        self.deleted: list[tuple[str, str]] = []

    def delete_namespaced_secret(self, name: str, namespace: str) -> None:
        self.deleted.append((namespace, name))


def test_on_kill_deletes_the_secret_even_if_the_branch_cannot_be_discarded_and_never_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from airflow_repro.airflow.kubernetes import PodAttempt, ReproKubernetesPodOperator

    monkeypatch.setattr(KubernetesPodOperator, "on_kill", lambda self: None)
    task = ReproKubernetesPodOperator(task_id="t", image=IMAGE, outputs=["a.txt"], transport="presigned")
    client = _Client()
    task.__dict__["client"] = client
    transfers = _Transfers()
    attempt = PodAttempt(transport="presigned", transfers=transfers, transfer=object(), transfer_secret=("ml", "s"))  # type: ignore[arg-type]
    task.repro_attempt = attempt
    task.on_kill()  # discard raises: logged, not raised
    assert client.deleted == [("ml", "s")] and len(transfers.discarded) == 1
    task.on_kill()  # idempotent: nothing is deleted twice
    assert client.deleted == [("ml", "s")] and len(transfers.discarded) == 1


def test_auto_falls_back_to_the_volume_when_the_outputs_overflow_the_termination_message() -> None:
    from airflow_repro.airflow.kubernetes import ReproKubernetesPodOperator

    task = ReproKubernetesPodOperator(task_id="t", image=IMAGE, outputs=MANY, transport="auto")
    assert task._choose_transport() == "shared-volume"


def test_a_run_time_the_stale_transaction_sweep_would_cut_is_refused_with_the_fix(
    capfd: pytest.CaptureFixture[str],
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_repro.adapters.lakefs_store import STALE_TRANSACTION_AGE_S
    from airflow_repro.airflow.kubernetes import ReproKubernetesPodOperator

    week = datetime.timedelta(days=7)
    for transport in ("presigned", "lakefs-secret"):
        task = ReproKubernetesPodOperator(
            task_id="t", image=IMAGE, outputs=["a.txt"], transport=transport, execution_timeout=week
        )
        with pytest.raises(AirflowFailException, match="Set execution_timeout shorter than 3.5 days"):
            task._check_outlives_sweep(transport, STALE_TRANSACTION_AGE_S)
    task.execution_timeout = datetime.timedelta(days=3)
    task._check_outlives_sweep("lakefs-secret", STALE_TRANSACTION_AGE_S)
    task.execution_timeout = None
    task._check_outlives_sweep("presigned", STALE_TRANSACTION_AGE_S)  # bounded by its URLs' expiry
    task._check_outlives_sweep("lakefs-secret", STALE_TRANSACTION_AGE_S)
    out, err = capfd.readouterr()
    assert "has no execution_timeout" in out + err
