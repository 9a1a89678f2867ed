"""Kubernetes tests' constants and helpers: the image, the pod's environment and script, a replay's
pod resources, the variables docs/kubernetes.md documents.

Nothing here imports Airflow or the Kubernetes client when imported; :func:`install_k8s_dags` is
what tests/kubernetes/conftest.py calls to add the Kubernetes DAGs to the session's DAGs folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from airflow_repro import runtime
from tests.support import airflow_session

if TYPE_CHECKING:
    from airflow_repro.airflow.kubernetes import ReproKubernetesPodOperator
    from airflow_repro.core.manifest import Resources
    from airflow_repro.core.replay import CurrentTask

REPO_ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "4f" * 32
IMAGE = f"registry.test/acme/train:1.0@{DIGEST}"
TOKEN = "s3cr3t-token-value-never-recorded"
ZONE = {"topology.kubernetes.io/zone": "eu-west-1a"}
DEDICATED = {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}


def install_k8s_dags() -> None:
    """Copy the Kubernetes test DAGs and the GPU example into the session's DAGs folder."""
    airflow_session.install_dag(REPO_ROOT / "tests" / "kubernetes" / "dags" / "k8s_test_dags.py")
    airflow_session.install_dag(REPO_ROOT / "dags" / "example_k8s_gpu_pipeline.py")


SCRIPT = """
from airflow_repro import runtime
ctx = runtime.current()
with ctx.open_output("out/a.txt", "w") as handle:
    handle.write(ctx.input_path("raw").read_text().upper())
ctx.log_metric("n", 3)
import sys
print(sorted(m for m in sys.modules if m.split(".")[0] in ("airflow", "pydantic", "kubernetes")))
"""


def pod_env(tmp_path: Path) -> dict[str, str]:
    raw = tmp_path / "inputs" / "raw.txt"
    raw.parent.mkdir(parents=True)
    raw.write_text("hello")
    site = runtime.install_runtime(tmp_path / "site")  # what an image installs: the runtime's files only
    return {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(site),
        "AIRFLOW_REPRO_TASK": "d.t",
        "AIRFLOW_REPRO_SEED": "9",
        "AIRFLOW_REPRO_INPUTS": json.dumps(
            {"raw": {"path": str(raw), "repository": "repro", "commit_id": "c" * 64, "store_path": "raw.txt"}}
        ),
        "AIRFLOW_REPRO_OUTPUTS": json.dumps(["out/"]),
        "AIRFLOW_REPRO_OUTPUT_URI": (tmp_path / "handed over").as_uri(),
        "AIRFLOW_REPRO_METRICS_FILE": str(tmp_path / "metrics.json"),
        "AIRFLOW_REPRO_REPORT_FILE": str(tmp_path / "termination-log"),
        "AIRFLOW_REPRO_OUTPUT_BRANCH": "run_d_x",
        "AIRFLOW_REPRO_MLFLOW_RUN_ID": "r1",
    }


def documented_pod_variables() -> set[str]:
    """The variables docs/kubernetes.md lists under "What the pod gets" (``_X`` stands for ``AIRFLOW_REPRO_X``)."""
    text = (REPO_ROOT / "docs" / "kubernetes.md").read_text()
    paragraph = text.split("## What the pod gets", 1)[1].split("\n\n", 2)[1]
    names = set()
    for name in re.findall(r"`([A-Z_]+)`", paragraph):
        names.add(f"AIRFLOW_REPRO{name}" if name.startswith("_") else name)
    return names


def replay_pod_resources(monkeypatch: pytest.MonkeyPatch, op: ReproKubernetesPodOperator, original: Resources) -> Any:
    """The attempt's pod resources after a replay asked for the ``original`` ones."""
    from airflow_repro.airflow import kubernetes as k8s_mod
    from airflow_repro.airflow.kubernetes import PodAttempt

    def no_second_load(*_: Any, **__: Any) -> Any:
        raise AssertionError("the plan _apply_replay_pins loaded is reused, not loaded again")

    monkeypatch.setattr(k8s_mod, "load_plan", no_second_load)
    monkeypatch.setattr(k8s_mod, "load_task_manifest", lambda *_a, **_k: SimpleNamespace(resources=original))
    opened: list[tuple[str, str]] = []

    @contextlib.contextmanager
    def open_object(repository: str, ref: str, path: str) -> Any:
        opened.append((repository, ref))
        yield io.BytesIO(b"{}")

    op.repro_attempt = PodAttempt(replay_plan=SimpleNamespace(original_repository="from-marker", original_ref="c1"))
    recorder = SimpleNamespace(store=SimpleNamespace(open_object=open_object))
    prepared = SimpleNamespace(
        env=SimpleNamespace(
            replay=SimpleNamespace(original_manifest_digest="sha256:m"),
            identity=SimpleNamespace(task_id="t", map_index=-1, dag_id="d", run_id="r"),
        ),
        spec=op.repro_spec,
        repository="another-repository",
    )
    op._request_recorded_hardware(recorder, prepared)
    assert opened == [("from-marker", "c1")]
    return prepared, op.repro_attempt.pod_resources


def current_pod_tasks(dag: Any, **task_params: Any) -> dict[str, CurrentTask]:
    """What a replay planner sees of ``dag``'s pod tasks now (their code, pin and params)."""
    from airflow_repro.core.replay import CurrentTask

    return {
        t.task_id: CurrentTask(
            task_id=t.task_id,
            source_hash=t.repro_source_hash(),
            environment_digest=t.repro_environment_pin().digest,
            task_params=dict(task_params),
        )
        for t in dag.tasks
    }
