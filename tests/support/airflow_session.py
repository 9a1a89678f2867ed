"""In-process Airflow for tests: one SQLite metadata DB and one DAGs folder per session.

Airflow reads its configuration when first imported, so :func:`start` sets the environment before
any test module imports it: the conftests of the folders that run Airflow in-process call it when
pytest loads them. Importing this module only names the session's paths; nothing is created or set.
DAGs run with ``dag.test()``: the real task runner, listeners and XCom, in this process.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_repro.airflow.replay import Backends
    from airflow_repro.core.replay import ReplayPlan

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_DAGS = REPO_ROOT / "tests" / "airflow" / "dags"
SESSION_HOME = Path(tempfile.gettempdir()) / f"repro-airflow-tests-{secrets.token_hex(6)}"
DAGS_FOLDER = SESSION_HOME / "dags"
REPRO_HOME = SESSION_HOME / "repro"

_started = False


def start() -> Path:
    """Create the session's home, point Airflow and ``[repro]`` at it, copy the DAGs; once per process."""
    global _started
    if not _started:
        SESSION_HOME.mkdir(mode=0o700)
        os.environ.update(
            {
                "AIRFLOW_HOME": str(SESSION_HOME / "airflow"),
                "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
                "AIRFLOW__REPRO__HOME": str(REPRO_HOME),
            }
        )
        shutil.copytree(TEST_DAGS, DAGS_FOLDER, dirs_exist_ok=True)
        # As Airflow's BundleDagBag does in the task runner: DAG files import modules next to them.
        sys.path.append(str(DAGS_FOLDER))
        shutil.copy(REPO_ROOT / "dags" / "example_ml_pipeline.py", DAGS_FOLDER)
        _started = True
    return SESSION_HOME


def install_dag(source: Path) -> Path:
    """Copy a DAG file into the session's DAGs folder."""
    return Path(shutil.copy(source, DAGS_FOLDER))


def load_dag(dag_id: str, file_name: str):
    """Import a DAG from the session's DAGs folder, as the DAG processor would."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER / file_name))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


@contextlib.contextmanager
def run_id_for_next_test_run(run_id: str) -> Iterator[None]:
    """``dag.test()`` names its run itself; a replay run must carry the id its plan was made for."""
    from airflow.models.dagrun import DagRun

    original = DagRun.generate_run_id
    DagRun.generate_run_id = staticmethod(lambda **_: run_id)  # type: ignore[method-assign]
    try:
        yield
    finally:
        DagRun.generate_run_id = original  # type: ignore[method-assign]


def run_replay(dag: Any, plan: ReplayPlan, backends: Backends) -> Any:
    """What ``service.trigger`` does (``airflow_repro.airflow.replay``), with ``dag.test()`` standing in
    for the scheduler."""
    from airflow_repro.core.replay import REPLAY_CONF_KEY, replay_marker, save_plan

    save_plan(backends.store, plan, default_branch=backends.settings.default_branch)
    conf = {**plan.dag_run_conf, REPLAY_CONF_KEY: {**replay_marker(plan), "repository": plan.original_repository}}
    with run_id_for_next_test_run(plan.replay_run_id):
        return dag.test(run_conf=conf)
