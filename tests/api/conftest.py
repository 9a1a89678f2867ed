"""The REST API against a real ``airflow api-server`` (SimpleAuthManager, users admin and viewer).

The runs are recorded first, in this process with ``dag.test()``, in the session's Airflow home
and DB (``tests/support/airflow_session.py``: Airflow reads its configuration once per process, so
every test directory of a pytest run shares that home). The api-server
subprocess then serves the same DB, DAGs folder and store.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import airflow_session, api
from tests.support.airflow_session import load_dag
from tests.support.api import EXAMPLE_DAG, SMALL_DAG, ApiServer, RecordedRuns

airflow_session.start()
api.write_small_dag()


@pytest.fixture(scope="session")
def recorded_runs(repro_env: dict[str, str]) -> RecordedRuns:
    """Real recorded runs of the example pipeline and of the small DAG, in the session's DB and store."""
    run_ids = {}
    for dag_id, file_name in ((EXAMPLE_DAG, "example_ml_pipeline.py"), (SMALL_DAG, api.SMALL_DAG_FILE.name)):
        dag_run = load_dag(dag_id, file_name).test()
        assert dag_run.state == "success", f"{dag_id} failed in dag.test()"
        run_ids[dag_id] = dag_run.run_id
    return RecordedRuns(example=run_ids[EXAMPLE_DAG], small=run_ids[SMALL_DAG])


@pytest.fixture(scope="session")
def api_server(
    recorded_runs: RecordedRuns, repro_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    with api.running_api_server(tmp_path_factory.mktemp("api-server")) as server:
        yield server
