"""End to end through the real executor path: api-server, scheduler (LocalExecutor, a process per
task), dag-processor and an MLflow server, as ``make demo`` runs them: once with Airflow's metadata
DB on SQLite (the demo), once on a real PostgreSQL server (as in production, docker-compose.yaml)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.core import metadata_keys as keys
from airflow_repro.core.runs import load_run
from airflow_repro.embedded import EmbeddedStack

REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "example_ml_pipeline"

pytestmark = pytest.mark.e2e

# The replay service triggers the run and stores its plan in one DB transaction; here storing fails.
TRIGGER_WITH_FAILING_STORE = """
import sys
from airflow_repro.airflow import replay as service

backends = service.Backends.from_airflow_conf()
plan = service.plan(backends, sys.argv[1], sys.argv[2], "pinned")

def unavailable(*args, **kwargs):
    raise OSError("the store is unavailable")

service.save_plan = unavailable
try:
    service.trigger(backends, plan, triggered_by="CLI", user="test")
except OSError:
    print("refused", plan.replay_run_id)
"""


@pytest.mark.parametrize("metadata_db", ["sqlite", "postgres"])
def test_two_runs_at_once_are_recorded_completely_and_a_replay_verifies_identical(
    tmp_path: Path,
    metadata_db: str,
    request: pytest.FixtureRequest,
) -> None:
    # the PostgreSQL server is started only for that case (and skipped where none is installed)
    url = request.getfixturevalue("postgres_url") if metadata_db == "postgres" else None
    stack = EmbeddedStack(home=tmp_path / "stack", dags_folder=REPO_ROOT / "dags", metadata_db=url)
    with stack:
        stack.wait_for_dag(DAG_ID)
        run_ids = [stack.trigger(DAG_ID, run_id=f"concurrent_{n}") for n in (1, 2)]
        states = [stack.wait_for_run(DAG_ID, run_id)["state"] for run_id in run_ids]
        assert states == ["success", "success"], f"logs in {stack.home / 'logs'}"
        # the CLI replays through the real scheduler, waits, verifies; exit 0 means identical
        replay = subprocess.run(
            [sys.executable, "-m", "airflow_repro.cli", "replay", DAG_ID, run_ids[0], "--verify", "--json"],
            env=stack.env(),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    assert replay.returncode == 0, replay.stderr[-3000:]
    # a replay whose plan cannot be stored is rolled back with it: Airflow keeps no run (checked below)
    failed = subprocess.run(
        [sys.executable, "-c", TRIGGER_WITH_FAILING_STORE, DAG_ID, run_ids[1]],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert failed.returncode == 0 and "refused" in failed.stdout, failed.stderr[-3000:]
    report = json.loads(replay.stdout)
    assert report["verdict"] == "identical" and report["original_run_id"] == run_ids[0]
    assert [t["status"] for t in report["tasks"]] == ["identical"] * 4

    # the runs, the replay and its note are in the metadata DB asked for, and nothing else: the
    # replay whose plan could not be stored left no run
    db_url = stack.env()["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert db_url.startswith("postgresql+psycopg2://" if url else "sqlite:///")
    engine = sqlalchemy.create_engine(db_url)
    try:
        with engine.connect() as db:
            rows = db.execute(
                sqlalchemy.text(
                    "SELECT r.run_id, r.state, n.content FROM dag_run r LEFT JOIN dag_run_note n ON n.dag_run_id = r.id"
                    " WHERE r.dag_id = :dag_id ORDER BY r.run_id"
                ),
                {"dag_id": DAG_ID},
            ).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [
        (run_ids[0], "success", None),
        (run_ids[1], "success", None),
        (report["replay_run_id"], "success", f"airflow-repro replay of {run_ids[0]} (mode pinned)"),
    ]

    store = LocalStore(stack.repro_home / "store")
    runs = [load_run(store, DAG_ID, run_id) for run_id in run_ids]
    assert runs[0].branch != runs[1].branch
    for run in runs:
        assert run.closed
        assert [t.manifest.identity.task_id for t in run.tasks] == ["ingest", "featurize", "train", "evaluate"]
        task_commits = [c for c in store.log(run.repository, run.ref) if keys.TASK_KEY in c.metadata]
        assert len(task_commits) == 4, "one commit per task, none lost, none duplicated"
        for task in run.tasks:
            assert task.manifest.identity.run_id == run.run_id
            assert task.manifest.code.bundle_name == "dags-folder"
            assert task.manifest.hardware.hostname
    # same code, data and seeds: the two runs produced byte-identical outputs
    outputs = [{o.path: o.content_hash for t in run.tasks for o in t.manifest.outputs} for run in runs]
    assert outputs[0] == outputs[1]

    env = {**os.environ, "AIRFLOW__REPRO__HOME": str(stack.repro_home)}
    shown = subprocess.run(
        [sys.executable, "-m", "airflow_repro.cli", "show", DAG_ID, run_ids[0], "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert [t["manifest"]["identity"]["task_id"] for t in json.loads(shown.stdout)["tasks"]][-1] == "evaluate"
