"""The Reproducibility tab in a real headless Chromium, against a real ``airflow api-server``.

Debian's ``chromium`` is driven by Playwright from PyPI through ``executable_path`` (never
``playwright install``); without it the tests skip, and fail under CI (``CI`` set). The runs are
recorded in this process with ``dag.test()`` in the session's Airflow home, DB and store, as for
the REST API tests; one api-server per module serves them (SimpleAuthManager, admin and viewer).
The UI's session is its httpOnly ``_token`` cookie, set on the browser context.

No scheduler runs here: a replay the page triggers stays queued until a test runs it in this
process as the scheduler would (:func:`run_queued_replay`, ``dag.test()`` with the replay's id and
conf). Screenshots go to ``$REPRO_TEST_ARTIFACTS`` (default ``build/artifacts``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import airflow_session, api
from tests.support.airflow_session import load_dag, run_id_for_next_test_run
from tests.support.api import EXAMPLE_DAG, SMALL_DAG, ApiServer
from tests.support.specs import REPO_ROOT, in_ci

airflow_session.start()
api.write_small_dag()

CHROMIUM_ARGS = [
    "--no-sandbox",  # root in CI containers
    "--disable-gpu",
    "--disable-background-networking",  # no connections to Google's hosts
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DAG_FILES = {EXAMPLE_DAG: "example_ml_pipeline.py", SMALL_DAG: api.SMALL_DAG_FILE.name}


@dataclass(frozen=True)
class BrowserRuns:
    example: str
    small: str


@pytest.fixture(scope="module")
def browser_runs(repro_env: dict[str, str]) -> BrowserRuns:
    """Recorded runs of this module's own (replays of them change no other module's expectations)."""
    run_ids = {}
    for dag_id, file_name in DAG_FILES.items():
        dag_run = load_dag(dag_id, file_name).test()
        assert dag_run.state == "success", f"{dag_id} failed in dag.test()"
        run_ids[dag_id] = dag_run.run_id
    return BrowserRuns(example=run_ids[EXAMPLE_DAG], small=run_ids[SMALL_DAG])


@pytest.fixture(scope="module")
def ui_server(browser_runs: BrowserRuns, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with api.running_api_server(tmp_path_factory.mktemp("ui-api-server")) as server:
        yield server


def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        why = "Debian's chromium is not installed (apt-get install chromium; .ci/run does it)"
        if in_ci():
            pytest.fail(f"CI is set and the browser tests cannot run: {why}", pytrace=False)
        pytest.skip(why)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    from playwright.sync_api import expect, sync_playwright

    # waits, not speed targets: the UI loads its bundle and translations on a busy machine
    expect.set_options(timeout=30_000)

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def open_context(browser: Any, ui_server: ApiServer) -> Iterator[Callable[..., Any]]:
    """``open_context(user=None, color_scheme="light")``: a browser context, logged in as ``user``."""
    contexts = []

    def open_(user: str | None = None, color_scheme: str = "light") -> Any:
        context = browser.new_context(
            base_url=ui_server.url, color_scheme=color_scheme, viewport={"width": 1400, "height": 1000}
        )
        context.set_default_timeout(30_000)
        if user is not None:
            context.add_cookies(
                [
                    {
                        "name": "_token",
                        "value": ui_server.tokens[user],
                        "domain": "127.0.0.1",
                        "path": "/",
                        "httpOnly": True,
                        "sameSite": "Lax",
                    }
                ]
            )
        contexts.append(context)
        return context

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    folder = Path(os.environ.get("REPRO_TEST_ARTIFACTS") or REPO_ROOT / "build" / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_queued_replay(server: ApiServer, dag_id: str, replay_run_id: str) -> str:
    """Run a replay the API queued, as the scheduler would: same run id, same conf; its final state."""
    with server.client("admin") as admin:
        queued = admin.get(f"/api/v2/dags/{dag_id}/dagRuns/{replay_run_id}")
        assert queued.status_code == 200, queued.text
        assert queued.json()["state"] == "queued"
        # dag.test() creates its own run: the queued one makes way for it
        assert admin.delete(f"/api/v2/dags/{dag_id}/dagRuns/{replay_run_id}").status_code == 204
    with run_id_for_next_test_run(replay_run_id):
        dag_run = load_dag(dag_id, DAG_FILES[dag_id]).test(run_conf=queued.json()["conf"])
    return str(dag_run.state)
