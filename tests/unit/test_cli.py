"""The CLI: readable tables, JSON for machines, and exit codes scripts can rely on."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.cli import EXIT_USER_ERROR, main
from airflow_repro.core.runs import close_run
from tests.unit.test_recorder import TaskRecorder, TaskSpec, run_task


def record_one_run(home: Path) -> None:
    store = LocalStore(home / "store")
    recorder = TaskRecorder(store, None, default_repository="repro", default_branch="main", work_root=home / "work")
    run_task(recorder, TaskSpec(task_id="a", outputs=("a.txt",)), {"a.txt": b"a"})
    close_run(store, "dag", "manual__1", "success")


def test_show_table_and_json(tmp_path: Path) -> None:
    record_one_run(tmp_path)
    runner = CliRunner()
    table = runner.invoke(main, ["show", "dag", "manual__1", "--home", str(tmp_path)])
    assert table.exit_code == 0, table.output
    assert "a.txt" in table.output and "closed as tag" in table.output
    as_json = runner.invoke(main, ["show", "dag", "manual__1", "--home", str(tmp_path), "--json"])
    data = json.loads(as_json.output)
    assert data["closed"] is True
    assert data["tasks"][0]["manifest"]["identity"]["task_id"] == "a"
    assert data["tasks"][0]["manifest_digest"].startswith("sha256:")


def test_unknown_run_exits_with_the_user_error_code(tmp_path: Path) -> None:
    record_one_run(tmp_path)
    result = CliRunner().invoke(main, ["show", "dag", "nope", "--home", str(tmp_path)])
    assert result.exit_code == EXIT_USER_ERROR
    assert "no recorded run 'nope' of DAG 'dag'" in result.output


def test_schema_command_writes_both_schemas(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["schema", "--out", str(tmp_path)])
    assert result.exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dag-run-manifest.schema.json", "task-manifest.schema.json"]
