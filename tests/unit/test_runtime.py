"""The task-side runtime: pinned inputs, declared outputs, metrics; no Airflow needed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_repro import runtime
from airflow_repro.runtime import RuntimeContextError, TaskContext


def write_context(tmp_path: Path) -> Path:
    data = tmp_path / "in.csv"
    data.write_text("a,b\n1,2\n")
    context = {
        "task": "dag.task",
        "seed": 7,
        "output_dir": str(tmp_path / "out"),
        "declared_outputs": ["model.json", "plots/"],
        "inputs": {
            "raw": {"path": str(data), "repository": "repro", "commit_id": "c" * 64, "store_path": "raw/in.csv"}
        },
        "params": {"alpha": 1},
        "metrics_file": str(tmp_path / "metrics.json"),
    }
    (tmp_path / "out").mkdir()
    path = tmp_path / "context.json"
    path.write_text(json.dumps(context))
    return path


def test_context_gives_inputs_outputs_and_metrics(tmp_path: Path) -> None:
    ctx = TaskContext.from_file(write_context(tmp_path))
    assert ctx.seed == 7 and ctx.params == {"alpha": 1}
    assert ctx.input_path("raw").read_text().startswith("a,b")
    assert ctx.input("raw").commit_id == "c" * 64
    with ctx.open_output("plots/roc/curve.png", "wb") as handle:
        handle.write(b"png")
    assert (tmp_path / "out" / "plots" / "roc" / "curve.png").read_bytes() == b"png"
    ctx.log_metric("acc", 0.9)
    ctx.log_metrics({"f1": 0.8})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"acc": 0.9, "f1": 0.8}


def test_undeclared_names_are_refused_with_a_fix(tmp_path: Path) -> None:
    ctx = TaskContext.from_file(write_context(tmp_path))
    with pytest.raises(RuntimeContextError, match="no input named 'nope'.*declared: raw"):
        ctx.input_path("nope")
    with pytest.raises(RuntimeContextError, match="did not declare output 'other.csv'"):
        ctx.output_path("other.csv")
    with pytest.raises(RuntimeContextError, match="did not declare"):
        ctx.output_path("../model.json")
    with pytest.raises(RuntimeContextError, match="read-only"):
        ctx.open_input("raw", "w")


def test_current_reads_the_env_file_without_airflow(tmp_path: Path) -> None:
    path = write_context(tmp_path)
    code = (
        "import sys; from airflow_repro import runtime; ctx = runtime.current(); "
        "print(ctx.seed, ctx.input_path('raw').name); "
        "bad = [m for m in ('airflow', 'mlflow', 'lakefs', 'kubernetes', 'pydantic') if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env={runtime.CONTEXT_ENV: str(path)}, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == "7 in.csv"
    assert out[1] == "[]"


def test_current_without_context_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runtime.CONTEXT_ENV, raising=False)
    runtime._activate(None)
    with pytest.raises(RuntimeContextError, match="@repro_task"):
        runtime.current()
