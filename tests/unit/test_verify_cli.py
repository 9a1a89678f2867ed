"""``airflow-repro verify``: the explanation in the table and in --json, exit codes (equivalent 0
unless --strict), and tolerances refused with the fix. The CLI's backends point at a real store
holding a recorded run and its replay (as in test_cli_errors: no Airflow DB here)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from airflow_repro import Output
from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.cli import main, verdict_exit_code
from airflow_repro.core.replay import plan_replay, save_plan
from airflow_repro.core.runs import load_run
from tests.unit.test_verify_explains import REPO, record, table

DAG = "dag"


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from airflow_repro.airflow import replay as service
    from airflow_repro.config import ReproSettings
    from airflow_repro.core.recorder import TaskRecorder

    home = tmp_path / "home"
    store = LocalStore(home / "store")
    recorder = TaskRecorder(store, None, default_repository=REPO, default_branch="main", work_root=home / "work")
    declared = {"metrics.csv": Output(abs_tol=1e-6)}
    record(recorder, "manual__1", {"metrics.csv": table(0.75)}, declared)
    original = load_run(store, DAG, "manual__1")
    save_plan(
        store, plan_replay(original, {}, store, mode="latest-code", replay_run_id="replay__1"), default_branch="main"
    )
    record(recorder, "replay__1", {"metrics.csv": table(0.75 + 1e-9)}, declared)

    backends = service.Backends(settings=ReproSettings.from_env({"AIRFLOW__REPRO__HOME": str(home)}), store=store)
    monkeypatch.setattr("airflow_repro.cli._backends", lambda: backends)
    monkeypatch.setattr(service, "dag_run_state", lambda dag_id, run_id: None)
    monkeypatch.setattr(service, "_tracker_or_none", lambda backends: None)
    monkeypatch.setattr("airflow_repro.airflow.lineage.emit_verdict", lambda *args: 0)

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(main, ["verify", DAG, "replay__1", *args])

    yield invoke


def test_an_equivalent_replay_exits_0_and_1_with_strict(cli: Any) -> None:
    shown = cli()
    assert shown.exit_code == 0, shown.output
    assert "EQUIVALENT" in shown.output and "equivalent (csv): metrics.csv" in shown.output
    assert "tolerance: abs_tol=1e-06, rel_tol=0 (declared)" in shown.output
    assert "likely cause [nondeterministic]" in shown.output
    assert cli("--strict").exit_code == 1


def test_json_carries_the_comparison_and_the_causes(cli: Any) -> None:
    shown = cli("--json")
    report = json.loads(shown.stdout)
    (task,) = report["tasks"]
    comparison = task["objects"][0]["comparison"]
    assert (report["verdict"], task["status"], comparison["verdict"], comparison["format"]) == (
        "equivalent",
        "equivalent",
        "equivalent",
        "csv",
    )
    assert comparison["tolerance"] == {"abs_tol": 1e-6, "rel_tol": 0.0} and comparison["max_abs_deviation"] > 0
    assert task["likely_causes"][0]["kind"] == "nondeterministic"


def test_an_override_below_the_deviation_differs_and_exits_1(cli: Any) -> None:
    shown = cli("--abs-tol", "1e-12")
    assert shown.exit_code == 1 and "DIFFERS" in shown.output and "(override)" in shown.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--abs-tol", "-1"], "--abs-tol: abs_tol must be a finite number >= 0, got -1.0"),
        (["--rel-tol", "nan"], "--rel-tol: rel_tol must be a finite number >= 0, got nan"),
        (["--rel-tol", "inf"], "got inf"),
        (["--abs-tol", "tiny"], "'tiny' is not a valid float"),
        (["--repeat", "0"], "0 is not in the range 1<=x<=20"),
    ],
)
def test_a_bad_tolerance_is_refused_with_the_fix(cli: Any, args: list[str], message: str) -> None:
    shown = cli(*args)
    assert shown.exit_code == 2 and message in shown.output, shown.output
    assert "Traceback" not in shown.output


def test_help_documents_the_exit_codes_and_strict() -> None:
    text = CliRunner().invoke(main, ["verify", "--help"]).output
    assert "--strict" in text and "Exit 0" in text and "equivalent" in text and "--repeat" in text


def test_exit_codes() -> None:
    assert [verdict_exit_code(v) for v in ("identical", "equivalent", "differs")] == [0, 0, 1]
    assert [verdict_exit_code(v, strict=True) for v in ("identical", "equivalent", "differs")] == [0, 1, 1]
