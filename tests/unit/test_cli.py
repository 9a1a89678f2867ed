"""The CLI: readable tables, JSON for machines, and exit codes scripts can rely on."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.cli import EXIT_USER_ERROR, main
from airflow_repro.core.recorder import TaskRecorder
from airflow_repro.core.runs import close_run
from airflow_repro.core.spec import TaskSpec
from tests.support.recording import run_task


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


def test_every_command_reads_airflows_config_with_home_over_it(tmp_path: Path) -> None:
    """``show``/``diff``/``fsck``/``gc`` and ``replay``/``verify`` look at the store ``airflow.cfg``
    names (as the workers do); ``--home`` overrides ``[repro] home``. In a fresh process: Airflow
    reads its config file once, when first imported."""
    import os
    import subprocess
    import sys
    import textwrap

    home = tmp_path / "home"
    record_one_run(home)
    (tmp_path / "airflow").mkdir()
    (tmp_path / "airflow" / "airflow.cfg").write_text(f"[repro]\nhome = {home}\nrepository = from-cfg\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow")
    code = textwrap.dedent(f"""
        import json
        from click.testing import CliRunner
        from airflow_repro import cli
        runner = CliRunner()
        codes = {{" ".join(args): runner.invoke(cli.main, args).exit_code for args in (
            ["show", "dag", "manual__1"], ["diff", "dag", "manual__1", "manual__1"], ["fsck"], ["gc"],
            ["show", "dag", "manual__1", "--home", {str(tmp_path / "elsewhere")!r}])}}
        backends = cli._backends()
        print(json.dumps({{"codes": codes, "store": str(backends.settings.store_root),
                          "repository": backends.settings.repository}}))
    """)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["store"] == str(home / "store") and seen["repository"] == "from-cfg"
    assert seen["codes"] == {
        "show dag manual__1": 0,
        "diff dag manual__1 manual__1": 0,
        "fsck": 0,
        "gc": 0,
        f"show dag manual__1 --home {tmp_path / 'elsewhere'}": EXIT_USER_ERROR,
    }
