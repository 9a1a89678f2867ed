"""The "Reproducibility" tab on Airflow's DAG-run page, in headless Chromium (see conftest.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.core.runs import load_run
from tests.browser.conftest import BrowserRuns, run_queued_replay
from tests.support.api import EXAMPLE_DAG, PASSWORDS, SMALL_DAG, ApiServer, dag_file_edited, replays, run_count
from tests.support.specs import REPO_ROOT

TAB = 'iframe[title="Reproducibility"]'
DOCS_SCREENSHOT = REPO_ROOT / "docs" / "images" / "reproducibility-tab.png"
# The README's picture is rewritten only on request, so a test run never dirties the checkout.
UPDATE_DOCS_SCREENSHOT = os.environ.get("REPRO_UPDATE_DOCS_SCREENSHOT") == "1"


def tab_url(dag_id: str, run_id: str) -> str:
    return f"/dags/{quote(dag_id)}/runs/{quote(run_id)}/plugin/airflow-repro"


def open_tab(context: Any, dag_id: str, run_id: str) -> tuple[Any, Any]:
    """The Airflow run page with the tab open, and the tab's frame."""
    page = context.new_page()
    page.goto(tab_url(dag_id, run_id))
    expect(page.get_by_role("link", name="Reproducibility")).to_be_visible()
    return page, page.frame_locator(TAB)


def store(repro_env: dict[str, str]) -> LocalStore:
    return LocalStore(Path(repro_env["home"]) / "store")


def short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


# -- what was recorded -----------------------------------------------------------------------------------
def test_admin_sees_every_tasks_pins(
    open_context: Any, browser_runs: BrowserRuns, repro_env: dict[str, str], artifacts: Path
) -> None:
    page, tab = open_tab(open_context("admin"), EXAMPLE_DAG, browser_runs.example)
    recorded = load_run(store(repro_env), EXAMPLE_DAG, browser_runs.example)
    rows = tab.get_by_test_id("task-row")
    expect(rows).to_have_count(len(recorded.tasks))
    for row, task in zip(rows.all(), recorded.tasks, strict=True):
        manifest = task.manifest
        expect(row).to_have_attribute("data-task", manifest.identity.task_id)
        expect(row.get_by_test_id("task-state")).to_have_text("success")  # Airflow's own state
        expect(row.get_by_test_id("commit")).to_have_text(short(task.commit_id))
        expect(row.get_by_test_id("environment-digest")).to_have_text(short(manifest.environment.digest))
        expect(row.get_by_test_id("environment")).to_contain_text(manifest.environment.kind)
        seed = row.get_by_test_id("seed")
        expect(seed).to_have_text("none" if manifest.parameters.seed is None else str(manifest.parameters.seed))
        for data_input in manifest.inputs:
            expect(row.get_by_test_id("inputs")).to_contain_text(short(data_input.commit_id))
        for output in manifest.outputs:
            expect(row.get_by_test_id("outputs")).to_contain_text(output.path)
        if manifest.tracking.mlflow_run_id:
            expect(row.get_by_test_id("mlflow")).to_contain_text(short(manifest.tracking.mlflow_run_id))
    # the embedded store has no lakeFS UI to link commits to
    expect(tab.get_by_test_id("commit-link")).to_have_count(0)
    page.screenshot(path=artifacts / "tab-pins-light.png", full_page=True)


def test_commit_and_mlflow_links_open_outside_the_sandboxed_frame(
    open_context: Any, browser_runs: BrowserRuns, repro_env: dict[str, str]
) -> None:
    # The tracking URI of this session is an http MLflow server: a browser can open its runs.
    page, tab = open_tab(open_context("admin"), EXAMPLE_DAG, browser_runs.example)
    task = load_run(store(repro_env), EXAMPLE_DAG, browser_runs.example).tasks[0].manifest.tracking
    link = tab.get_by_test_id("mlflow-link").first
    expected = f"{repro_env['mlflow']}/#/experiments/{task.mlflow_experiment_id}/runs/{task.mlflow_run_id}"
    expect(link).to_have_attribute("href", expected)
    with page.context.expect_page() as opened:  # a new tab, although the frame may not open popups
        link.click()
    assert opened.value.url.startswith(repro_env["mlflow"])
    opened.value.close()


# -- the dry run --------------------------------------------------------------------------------------------
def test_the_dry_run_says_what_changed_and_what_a_replay_does_with_it(
    open_context: Any, browser_runs: BrowserRuns
) -> None:
    context = open_context("admin")
    with dag_file_edited('params["factor"] * 21', 'params["factor"] * 21 + 0'):
        page, tab = open_tab(context, SMALL_DAG, browser_runs.small)
        report = tab.locator('[data-testid="drift-report"][data-mode="pinned"]')
        item = report.locator('[data-testid="drift-item"][data-kind="code_changed"]')
        expect(item.get_by_test_id("drift-fate")).to_have_text("restored")
        expect(item).to_contain_text("archived code snapshot")
        expect(tab.get_by_test_id("replay-button")).to_be_enabled()
        tab.get_by_test_id("mode").select_option("latest-code")
        latest = tab.locator('[data-testid="drift-report"][data-mode="latest-code"]')
        expect(latest.get_by_test_id("drift-fate")).to_have_text("current used")
        expect(tab.get_by_test_id("replay-button")).to_be_enabled()
        page.close()
    with dag_file_edited('params={"factor": 2}', 'params={"factor": 30}'):
        page, tab = open_tab(context, SMALL_DAG, browser_runs.small)
        report = tab.locator('[data-testid="drift-report"][data-blocked="true"]')
        expect(report.get_by_test_id("plan-summary")).to_contain_text("refused")
        params = report.locator('[data-testid="drift-item"][data-kind="params_changed"]')
        expect(params.get_by_test_id("drift-fate")).to_have_text("refused")
        expect(params).to_contain_text('recorded {"factor":2} → now {"factor":30}')
        expect(tab.get_by_test_id("replay-button")).to_be_disabled()


# -- replays ---------------------------------------------------------------------------------------------------
def trigger_from_the_tab(tab: Any) -> str:
    expect(tab.get_by_test_id("replay-button")).to_be_enabled()
    tab.get_by_test_id("replay-button").click()
    tab.get_by_test_id("confirm-replay").click()
    triggered = tab.get_by_test_id("triggered")
    expect(triggered).to_contain_text("Triggered the replay")
    return str(triggered.locator("code").inner_text())


def test_admin_replays_a_run_follows_it_and_sees_it_verified_identical(
    open_context: Any, ui_server: ApiServer, browser_runs: BrowserRuns, artifacts: Path
) -> None:
    page, tab = open_tab(open_context("admin"), EXAMPLE_DAG, browser_runs.example)
    expect(tab.get_by_test_id("plan-summary")).to_contain_text("Every pin holds")
    replay_id = trigger_from_the_tab(tab)
    assert replay_id.startswith("replay__") and replay_id.endswith(f"__of__{browser_runs.example}")
    assert replay_id in [r["replay_run_id"] for r in replays(ui_server, EXAMPLE_DAG, browser_runs.example)]
    row = tab.locator(f'[data-testid="replay"][data-run="{replay_id}"]')
    expect(row.get_by_test_id("replay-state")).to_have_text("queued")
    expect(row.get_by_test_id("replay-waiting")).to_be_visible()

    assert run_queued_replay(ui_server, EXAMPLE_DAG, replay_id) == "success"
    expect(row.get_by_test_id("replay-state")).to_have_text("success")  # the page follows the run
    expect(row.get_by_test_id("verdict-missing")).to_have_text("not verified")
    row.get_by_test_id("verify-button").click()
    expect(row.get_by_test_id("verdict")).to_have_text("identical")
    expect(row.get_by_test_id("report-task")).to_have_count(4)
    row.screenshot(path=artifacts / "tab-replay-verified.png")

    # the replay's own tab, in the Airflow UI around the frame
    row.get_by_test_id("replay-link").click()
    expect(page).to_have_url(re.compile(re.escape(tab_url(EXAMPLE_DAG, replay_id)) + "$"))
    replay_tab = page.frame_locator(TAB)
    expect(replay_tab.get_by_test_id("original-link")).to_have_text(browser_runs.example)
    expect(replay_tab.get_by_test_id("this-replay-status").get_by_test_id("verdict")).to_have_text("identical")
    expect(replay_tab.get_by_test_id("this-replay-status")).to_contain_text("mode pinned")


def test_a_replay_from_a_task_reuses_the_tasks_upstream_of_it(
    open_context: Any, ui_server: ApiServer, browser_runs: BrowserRuns
) -> None:
    page, tab = open_tab(open_context("admin"), EXAMPLE_DAG, browser_runs.example)
    expect(tab.get_by_test_id("drift-report")).to_be_visible()
    tab.get_by_test_id("from-task").select_option("train")
    expect(tab.get_by_test_id("drift-report")).to_contain_text("from train")
    expect(tab.get_by_test_id("replayed-tasks")).to_have_text("Runs again: train, evaluate")  # in the run's order
    expect(tab.get_by_test_id("reused-tasks")).to_contain_text("ingest")
    expect(tab.get_by_test_id("reused-tasks")).to_contain_text("featurize")
    replay_id = trigger_from_the_tab(tab)

    assert run_queued_replay(ui_server, EXAMPLE_DAG, replay_id) == "success"
    row = tab.locator(f'[data-testid="replay"][data-run="{replay_id}"]')
    row.get_by_test_id("verify-button").click()
    expect(row.get_by_test_id("verdict")).to_have_text("identical")
    for task_id, reused in (("ingest", True), ("featurize", True), ("train", False), ("evaluate", False)):
        task = row.locator(f'[data-testid="report-task"][data-task="{task_id}"]')
        expect(task.get_by_test_id("task-reused")).to_have_count(1 if reused else 0)


def test_a_replay_that_differs_says_where_and_why(
    open_context: Any, ui_server: ApiServer, browser_runs: BrowserRuns, artifacts: Path
) -> None:
    # the task's code now computes another value; a latest-code replay runs it
    with dag_file_edited('params["factor"] * 21', 'params["factor"] * 211'):
        page, tab = open_tab(open_context("admin"), SMALL_DAG, browser_runs.small)
        tab.get_by_test_id("mode").select_option("latest-code")
        expect(tab.locator('[data-testid="drift-report"][data-mode="latest-code"]')).to_contain_text("code_changed")
        replay_id = trigger_from_the_tab(tab)
        assert run_queued_replay(ui_server, SMALL_DAG, replay_id) == "success"
    row = tab.locator(f'[data-testid="replay"][data-run="{replay_id}"]')
    row.get_by_test_id("verify-button").click()
    expect(row.get_by_test_id("verdict")).to_have_text("differs")
    task = row.locator('[data-testid="report-task"][data-task="scale"]')
    expect(task.get_by_test_id("task-status")).to_have_text("differs")
    expect(task.get_by_test_id("object-diff")).to_contain_text("out.txt: changed")
    expect(task.get_by_test_id("comparison")).not_to_be_empty()  # where the content differs
    expect(task.get_by_test_id("likely-cause").first).to_be_visible()  # what else differed between the runs
    row.screenshot(path=artifacts / "tab-replay-differs.png")


# -- permissions and sessions ---------------------------------------------------------------------------------
def test_a_viewer_sees_the_pins_and_the_drift_report_but_cannot_replay(
    open_context: Any, browser_runs: BrowserRuns
) -> None:
    page, tab = open_tab(open_context("viewer"), EXAMPLE_DAG, browser_runs.example)
    expect(tab.get_by_test_id("task-row")).to_have_count(4)
    expect(tab.get_by_test_id("plan-summary")).to_contain_text("Every pin holds")  # the read-only plan
    expect(tab.get_by_test_id("replay-button")).to_be_disabled()
    expect(tab.get_by_test_id("replay-denied")).to_contain_text("permission to create runs")


def test_a_run_that_was_not_recorded_says_so(
    open_context: Any, ui_server: ApiServer, browser_runs: BrowserRuns
) -> None:
    with ui_server.client("admin") as admin:
        response = admin.post(f"/api/v2/dags/{SMALL_DAG}/dagRuns", json={"logical_date": None})
    assert response.status_code == 200, response.text
    page, tab = open_tab(open_context("admin"), SMALL_DAG, response.json()["dag_run_id"])
    expect(tab.get_by_test_id("unrecorded")).to_contain_text("This run was not recorded")
    expect(tab.get_by_test_id("replay-panel")).to_have_count(0)


def test_without_a_session_the_tab_says_so_and_airflow_asks_to_log_in(
    open_context: Any, browser_runs: BrowserRuns
) -> None:
    context = open_context()  # no cookie
    page = context.new_page()
    page.goto(f"/repro/ui/run.html?dag_id={EXAMPLE_DAG}&run_id={quote(browser_runs.example)}")
    expect(page.get_by_test_id("session-expired")).to_contain_text("session has expired")
    page.goto(tab_url(EXAMPLE_DAG, browser_runs.example))
    expect(page).to_have_url(re.compile(r"/auth/login"))
    # Airflow's own login form brings the user back to the tab, and the page reads the new session
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(PASSWORDS["admin"])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(re.escape(tab_url(EXAMPLE_DAG, browser_runs.example)) + "$"))
    expect(page.frame_locator(TAB).get_by_test_id("task-row")).to_have_count(4)


# -- look ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_tab_follows_the_airflow_theme(
    open_context: Any, browser_runs: BrowserRuns, artifacts: Path, scheme: str
) -> None:
    page, tab = open_tab(open_context("admin", color_scheme=scheme), EXAMPLE_DAG, browser_runs.example)
    expect(tab.get_by_test_id("task-row").first).to_be_visible()
    host_panel = page.evaluate(
        """() => { const probe = document.createElement("div");
        probe.style.background = "var(--chakra-colors-bg-panel)"; document.body.append(probe);
        const colour = getComputedStyle(probe).backgroundColor; probe.remove();
        return {colour, dark: document.documentElement.classList.contains("dark")}; }"""
    )
    assert host_panel["dark"] is (scheme == "dark")
    frame = page.frame(url=lambda url: "/repro/ui/run.html" in url)
    assert frame is not None
    body = frame.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert body == host_panel["colour"]
    page.screenshot(path=artifacts / f"tab-{scheme}.png", full_page=True)
    if scheme == "light":  # the README's picture: pins, and the replay controls below them
        page.set_viewport_size({"width": 1400, "height": 1400})
        expect(tab.get_by_test_id("plan-summary")).to_be_visible()
        page.screenshot(path=DOCS_SCREENSHOT if UPDATE_DOCS_SCREENSHOT else artifacts / "reproducibility-tab.png")


# -- bad input ------------------------------------------------------------------------------------------------
def test_bad_input_shows_the_apis_message_and_changes_nothing(
    open_context: Any, ui_server: ApiServer, browser_runs: BrowserRuns
) -> None:
    context = open_context("admin")
    page = context.new_page()
    page.goto(f"/repro/ui/run.html?dag_id={EXAMPLE_DAG}&run_id=no_such_run")
    expect(page.get_by_test_id("api-error-message")).to_contain_text(f"DAG '{EXAMPLE_DAG}' has no run 'no_such_run'")

    # the DAG's params change between the dry run and the confirmation: the API refuses the replay
    before = run_count(ui_server, SMALL_DAG)
    replays_before = replays(ui_server, SMALL_DAG, browser_runs.small)
    page, tab = open_tab(context, SMALL_DAG, browser_runs.small)
    expect(tab.get_by_test_id("plan-summary")).to_contain_text("Every pin holds")
    tab.get_by_test_id("replay-button").click()
    with dag_file_edited('params={"factor": 2}', 'params={"factor": 30}'):
        tab.get_by_test_id("confirm-replay").click()
        message = tab.get_by_test_id("replay-outcome").get_by_test_id("api-error-message")
        expect(message).to_contain_text("nothing was triggered")
        expect(message).to_contain_text("params ['factor']")
    expect(tab.get_by_test_id("replay-outcome").get_by_test_id("drift-item")).not_to_have_count(0)
    assert run_count(ui_server, SMALL_DAG) == before
    assert replays(ui_server, SMALL_DAG, browser_runs.small) == replays_before


def test_the_context_endpoint_says_who_may_replay(
    ui_server: ApiServer, browser_runs: BrowserRuns, repro_env: dict[str, str]
) -> None:
    url = f"/repro/ui/context/dags/{EXAMPLE_DAG}"
    with ui_server.client("admin") as admin, ui_server.client("viewer") as viewer, ui_server.client() as anonymous:
        answers = {"admin": admin.get(url), "viewer": viewer.get(url)}
        assert anonymous.get(url).status_code == 401
    for user, answer in answers.items():
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["user"], body["can_replay"]) == (user, user == "admin")
        # the embedded store has no lakeFS UI; MLflow is the session's http server (no credentials in it)
        assert body["links"] == {"lakefs_ui_url": None, "mlflow_ui_url": repro_env["mlflow"].rstrip("/")}


# -- packaging -------------------------------------------------------------------------------------------------
def test_the_wheel_ships_the_page_and_the_server_serves_it(ui_server: ApiServer, tmp_path: Path) -> None:
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(tmp_path), str(REPO_ROOT)], check=True, capture_output=True
    )
    (wheel,) = tmp_path.glob("airflow_repro-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    page_files = {
        p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "airflow_repro/airflow/ui").rglob("*") if p.is_file()
    }
    assert {"airflow_repro/airflow/ui/run.html", "airflow_repro/airflow/ui/js/run.js"} <= page_files <= shipped

    with ui_server.client() as anonymous:
        script = anonymous.get("/repro/ui/js/run.js")
        page = anonymous.get("/repro/ui/run.html")
        outside = anonymous.get("/repro/ui/..%2Fapi.py")
        plugins = anonymous.get("/api/v2/plugins", headers={"Authorization": f"Bearer {ui_server.tokens['admin']}"})
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # only the Airflow UI of this origin may frame the page (no clickjacking from sibling sites)
    assert page.headers["x-frame-options"] == "SAMEORIGIN"
    assert "frame-ancestors 'self'" in page.headers["content-security-policy"]
    assert "<script" not in page.text.replace('<script type="module" src="js/run.js"></script>', "")  # no inline JS
    assert outside.status_code == 404
    (plugin,) = [p for p in plugins.json()["plugins"] if p["name"] == "airflow_repro"]
    (view,) = plugin["external_views"]
    assert (view["name"], view["destination"], view["url_route"]) == ("Reproducibility", "dag_run", "airflow-repro")
    assert view["href"] == "repro/ui/run.html?dag_id={DAG_ID}&run_id={RUN_ID}"  # relative: base_url sub-paths hold
