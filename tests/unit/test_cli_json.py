"""The CLI's stdout carries its result alone: with ``--json``, exactly one JSON document, whatever
else writes to stdout meanwhile (Airflow's and OpenLineage's log lines, structlog, ``print``, a raw
write on file descriptor 1, a child process); all of that goes to stderr. Every command runs as a
real process here (a pipe on stdout, as a script reading it has), and those that need Airflow run
against a real Airflow metadata DB with a recorded run and its replay (``dag.test()``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.core.runs import close_run, load_run
from tests.support.recording import DAG, RUN, record

REPO_ROOT = Path(__file__).resolve().parents[2]
NOISE = (
    "noise: a log line",
    "noise: a structlog line",
    "noise: a print",
    "noise: a write on file descriptor 1",
    "noise: a child process",
)

# The CLI in a process where the command itself makes every kind of noise on stdout while it works.
# "before": Airflow is imported (and configures its logging onto stdout) before the command starts.
NOISY_CLI = """
import logging, os, subprocess, sys

if sys.argv[1] == "before":
    import airflow.configuration

import structlog

from airflow_repro import cli
from airflow_repro.core import runs

original = runs.load_run


def noisy_load_run(*args, **kwargs):
    import airflow.configuration  # configures Airflow's logging on the stdout of the moment
    logging.getLogger("airflow.noise").warning("noise: a log line")
    structlog.get_logger("noise").warning("noise: a structlog line")
    print("noise: a print")
    os.write(1, b"noise: a write on file descriptor 1\\n")
    subprocess.run([sys.executable, "-c", "print('noise: a child process')"], check=True)
    return original(*args, **kwargs)


runs.load_run = noisy_load_run
cli.main(sys.argv[2:])
"""


def _clean_env(airflow_home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    return {**env, "AIRFLOW_HOME": str(airflow_home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False", **extra}


def _run(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "airflow_repro.cli", *args], env)


def _one_document(done: subprocess.CompletedProcess[str]) -> Any:
    """stdout parsed as JSON: it must be exactly one document (``json.loads`` refuses anything more)."""
    assert done.stdout.strip(), f"nothing on stdout; stderr:\n{done.stderr[-3000:]}"
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"stdout is not one JSON document ({exc}):\n{done.stdout[:3000]}") from None


@pytest.fixture
def recorded_home(tmp_path: Path) -> Path:
    home = tmp_path / "repro"
    store = LocalStore(home / "store")
    record(store, home, RUN, {"model.bin": b"weights"})
    close_run(store, DAG, RUN, "success")
    return home


@pytest.mark.parametrize("airflow_imported", ["before", "during"])
@pytest.mark.parametrize("as_json", [True, False], ids=["json", "table"])
def test_only_the_result_reaches_stdout_whatever_else_writes_there(
    recorded_home: Path, tmp_path: Path, airflow_imported: str, as_json: bool
) -> None:
    args = ["show", DAG, RUN, "--home", str(recorded_home), *(["--json"] if as_json else [])]
    done = _run([sys.executable, "-c", NOISY_CLI, airflow_imported, *args], _clean_env(tmp_path / "airflow"))
    assert done.returncode == 0, done.stderr[-3000:]
    for line in NOISE:
        assert line in done.stderr, (line, done.stderr[-3000:])
        assert line not in done.stdout, (line, done.stdout[-3000:])
    if as_json:
        assert _one_document(done)["run_id"] == RUN
    else:
        assert "model.bin" in done.stdout and "closed as tag" in done.stdout


# -- every --json command, on a real Airflow ------------------------------------------------------
DAG_ID = "repro_json_cli"
DAG_SOURCE = f'''
from airflow.sdk import dag

from airflow_repro import Input, repro_task, runtime


@dag(dag_id="{DAG_ID}", schedule=None, catchup=False)
def repro_json_cli():
    @repro_task(outputs=["numbers.txt"], seed=3)
    def produce():
        runtime.current().output_path("numbers.txt").write_text("1 2 3\\n")

    @repro_task(inputs={{"numbers": Input("numbers.txt")}}, outputs=["total.txt"], seed=3)
    def total():
        ctx = runtime.current()
        numbers = ctx.input_path("numbers").read_text().split()
        ctx.output_path("total.txt").write_text(str(sum(map(int, numbers))))

    produce() >> total()


repro_json_cli()
'''

# A run recorded through Airflow's task runner (dag.test()), then a replay of it the same way.
RECORD_AND_REPLAY = f"""
import json, os
from airflow.utils import db
db.initdb()
from airflow.dag_processing.dagbag import DagBag
from airflow_repro.airflow import replay as service
from tests.support.airflow_session import run_replay

bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
assert not bag.import_errors, bag.import_errors
dag = bag.dags["{DAG_ID}"]
original = dag.test()
backends = service.Backends.from_airflow_conf()
replayed = run_replay(dag, service.plan(backends, dag.dag_id, original.run_id, "pinned"), backends)
print("RUNS " + json.dumps({{"states": [original.state, replayed.state], "original": original.run_id,
                             "replay": replayed.run_id}}))
"""


@pytest.fixture(scope="module")
def airflow_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("cli-json")
    (root / "dags").mkdir()
    (root / "dags" / "repro_json_cli.py").write_text(DAG_SOURCE)
    events = root / "openlineage" / "events.jsonl"
    events.parent.mkdir()
    env = _clean_env(
        root / "airflow",
        AIRFLOW__CORE__DAGS_FOLDER=str(root / "dags"),
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        AIRFLOW__REPRO__HOME=str(root / "repro"),
        AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps({"type": "file", "log_file_path": str(events), "append": True}),
    )
    done = _run([sys.executable, "-c", RECORD_AND_REPLAY], env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RUNS "))[5:])
    assert runs["states"] == ["success", "success"], done.stdout[-3000:]
    yield {"env": env, "events": str(events), "home": root / "repro", **runs}


@pytest.mark.slow
def test_every_json_command_prints_one_json_document_on_stdout(airflow_world: dict[str, Any]) -> None:
    env, original, replay, events = (airflow_world[k] for k in ("env", "original", "replay", "events"))
    numbers_commit = load_run(LocalStore(airflow_world["home"] / "store"), DAG_ID, original).tasks[0].commit_id

    def parsed(*args: str, codes: tuple[int, ...] = (0,)) -> tuple[Any, str]:
        done = _cli(*args, env=env)
        assert done.returncode in codes, (args, done.returncode, done.stderr[-3000:])
        return _one_document(done), done.stderr

    verified, verify_log = parsed("verify", DAG_ID, replay, "--json")
    assert verified["verdict"] == "identical"
    # the noise of a real verify (OpenLineage's client and adapter log each event) went to stderr
    assert "OpenLineage" in verify_log, verify_log[-3000:]
    assert parsed("verify", DAG_ID, replay, "--stored", "--deep", "--json")[0]["verdict"] == "identical"
    assert parsed("show", DAG_ID, original, "--json")[0]["run_id"] == original
    differences = parsed("diff", DAG_ID, original, replay, "--json", codes=(0, 1))[0]
    assert differences["run_b"] == replay and differences["objects"] == {}, differences
    assert parsed("fsck", "--json")[0]["clean"] is True
    assert "freed_bytes" in parsed("gc", "--json")[0]
    assert "task-manifest" in parsed("schema")[0]
    assert parsed("lineage", "datasets", events, "--json")[0]
    assert parsed("lineage", "produced-by", events, "repro/numbers.txt", "--json")[0]
    assert parsed("lineage", "readers", events, "repro/numbers.txt", "--version", numbers_commit, "--json")[0]
    plan, _ = parsed("replay", DAG_ID, original, "--dry-run", "--json")
    assert plan["kind"] == "airflow-repro/replay-plan" and plan["drift"] == []
    # triggered (nobody schedules it here): the plan of the run just triggered
    triggered, log = parsed("replay", DAG_ID, original, "--json")
    assert (
        triggered["replay_run_id"] != plan["replay_run_id"] and f"triggered replay {triggered['replay_run_id']}" in log
    )
