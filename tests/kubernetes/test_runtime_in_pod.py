"""The task-side runtime in a pod: pins from environment variables, outputs handed over at exit,
the hardware report in the termination message; standard library only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from airflow_repro import runtime
from tests.support.kubernetes import SCRIPT, pod_env


def test_a_pod_task_reads_its_pins_from_the_environment_without_airflow(tmp_path: Path) -> None:
    env = pod_env(tmp_path)
    done = subprocess.run([sys.executable, "-S", "-c", SCRIPT], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", "the runtime needs no Airflow, pydantic or kubernetes"
    assert (tmp_path / "handed over" / "out" / "a.txt").read_text() == "HELLO", "handed over at exit"
    assert not list((tmp_path / "handed over").rglob(".*.partial"))
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"n": 3.0}
    report = json.loads((tmp_path / "termination-log").read_text())
    assert report["kind"] == "airflow-repro/pod-report" and report["outputs"] == 1
    assert report["python"].startswith("CPython") and report["metrics"] == {"n": 3.0}


def test_from_env_reads_every_pin(tmp_path: Path) -> None:
    ctx = runtime.TaskContext.from_env(pod_env(tmp_path))
    assert ctx.task == "d.t" and ctx.seed == 9 and ctx.output_branch == "run_d_x" and ctx.mlflow_run_id == "r1"
    assert ctx.input("raw").commit_id == "c" * 64 and ctx.declared_outputs == ("out/",)


def test_a_pod_without_its_pins_says_how_to_fix_it() -> None:
    import pytest

    with pytest.raises(runtime.RuntimeContextError, match="ReproKubernetesPodOperator"):
        runtime.TaskContext.from_env({"AIRFLOW_REPRO_TASK": "d.t", "AIRFLOW_REPRO_INPUTS": "not json"})


def test_the_report_fits_a_termination_message(tmp_path: Path) -> None:
    gpus = [{"name": "NVIDIA H100 80GB HBM3", "driver": "550", "memory": "81559 MiB", "uuid": "GPU-" + "x" * 400}] * 16
    runtime.write_report(runtime.PodReport(python="CPython 3.11", gpus=tuple(gpus)), tmp_path / "log")
    text = (tmp_path / "log").read_text()
    assert len(text.encode()) <= runtime.TERMINATION_MESSAGE_LIMIT
    report = json.loads(text)
    assert report["gpus_truncated"] is True and report["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"
