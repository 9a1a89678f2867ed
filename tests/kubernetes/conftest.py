"""Kubernetes tests: the real operator and provider, a fake API at the client boundary.

The Airflow session (metadata DB, DAGs folder, repro home) and the MLflow server are those of
``tests/airflow`` (``tests/support/airflow_session.py``), so both folders can run in one pytest session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
