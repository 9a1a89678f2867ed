"""The example on a real cluster: runs only where ``KUBECONFIG`` points at one.

Needs, besides the kubeconfig: ``REPRO_EXAMPLE_TRAIN_IMAGE`` (the image built from
images/train-gpu, pushed, pinned by digest), ``REPRO_EXAMPLE_NAMESPACE`` (default ``default``),
and ``AIRFLOW__REPRO__K8S_WORK_VOLUME_CLAIM``: a ReadWriteMany claim mounted at this machine's
``[repro] work_dir`` (AIRFLOW__REPRO__WORK_DIR) as well, through which outputs come back. A GPU
node labelled ``nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3`` is needed for ``train``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.core.runs import load_run

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("repro_env")]

MISSING = [
    name
    for name in ("KUBECONFIG", "REPRO_EXAMPLE_TRAIN_IMAGE", "AIRFLOW__REPRO__K8S_WORK_VOLUME_CLAIM")
    if not os.environ.get(name)
]


@pytest.mark.skipif(bool(MISSING), reason=f"no cluster configured: set {', '.join(MISSING)} (see the module docstring)")
def test_the_example_runs_on_a_real_cluster(repro_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.airflow_session import load_dag

    monkeypatch.setenv("AIRFLOW__REPRO__EXECUTION", "kubernetes")
    dag = load_dag("example_k8s_gpu_pipeline", "example_k8s_gpu_pipeline.py")
    dag_run = dag.test()
    assert dag_run.state == "success"
    run = load_run(LocalStore(Path(repro_env["home"]) / "store"), dag.dag_id, dag_run.run_id)
    train = {t.manifest.identity.task_id: t.manifest for t in run.tasks}["train"]
    image = os.environ["REPRO_EXAMPLE_TRAIN_IMAGE"]
    assert train.kubernetes is not None and train.kubernetes.image_digest == image.rsplit("@", 1)[1]
    assert train.kubernetes.node_name
    assert train.hardware.gpus and train.hardware.gpus[0]["driver"]
