"""The REST API tests' constants and helpers: the api-server's users, the small DAG the drift
tests rewrite, and what a test knows of the running api-server and the recorded runs."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from airflow_repro.embedded import Service, free_port, wait_until_healthy
from tests.support.airflow_session import DAGS_FOLDER

API = "/repro/api/v1/dags"
PASSWORDS = {"admin": "admin-pw-for-tests", "viewer": "viewer-pw-for-tests"}
# The api-server's [core] dagbag_import_timeout: ample for the test DAGs, short for a hanging one.
DAG_IMPORT_TIMEOUT_S = 8
EXAMPLE_DAG = "example_ml_pipeline"
SMALL_DAG = "repro_api_small"
SMALL_DAG_FILE = DAGS_FOLDER / "repro_api_dags.py"

# A one-task recorded DAG that the drift tests rewrite (its params, its code), as a user would.
SMALL_DAG_SOURCE = '''"""A one-task recorded DAG for the REST API tests."""
from airflow.sdk import dag

from airflow_repro import repro_task, runtime


@dag(dag_id="repro_api_small", schedule=None, params={"factor": 2})
def repro_api_small():
    @repro_task(outputs=["out.txt"], seed=7)
    def scale(params=None):
        runtime.current().output_path("out.txt").write_text(str(params["factor"] * 21))

    scale()


repro_api_small()
'''


def write_small_dag() -> Path:
    """Write the small DAG into the session's DAGs folder (the API conftest does, when loaded)."""
    SMALL_DAG_FILE.write_text(SMALL_DAG_SOURCE)
    return SMALL_DAG_FILE


@contextlib.contextmanager
def dag_file_edited(old: str, new: str) -> Iterator[None]:
    """Edit the small DAG's file as a user would; restore it afterwards.

    Every edit changes the file's size, and the mtime is bumped, so that neither the bytecode
    cache nor ``linecache`` in the api-server can serve the previous version.
    """
    original = SMALL_DAG_FILE.read_text()
    assert old in original and len(old) != len(new)
    try:
        SMALL_DAG_FILE.write_text(original.replace(old, new))
        _bump_mtime(SMALL_DAG_FILE)
        yield
    finally:
        SMALL_DAG_FILE.write_text(original)
        _bump_mtime(SMALL_DAG_FILE)


def _bump_mtime(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


@dataclass(frozen=True)
class RecordedRuns:
    example: str
    small: str


@dataclass(frozen=True)
class ApiServer:
    url: str
    service: Service
    tokens: dict[str, str]

    def client(self, user: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@contextlib.contextmanager
def running_api_server(folder: Path, extra_env: dict[str, str] | None = None) -> Iterator[ApiServer]:
    """A real ``airflow api-server`` on the session's home and DB (SimpleAuthManager: admin, viewer)."""
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
        **(extra_env or {}),
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


def run_count(api: ApiServer, dag_id: str) -> int:
    with api.client("admin") as admin:
        response = admin.get(f"/api/v2/dags/{dag_id}/dagRuns")
    assert response.status_code == 200, response.text
    return int(response.json()["total_entries"])


def replays(api: ApiServer, dag_id: str, run_id: str, user: str = "viewer") -> list[dict[str, Any]]:
    with api.client(user) as client:
        response = client.get(f"{API}/{dag_id}/runs/{run_id}/replays")
    assert response.status_code == 200, response.text
    return list(response.json()["replays"])
