"""The read-only plan endpoint and replays from a task, through a real ``airflow api-server``.

``GET .../plan`` is the dry run a viewer may read (``POST .../replay`` needs create permission);
``from_task`` on both replays one task and everything downstream of it. The example pipeline
(ingest -> featurize -> train -> evaluate) is the recorded run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.core.replay import REPLAY_CONF_KEY, load_plan
from airflow_repro.core.runs import load_run
from tests.support.airflow_session import load_dag
from tests.support.api import API, EXAMPLE_DAG, ApiServer, RecordedRuns, replays, run_count

ALL_TASKS = ["evaluate", "featurize", "ingest", "train"]


def plan_url(run_id: str, dag_id: str = EXAMPLE_DAG) -> str:
    return f"{API}/{dag_id}/runs/{run_id}/plan"


def commits(repro_env: dict[str, str], run_id: str) -> dict[str, str]:
    recorded = load_run(LocalStore(Path(repro_env["home"]) / "store"), EXAMPLE_DAG, run_id)
    return {t.manifest.identity.task_id: t.commit_id for t in recorded.tasks}


def test_a_viewer_reads_the_plan_and_nothing_is_triggered(api_server: ApiServer, recorded_runs: RecordedRuns) -> None:
    before = run_count(api_server, EXAMPLE_DAG)
    replays_before = replays(api_server, EXAMPLE_DAG, recorded_runs.example)
    with api_server.client("viewer") as viewer:
        response = viewer.get(plan_url(recorded_runs.example))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["dry_run"], body["triggered"], body["blocked"], body["mode"]) == (True, False, False, "pinned")
    assert body["original_run_id"] == recorded_runs.example and body["drift"] == []
    assert body["from_task"] is None and body["replayed_tasks"] == ALL_TASKS and body["reused_tasks"] == []
    assert run_count(api_server, EXAMPLE_DAG) == before
    assert replays(api_server, EXAMPLE_DAG, recorded_runs.example) == replays_before


def test_the_plan_from_a_task_names_the_replayed_tasks_and_the_reused_commits(
    api_server: ApiServer, recorded_runs: RecordedRuns, repro_env: dict[str, str]
) -> None:
    with api_server.client("viewer") as viewer:
        middle = viewer.get(plan_url(recorded_runs.example), params={"from_task": "train", "mode": "latest-code"})
        leaf = viewer.get(plan_url(recorded_runs.example), params={"from_task": "evaluate"})
    assert middle.status_code == 200, middle.text
    body = middle.json()
    assert (body["from_task"], body["mode"], body["blocked"]) == ("train", "latest-code", False)
    assert body["replayed_tasks"] == ["evaluate", "train"]
    recorded = commits(repro_env, recorded_runs.example)
    assert body["reused_tasks"] == [
        {"task_id": "featurize", "map_index": -1, "commit_id": recorded["featurize"]},
        {"task_id": "ingest", "map_index": -1, "commit_id": recorded["ingest"]},
    ]
    # a task with nothing downstream is a valid start: the replay runs just it
    assert leaf.status_code == 200, leaf.text
    assert leaf.json()["replayed_tasks"] == ["evaluate"]
    assert [t["task_id"] for t in leaf.json()["reused_tasks"]] == ["featurize", "ingest", "train"]


def test_the_plan_needs_authentication(api_server: ApiServer, recorded_runs: RecordedRuns) -> None:
    with api_server.client() as anonymous:
        response = anonymous.get(plan_url(recorded_runs.example), params={"from_task": "train"})
    assert response.status_code == 401 and response.json() == {"detail": "Not authenticated"}


def test_unknown_run_dag_or_task_is_404_and_a_malformed_task_id_422(
    api_server: ApiServer, recorded_runs: RecordedRuns
) -> None:
    with api_server.client("viewer") as viewer:
        unknown_run = viewer.get(plan_url("no_such_run"))
        unknown_dag = viewer.get(plan_url("r1", dag_id="no_such_dag"))
        unknown_task = viewer.get(plan_url(recorded_runs.example), params={"from_task": "trian"})
        malformed = [
            viewer.get(plan_url(recorded_runs.example), params={"from_task": bad})
            for bad in ("", "train; rm", "x" * 251)
        ]
        bad_mode = viewer.get(plan_url(recorded_runs.example), params={"mode": "fast"})
    assert unknown_run.status_code == 404
    assert f"DAG '{EXAMPLE_DAG}' has no run 'no_such_run'" in unknown_run.json()["detail"]
    assert unknown_dag.status_code == 404 and "is not known to Airflow" in unknown_dag.json()["detail"]
    assert unknown_task.status_code == 404, unknown_task.text
    detail = unknown_task.json()["detail"]
    assert "recorded no task 'trian' to replay from" in detail
    assert "its recorded tasks are: evaluate, featurize, ingest, train" in detail
    for response in [*malformed, bad_mode]:
        assert response.status_code == 422, response.text
        assert isinstance(response.json()["detail"], list)


def test_admin_replays_from_a_task_and_the_stored_plan_records_what_is_reused(
    api_server: ApiServer, recorded_runs: RecordedRuns, repro_env: dict[str, str]
) -> None:
    url = f"{API}/{EXAMPLE_DAG}/runs/{recorded_runs.example}/replay"
    before = run_count(api_server, EXAMPLE_DAG)
    with api_server.client("admin") as admin:
        response = admin.post(url, json={"from_task": "featurize"})
        assert response.status_code == 200, response.text
        body = response.json()
        dag_run = admin.get(f"/api/v2/dags/{EXAMPLE_DAG}/dagRuns/{body['replay_run_id']}")
    assert body["triggered"] is True and body["from_task"] == "featurize"
    assert body["replayed_tasks"] == ["evaluate", "featurize", "train"]
    recorded = commits(repro_env, recorded_runs.example)
    assert body["reused_tasks"] == [{"task_id": "ingest", "map_index": -1, "commit_id": recorded["ingest"]}]
    assert run_count(api_server, EXAMPLE_DAG) == before + 1
    assert dag_run.status_code == 200 and dag_run.json()["conf"][REPLAY_CONF_KEY]["plan_digest"] == body["plan_digest"]

    plan = load_plan(LocalStore(Path(repro_env["home"]) / "store"), "repro", EXAMPLE_DAG, body["replay_run_id"])
    assert plan.digest == body["plan_digest"] and plan.from_task == "featurize"
    assert [(t.task_id, t.commit_id) for t in plan.reused_tasks or []] == [("ingest", recorded["ingest"])]


@pytest.mark.parametrize(
    ("user", "body", "status"),
    [
        ("viewer", {"from_task": "train"}, 403),
        ("admin", {"from_task": "trian"}, 404),
        ("admin", {"from_task": "train; rm"}, 422),
        ("admin", {"from_task": ""}, 422),
        ("admin", {"from_task": 3}, 422),
    ],
)
def test_a_replay_from_a_task_that_cannot_start_triggers_nothing(
    api_server: ApiServer, recorded_runs: RecordedRuns, user: str, body: dict[str, Any], status: int
) -> None:
    before = run_count(api_server, EXAMPLE_DAG)
    replays_before = replays(api_server, EXAMPLE_DAG, recorded_runs.example)
    with api_server.client(user) as client:
        response = client.post(f"{API}/{EXAMPLE_DAG}/runs/{recorded_runs.example}/replay", json=body)
    assert response.status_code == status, response.text
    if status == 404:
        assert "its recorded tasks are: evaluate, featurize, ingest, train" in response.json()["detail"]
    assert run_count(api_server, EXAMPLE_DAG) == before
    assert replays(api_server, EXAMPLE_DAG, recorded_runs.example) == replays_before


SECRET_DAG = "repro_conf_secret"
SECRET = "tok-plan-secret-7a8b9c"


def test_a_plan_whose_run_needs_a_secret_says_so_without_failing_or_showing_it(api_server: ApiServer) -> None:
    dag_run = load_dag(SECRET_DAG, "repro_test_dags.py").test(run_conf={"api_token": SECRET, "size": 1})
    assert dag_run.state == "success"
    with api_server.client("viewer") as viewer:
        response = viewer.get(plan_url(dag_run.run_id, dag_id=SECRET_DAG), params={"api_token": SECRET})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["blocked"] is True and body["triggered"] is False
    (drift,) = body["drift"]
    assert drift["kind"] == "secret_missing" and drift["blocking"] is True
    assert "'api_token' is a secret" in drift["detail"] and 'API body "secrets"' in drift["detail"]
    assert SECRET not in response.text, "a secret sent on the query string is neither taken nor echoed"


def test_every_route_that_answers_a_plan_requires_read_access_to_the_dags_code() -> None:
    """A plan's drift carries diffs of the DAG's code, which Airflow guards with its own permission
    (DAG code GET): every SimpleAuthManager role holds it, so this reads the routes' requirements."""
    from airflow_repro.airflow import api, api_guards

    required = {
        (route.path, method): route.dependencies
        for route in api.router.routes
        for method in getattr(route, "methods", ())
    }
    for key in (
        ("/api/v1/dags/{dag_id}/runs/{run_id}/plan", "GET"),
        ("/api/v1/dags/{dag_id}/runs/{run_id}/replay", "POST"),
    ):
        assert api_guards.READ_CODE in required[key], key
    assert api_guards.READ_CODE not in required[("/api/v1/dags/{dag_id}/runs/{run_id}/manifest", "GET")]
