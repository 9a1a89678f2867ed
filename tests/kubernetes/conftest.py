"""Kubernetes tests: the real operator and provider, a fake API at the client boundary.

The Airflow session (metadata DB, DAGs folder, repro home) and the MLflow server are those of
``tests/airflow`` (``tests/support/airflow_session.py``), so both folders can run in one pytest session.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.doubles.lakefs_double import ACCESS_KEY_ID, SECRET_ACCESS_KEY, LakeFSDouble
from tests.doubles.lakefs_presign import PresignRoutes, presign_routes
from tests.kubernetes.fake_cluster import FakeCoreV1Api
from tests.support import airflow_session
from tests.support.kubernetes import TOKEN, install_k8s_dags

airflow_session.start()
install_k8s_dags()


@pytest.fixture
def fake_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCoreV1Api]:
    """Every KubernetesPodOperator in this test talks to a fake API server (and fake kubelet)."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    api = FakeCoreV1Api(workdir=tmp_path / "kubelet")
    api.secrets[("ml", "train-secrets")] = {"token": TOKEN}
    # The fake kubelet shares this machine's [repro] work_dir; a claim must still be named (see
    # test_a_pod_task_without_a_work_volume_claim_fails_before_its_pod).
    monkeypatch.setenv("AIRFLOW__REPRO__K8S_WORK_VOLUME_CLAIM", "repro-work")
    monkeypatch.setattr(KubernetesHook, "core_v1_client", property(lambda self: api))
    monkeypatch.setattr(KubernetesHook, "is_in_cluster", property(lambda self: False))
    yield api


#: What the presigned tests seed on lakeFS's main branch (the DAGs' input ``data/raw.txt``).
RAW_TEXT = "the pod reads this through a presigned url"
STORAGE_NAMESPACE = "s3://double-bucket"


@pytest.fixture
def presigned_lakefs(lakefs_double: LakeFSDouble, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> PresignRoutes:
    """The store is lakeFS (the double, S3-backed: it presigns), reached through an Airflow
    connection as in production; main holds ``data/raw.txt``."""
    from airflow_repro.adapters.lakefs_store import LakeFSConnection, LakeFSStore

    routes = presign_routes(lakefs_double).configure(blockstore_type="s3")
    connection = {
        "conn_type": "lakefs",
        "host": lakefs_double.url,
        "login": ACCESS_KEY_ID,
        "password": SECRET_ACCESS_KEY,
    }
    monkeypatch.setenv("AIRFLOW_CONN_LAKEFS_DEFAULT", json.dumps(connection))
    monkeypatch.setenv("AIRFLOW__REPRO__STORE_URI", "lakefs://lakefs_default")
    monkeypatch.setenv("AIRFLOW__REPRO__LAKEFS_STORAGE_NAMESPACE", STORAGE_NAMESPACE)
    for name in ("LAKEFS_ENDPOINT", "LAKEFS_ACCESS_KEY_ID", "LAKEFS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    store = LakeFSStore.from_connection(
        LakeFSConnection(lakefs_double.url, ACCESS_KEY_ID, SECRET_ACCESS_KEY), storage_namespace=STORAGE_NAMESPACE
    )
    store.create_repository("repro", exist_ok=True)
    raw = tmp_path / "raw.txt"
    raw.write_text(RAW_TEXT)
    store.commit("repro", "main", {"data/raw.txt": store.stage_file("repro", raw)}, message="seed")
    store.close()
    return routes
