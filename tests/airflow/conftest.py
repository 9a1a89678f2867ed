"""In-process Airflow for tests: one SQLite metadata DB and one DAGs folder per session.

Airflow reads its configuration when first imported, so the environment is set here, before any
test module imports it. DAGs run with ``dag.test()``: the real task runner, listeners and XCom,
in this process.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SESSION_HOME = Path(tempfile.mkdtemp(prefix="repro-airflow-tests-"))
DAGS_FOLDER = SESSION_HOME / "dags"

os.environ.update(
    {
        "AIRFLOW_HOME": str(SESSION_HOME / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__REPRO__HOME": str(SESSION_HOME / "repro"),
    }
)
shutil.copytree(Path(__file__).parent / "dags", DAGS_FOLDER, dirs_exist_ok=True)
shutil.copy(REPO_ROOT / "dags" / "example_ml_pipeline.py", DAGS_FOLDER)


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[Path]:
    from airflow.utils import db

    db.initdb()
    yield SESSION_HOME
    shutil.rmtree(SESSION_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def repro_env(airflow_db: Path, mlflow_server: str) -> Iterator[dict[str, str]]:
    """Repro settings for in-process runs: the session store and a real MLflow server."""
    os.environ["AIRFLOW__REPRO__MLFLOW_TRACKING_URI"] = mlflow_server
    yield {"home": str(SESSION_HOME / "repro"), "mlflow": mlflow_server}


def load_dag(dag_id: str, file_name: str):  # noqa: ANN201 - an Airflow DAG
    """Import a DAG from the session's DAGs folder, as the DAG processor would."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER / file_name))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]
