"""Planning a replay parses the DAG file in a child process with a deadline, never in the API server.

A request thread cannot use Airflow's import timeout (a signal, main thread only), so a DAG file
that hangs at import would hang the request forever.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.airflow_session import SESSION_HOME
from tests.support.api import (
    API,
    DAG_IMPORT_TIMEOUT_S,
    EXAMPLE_DAG,
    SMALL_DAG,
    ApiServer,
    RecordedRuns,
    dag_file_edited,
)

DOCSTRING = '"""A one-task recorded DAG for the REST API tests."""'
# What the child may need beyond the timeout: start Python and import Airflow, on a loaded machine.
STARTUP_S = 20


def parsing_processes() -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:  # the process ended meanwhile
            continue
        if b"airflow_repro.airflow.dag_parsing" in argv:
            found.append(cmdline.parent.name)
    return found


def test_a_dag_file_that_hangs_at_import_gets_a_clear_error_and_the_server_keeps_serving(
    api_server: ApiServer, recorded_runs: RecordedRuns
) -> None:
    url = f"{API}/{SMALL_DAG}/runs/{recorded_runs.small}/replay"
    answer: dict[str, object] = {}

    def plan() -> None:
        started = time.monotonic()
        with api_server.client("admin") as admin:
            answer["response"] = admin.post(url, json={"dry_run": True}, timeout=DAG_IMPORT_TIMEOUT_S + 60)
        answer["seconds"] = time.monotonic() - started

    with dag_file_edited(DOCSTRING, DOCSTRING + "\nimport time\n\ntime.sleep(10**6)\n"):
        planning = threading.Thread(target=plan)
        planning.start()
        time.sleep(2)  # the child is parsing (sleeping) now
        latencies = []
        with api_server.client("viewer") as viewer:
            while planning.is_alive() and len(latencies) < 50:
                started = time.monotonic()
                response = viewer.get(f"{API}/{EXAMPLE_DAG}/runs/{recorded_runs.example}/manifest")
                assert response.status_code == 200, response.text
                latencies.append(time.monotonic() - started)
                time.sleep(0.2)
        planning.join(DAG_IMPORT_TIMEOUT_S + STARTUP_S + 60)
    response = answer["response"]
    assert isinstance(response, httpx.Response)
    assert response.status_code == 400, response.text
    assert response.json() == {
        "detail": (
            f"DAG {SMALL_DAG!r} could not be parsed from repro_api_dags.py (bundle 'dags-folder') within "
            f"{DAG_IMPORT_TIMEOUT_S} s ([core] dagbag_import_timeout); the parse was stopped and nothing was "
            "planned. Make the file's top-level code fast (no network calls or sleeps at import), or raise the timeout"
        )
    }
    assert DAG_IMPORT_TIMEOUT_S <= float(answer["seconds"]) < DAG_IMPORT_TIMEOUT_S + STARTUP_S  # type: ignore[arg-type]
    assert latencies and max(latencies) < 5, latencies  # other requests were served meanwhile
    assert parsing_processes() == []  # the sleeping child was killed


def test_an_import_error_names_the_file_relative_to_its_bundle(
    api_server: ApiServer, recorded_runs: RecordedRuns
) -> None:
    url = f"{API}/{SMALL_DAG}/runs/{recorded_runs.small}/replay"
    broken = DOCSTRING + f"\nopen({str(SESSION_HOME / 'dags' / 'missing.csv')!r})\n"
    with dag_file_edited(DOCSTRING, broken), api_server.client("admin") as admin:
        response = admin.post(url, json={"dry_run": True})
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert detail.startswith(f"DAG {SMALL_DAG!r} cannot be parsed from repro_api_dags.py now: repro_api_dags.py: ")
    assert "No such file or directory: 'missing.csv'" in detail
    assert str(SESSION_HOME) not in response.text


def test_the_child_is_killed_with_what_it_started_when_it_overruns(tmp_path: Path) -> None:
    """The last resort, for a child that cannot even stop itself (a C call holding the GIL)."""
    from airflow_repro.airflow import dag_parsing

    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen(['sleep', '1000'])\nopen({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(1000)\n"
    )
    started = time.monotonic()
    with pytest.raises(dag_parsing.subprocess.TimeoutExpired):
        dag_parsing.run_child([sys.executable, "-c", code], "", timeout=2)
    assert time.monotonic() - started < 10
    grandchild = Path(f"/proc/{pid_file.read_text()}")
    deadline = time.monotonic() + 5
    while grandchild.exists() and "Z" not in _state(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not grandchild.exists() or "Z" in _state(grandchild)


def _state(proc: Path) -> str:
    try:
        return (proc / "stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "gone"
