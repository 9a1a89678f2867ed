"""Kubernetes tests: the real operator and provider, a fake API at the client boundary.

The Airflow session (metadata DB, DAGs folder, repro home) and the MLflow server are those of
``tests/airflow``, so both folders can run in one pytest session.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.airflow.conftest import DAGS_FOLDER, REPO_ROOT, airflow_db, load_dag, repro_env  # noqa: F401
from tests.kubernetes.fake_cluster import FakeCoreV1Api

shutil.copy(Path(__file__).parent / "dags" / "k8s_test_dags.py", DAGS_FOLDER)
shutil.copy(REPO_ROOT / "dags" / "example_k8s_gpu_pipeline.py", DAGS_FOLDER)

DIGEST = "sha256:" + "4f" * 32
IMAGE = f"registry.test/acme/train:1.0@{DIGEST}"
TOKEN = "s3cr3t-token-value-never-recorded"


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
