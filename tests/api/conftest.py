"""The REST API against a real ``airflow api-server`` (SimpleAuthManager, users admin and viewer).

The runs are recorded first, in this process with ``dag.test()``, in the session's Airflow home
and DB (``tests/support/airflow_session.py``: Airflow reads its configuration once per process, so
every test directory of a pytest run shares that home). The api-server
subprocess then serves the same DB, DAGs folder and store.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from airflow_repro.embedded import Service, free_port, wait_until_healthy
from tests.support import airflow_session, api
from tests.support.airflow_session import load_dag
from tests.support.api import DAG_IMPORT_TIMEOUT_S, EXAMPLE_DAG, PASSWORDS, SMALL_DAG, ApiServer, RecordedRuns

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
    folder = tmp_path_factory.mktemp("api-server")
    passwords_file = folder / "passwords.json"
    passwords_file.write_text(json.dumps(PASSWORDS))
    port = free_port()
    env = {
        **os.environ,  # the session's AIRFLOW_HOME, DAGs folder and [repro] settings
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": str(DAG_IMPORT_TIMEOUT_S),
    }
    command = [str(Path(sys.executable).parent / "airflow"), "api-server", "--port", str(port), "--host", "127.0.0.1"]
    service = Service.spawn("api-server", command, env=env, cwd=folder, log_path=folder / "api-server.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(f"{url}/api/v2/monitor/health", [service], time.monotonic() + 180)
        tokens = {}
        for user, password in PASSWORDS.items():
            response = httpx.post(f"{url}/auth/token", json={"username": user, "password": password}, timeout=30)
            assert response.status_code == 201, response.text
            tokens[user] = response.json()["access_token"]
        yield ApiServer(url=url, service=service, tokens=tokens)
    finally:
        service.stop()
