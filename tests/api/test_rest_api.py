"""The airflow-repro REST API, served by a real ``airflow api-server`` under ``/repro``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.airflow.lazy_app import LazyASGIApp
from airflow_repro.core.replay import REPLAY_CONF_KEY, load_plan
from airflow_repro.core.runs import load_run
from tests.support.api import API, EXAMPLE_DAG, SMALL_DAG, ApiServer, RecordedRuns, dag_file_edited, replays, run_count


def store(repro_env: dict[str, str]) -> LocalStore:
    return LocalStore(Path(repro_env["home"]) / "store")


# -- the plugin stays cheap in every process -----------------------------------------------------------
def test_importing_the_plugin_imports_no_web_stack(tmp_path: Path) -> None:
    code = (
        "import sys, json\n"
        "import airflow_repro.airflow.plugin as plugin\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette')\n"
        "               or m == 'airflow.api_fastapi' or m.startswith('airflow.api_fastapi.')\n"
        "               or m == 'airflow_repro.airflow.api')\n"
        "(entry,) = plugin.ReproPlugin.fastapi_apps\n"
        "print(json.dumps({'heavy': heavy, 'prefix': entry['url_prefix'], 'loaded': entry['app'].loaded}))\n"
    )
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow")}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found == {"heavy": [], "prefix": "/repro", "loaded": False}


def test_lazy_app_builds_once_and_forwards_calls() -> None:
    import asyncio

    app = LazyASGIApp("tests.api.test_rest_api:_echo_app_factory")
    assert not app.loaded and _BUILT == []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    for _ in range(2):
        asyncio.run(app({"type": "http", "path": "/x"}, receive, send))
    assert app.loaded and _BUILT == [1]
    assert sent == [{"type": "echo", "path": "/x"}] * 2
    with pytest.raises(ValueError, match="package.module:function"):
        LazyASGIApp("no_colon")


_BUILT: list[int] = []


def _echo_app_factory() -> Any:
    _BUILT.append(1)

    async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "echo", "path": scope["path"]})

    return echo


def test_errors_map_to_http_statuses() -> None:
    from airflow_repro.airflow import api
    from airflow_repro.core.replay import Drift, DriftKind, ReplayPlan
    from airflow_repro.errors import (
        ManifestError,
        ObjectNotFound,
        ReplayRefused,
        RunNotFinished,
        StoreCorruption,
        StoreUnavailable,
    )

    def answer(exc: Exception) -> tuple[int, dict[str, Any], str | None]:
        response = api._error_response(exc)
        return response.status_code, json.loads(response.body), response.headers.get("retry-after")

    assert answer(ObjectNotFound("gone")) == (404, {"detail": "gone"}, None)
    assert answer(RunNotFinished("still running")) == (409, {"detail": "still running"}, None)
    assert answer(ManifestError("bad digest")) == (400, {"detail": "bad digest"}, None)
    assert answer(StoreUnavailable("locked")) == (503, {"detail": "locked", "retryable": True}, "5")
    assert answer(StoreCorruption("hash mismatch")) == (503, {"detail": "hash mismatch", "retryable": False}, None)
    plan = ReplayPlan(
        dag_id="d",
        original_run_id="r",
        original_repository="repro",
        original_ref="t",
        replay_run_id="replay__x__of__r",
        mode="pinned",
        tasks=[],
        created_at="now",
        drift=[Drift(kind=DriftKind.ENVIRONMENT_CHANGED, task_id="t1", detail="env differs")],
    )
    status, body, _ = answer(ReplayRefused(plan))
    assert status == 409 and body["drift"][0]["kind"] == "environment_changed" and body["drift"][0]["blocking"]
    assert '{"mode": "latest-code"}' in body["detail"] and "[environment_changed] t1: env differs" in body["detail"]


# -- through the real api-server -----------------------------------------------------------------------
def test_the_plugin_app_is_mounted_and_listed(api_server: ApiServer) -> None:
    with api_server.client("viewer") as viewer:
        plugins = viewer.get("/api/v2/plugins").json()["plugins"]
        docs = viewer.get("/repro/openapi.json")
    (ours,) = [p for p in plugins if p["name"] == "airflow_repro"]
    assert ours["fastapi_apps"] == [
        {"app": "airflow_repro.airflow.lazy_app.LazyASGIApp", "url_prefix": "/repro", "name": "airflow-repro API"}
    ]
    assert ours["listeners"] == ["airflow_repro.airflow.listener"]
    assert docs.status_code == 200
    assert "/api/v1/dags/{dag_id}/runs/{run_id}/replay" in docs.json()["paths"]


def test_anonymous_requests_are_401(api_server: ApiServer, recorded_runs: RecordedRuns) -> None:
    runs = f"{API}/{EXAMPLE_DAG}/runs/{recorded_runs.example}"
    with api_server.client() as anonymous:
        responses = [
            anonymous.get(f"{runs}/manifest"),
            anonymous.get(f"{runs}/replays"),
            anonymous.post(f"{runs}/replay", json={}),
            anonymous.post(f"{runs}/replay", json={"mode": "bogus"}),  # auth comes before validation
            anonymous.post(f"{runs}/verification", json={}),
        ]
    assert [r.status_code for r in responses] == [401] * 5
    assert responses[0].json() == {"detail": "Not authenticated"}


def test_viewer_reads_the_recorded_manifests(
    api_server: ApiServer, recorded_runs: RecordedRuns, repro_env: dict[str, str]
) -> None:
    with api_server.client("viewer") as viewer:
        response = viewer.get(f"{API}/{EXAMPLE_DAG}/runs/{recorded_runs.example}/manifest")
    assert response.status_code == 200, response.text
    body = response.json()
    recorded = load_run(store(repro_env), EXAMPLE_DAG, recorded_runs.example)
    assert body["closed"] is True and body["ref"] == recorded.ref and body["head_commit"] == recorded.head_commit
    assert (body["dag_id"], body["run_id"], body["repository"]) == (EXAMPLE_DAG, recorded_runs.example, "repro")
    assert [t["task_id"] for t in body["tasks"]] == ["ingest", "featurize", "train", "evaluate"]
    for task, view in zip(body["tasks"], recorded.tasks, strict=True):
        assert task["commit_id"] == view.commit_id and task["manifest_digest"] == view.manifest.digest
        assert task["manifest"] == json.loads(view.manifest.canonical_json())
        assert (task["map_index"], task["try_number"]) == (-1, 1)
    dag_run_manifest = body["dag_run_manifest"]
    assert dag_run_manifest["state"] == "success"
    assert {t["task_id"]: t["commit_id"] for t in dag_run_manifest["tasks"]} == {
        t["task_id"]: t["commit_id"] for t in body["tasks"]
    }


def test_viewer_may_not_replay(api_server: ApiServer, recorded_runs: RecordedRuns) -> None:
    before = run_count(api_server, EXAMPLE_DAG)
    replays_before = replays(api_server, EXAMPLE_DAG, recorded_runs.example)
    with api_server.client("viewer") as viewer:
        response = viewer.post(f"{API}/{EXAMPLE_DAG}/runs/{recorded_runs.example}/replay", json={})
        verification = viewer.post(f"{API}/{EXAMPLE_DAG}/runs/{recorded_runs.example}/verification", json={})
    assert response.status_code == 403 and response.json() == {"detail": "Forbidden"}
    assert verification.status_code == 403
    assert run_count(api_server, EXAMPLE_DAG) == before
    assert replays(api_server, EXAMPLE_DAG, recorded_runs.example) == replays_before


def test_dry_run_plans_and_triggers_nothing(api_server: ApiServer, recorded_runs: RecordedRuns) -> None:
    before = run_count(api_server, EXAMPLE_DAG)
    replays_before = replays(api_server, EXAMPLE_DAG, recorded_runs.example)
    with api_server.client("admin") as admin:
        response = admin.post(f"{API}/{EXAMPLE_DAG}/runs/{recorded_runs.example}/replay", json={"dry_run": True})
        assert response.status_code == 200, response.text
        body = response.json()
        assert admin.get(f"/api/v2/dags/{EXAMPLE_DAG}/dagRuns/{body['replay_run_id']}").status_code == 404
    assert body["triggered"] is False and body["blocked"] is False and body["drift"] == []
    assert body["dry_run"] is True and body["mode"] == "pinned"
    assert run_count(api_server, EXAMPLE_DAG) == before
    assert replays(api_server, EXAMPLE_DAG, recorded_runs.example) == replays_before


def test_admin_replays_a_run_then_verifies_it(
    api_server: ApiServer, recorded_runs: RecordedRuns, repro_env: dict[str, str]
) -> None:
    runs = f"{API}/{EXAMPLE_DAG}/runs"
    with api_server.client("admin") as admin:
        response = admin.post(f"{runs}/{recorded_runs.example}/replay", json={"mode": "pinned"})
        assert response.status_code == 200, response.text
        body = response.json()
        replay_id = body["replay_run_id"]
        dag_run = admin.get(f"/api/v2/dags/{EXAMPLE_DAG}/dagRuns/{replay_id}")
    assert body["triggered"] is True and body["drift"] == [] and body["original_run_id"] == recorded_runs.example
    assert replay_id.startswith("replay__") and replay_id.endswith(f"__of__{recorded_runs.example}")

    # a queued Airflow run, triggered by the authenticated user, that knows it is a replay
    assert dag_run.status_code == 200, dag_run.text
    run = dag_run.json()
    assert run["state"] == "queued" and run["triggered_by"] == "rest_api" and run["triggering_user_name"] == "admin"
    assert run["conf"][REPLAY_CONF_KEY]["of"] == recorded_runs.example
    assert run["conf"][REPLAY_CONF_KEY]["plan_digest"] == body["plan_digest"]

    # the plan is stored on the replay's branch, and the replay is listed
    plan = load_plan(store(repro_env), "repro", EXAMPLE_DAG, replay_id)
    assert plan.digest == body["plan_digest"] and plan.original_run_id == recorded_runs.example
    (listed,) = [r for r in replays(api_server, EXAMPLE_DAG, recorded_runs.example) if r["replay_run_id"] == replay_id]
    assert listed["replay_run_id"] == replay_id and listed["drift_count"] == 0 and listed["state"] == "queued"
    assert listed["mode"] == "pinned" and listed["created_at"] == plan.created_at

    with api_server.client("admin") as admin:
        # nothing verified yet: 404 that says how to verify
        missing = admin.get(f"{runs}/{replay_id}/verification")
        assert missing.status_code == 404
        assert "no verification report is stored" in missing.json()["detail"]
        assert f"POST /repro/api/v1/dags/{EXAMPLE_DAG}/runs/{replay_id}/verification" in missing.json()["detail"]
        # still queued: 409
        queued = admin.post(f"{runs}/{replay_id}/verification", json={})
        assert queued.status_code == 409 and "queued" in queued.json()["detail"]
        assert admin.post(f"{runs}/{replay_id}/verification", json={"abs_tol": -1}).status_code == 422
        for field, bad in (("rel_tol", '"1e-5"'), ("abs_tol", "NaN"), ("rel_tol", "-0.1")):  # not a JSON number >= 0
            refused = admin.post(
                f"{runs}/{replay_id}/verification",
                content=f'{{"{field}": {bad}}}'.encode(),
                headers={"Content-Type": "application/json"},
            )
            assert refused.status_code == 422 and refused.json()["detail"][0]["loc"][-1] == field, refused.text
        # the original run is not a replay
        original = admin.post(f"{runs}/{recorded_runs.example}/verification", json={})
        assert original.status_code == 404 and "is not a replay" in original.json()["detail"]
        # no scheduler here: end the replay by hand; it recorded nothing, so every task is missing
        ended = admin.patch(f"/api/v2/dags/{EXAMPLE_DAG}/dagRuns/{replay_id}", json={"state": "failed"})
        assert ended.status_code == 200, ended.text
        verified = admin.post(f"{runs}/{replay_id}/verification", json={"abs_tol": 0.5, "rel_tol": 0})
        assert verified.status_code == 200, verified.text
        stored = admin.get(f"{runs}/{replay_id}/verification")
    report = verified.json()
    assert report["verdict"] == "differs" and report["tolerance"] == {"abs": 0.5, "rel": 0.0}
    assert report["object_tolerance"] == {"abs_tol": 0.5, "rel_tol": 0.0}  # the same override for every output
    assert {t["task_id"]: t["status"] for t in report["tasks"]} == dict.fromkeys(
        ["ingest", "featurize", "train", "evaluate"], "missing"
    )
    assert stored.status_code == 200 and stored.json() == report


def test_unknown_dag_or_run_is_404(api_server: ApiServer, recorded_runs: RecordedRuns) -> None:
    with api_server.client("admin") as admin:
        unknown_dag = [
            admin.get(f"{API}/no_such_dag/runs/r1/manifest"),
            admin.get(f"{API}/no_such_dag/runs/r1/replays"),
            admin.post(f"{API}/no_such_dag/runs/r1/replay", json={}),
            admin.get(f"{API}/no_such_dag/runs/r1/verification"),
        ]
        unknown_run = [
            admin.get(f"{API}/{EXAMPLE_DAG}/runs/no_such_run/manifest"),
            admin.get(f"{API}/{EXAMPLE_DAG}/runs/no_such_run/replays"),
            admin.post(f"{API}/{EXAMPLE_DAG}/runs/no_such_run/replay", json={}),
            admin.post(f"{API}/{EXAMPLE_DAG}/runs/no_such_run/verification", json={}),
        ]
    for response in unknown_dag:
        assert response.status_code == 404, response.text
        assert "DAG 'no_such_dag' is not known to Airflow" in response.json()["detail"]
    for response in unknown_run:
        assert response.status_code == 404, response.text
        assert f"DAG '{EXAMPLE_DAG}' has no run 'no_such_run'" in response.json()["detail"]


@pytest.mark.parametrize("body", [{"mode": "bogus"}, {"mode": "pinned", "wait": True}, {"dry_run": "maybe"}])
def test_invalid_bodies_are_422(api_server: ApiServer, recorded_runs: RecordedRuns, body: dict[str, Any]) -> None:
    before = run_count(api_server, EXAMPLE_DAG)
    with api_server.client("admin") as admin:
        response = admin.post(f"{API}/{EXAMPLE_DAG}/runs/{recorded_runs.example}/replay", json=body)
    assert response.status_code == 422, response.text
    assert run_count(api_server, EXAMPLE_DAG) == before


def test_changed_params_refuse_the_replay_in_every_mode(api_server: ApiServer, recorded_runs: RecordedRuns) -> None:
    url = f"{API}/{SMALL_DAG}/runs/{recorded_runs.small}/replay"
    before = run_count(api_server, SMALL_DAG)
    with dag_file_edited('params={"factor": 2}', 'params={"factor": 30}'), api_server.client("admin") as admin:
        pinned = admin.post(url, json={"mode": "pinned"})
        latest = admin.post(url, json={"mode": "latest-code"})
        dry = admin.post(url, json={"mode": "latest-code", "dry_run": True})
    for response in (pinned, latest):
        assert response.status_code == 409, response.text
        body = response.json()
        assert "pin(s) no longer hold, nothing was triggered" in body["detail"]
        assert "No mode can replay it" in body["detail"] and "params ['factor']" in body["detail"]
        (drift,) = [d for d in body["drift"] if d["kind"] == "params_changed"]
        assert drift["task_id"] == "scale" and drift["blocking"] is True
        # the DAG file changed too: its code drifted, which a pinned replay would restore
        assert {(d["kind"], d["blocking"]) for d in body["drift"] if d is not drift} == {("code_changed", False)}
        assert json.loads(drift["recorded"]) == {"factor": 2} and json.loads(drift["current"]) == {"factor": 30}
    assert dry.status_code == 200 and dry.json()["blocked"] is True and dry.json()["triggered"] is False
    assert run_count(api_server, SMALL_DAG) == before
    assert replays(api_server, SMALL_DAG, recorded_runs.small) == []


def test_changed_code_is_restored_by_a_pinned_replay(api_server: ApiServer, recorded_runs: RecordedRuns) -> None:
    url = f"{API}/{SMALL_DAG}/runs/{recorded_runs.small}/replay"
    with dag_file_edited('params["factor"] * 21', 'params["factor"] * 21 + 0'), api_server.client("admin") as admin:
        dry = admin.post(url, json={"dry_run": True})  # the defaults (mode pinned)
        pinned = admin.post(url, json={})
        assert pinned.status_code == 200, pinned.text
        latest = admin.post(url, json={"mode": "latest-code"})
        assert latest.status_code == 200, latest.text
        triggered = admin.get(f"/api/v2/dags/{SMALL_DAG}/dagRuns/{pinned.json()['replay_run_id']}")
    (drift,) = dry.json()["drift"]
    assert (drift["kind"], drift["blocking"], drift["restorable"]) == ("code_changed", False, True)
    assert "archived code snapshot" in drift["restore_note"]
    assert (
        '+        runtime.current().output_path("out.txt").write_text(str(params["factor"] * 21 + 0))' in drift["diff"]
    )
    assert "/tmp/" not in drift["diff"] and "/tmp/" not in drift["restore_note"], "no server folder in answers"
    assert dry.json()["blocked"] is False and dry.json()["triggered"] is False
    assert pinned.json()["triggered"] is True and latest.json()["triggered"] is True
    assert [(d["kind"], d["blocking"]) for d in latest.json()["drift"]] == [("code_changed", False)]
    assert triggered.status_code == 200 and triggered.json()["state"] == "queued"
    listed = replays(api_server, SMALL_DAG, recorded_runs.small)
    assert sorted(r["mode"] for r in listed) == ["latest-code", "pinned"]
