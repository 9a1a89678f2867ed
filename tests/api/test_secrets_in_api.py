"""The REST API answers with markers, never secret values, and takes a replay's secrets again."""

from __future__ import annotations

import pytest

from airflow_repro.core.redaction import is_redacted
from tests.support.airflow_session import load_dag
from tests.support.api import ApiServer

API = "/repro/api/v1/dags"
DAG = "repro_conf_secret"
SECRET = "tok-api-secret-4f5e6d"


@pytest.fixture(scope="module")
def secret_run(api_server: ApiServer) -> str:
    dag_run = load_dag(DAG, "repro_test_dags.py").test(run_conf={"api_token": SECRET, "size": 1})
    assert dag_run.state == "success"
    return dag_run.run_id


def test_a_viewer_reads_the_record_without_its_secrets(api_server: ApiServer, secret_run: str) -> None:
    with api_server.client("viewer") as viewer:
        response = viewer.get(f"{API}/{DAG}/runs/{secret_run}/manifest")
    assert response.status_code == 200, response.text
    assert SECRET not in response.text
    (task,) = response.json()["tasks"]
    conf = task["manifest"]["parameters"]["dag_run_conf"]
    assert is_redacted(conf["api_token"]) and conf["size"] == 1


def test_a_replay_names_the_missing_secret_and_takes_it_in_the_body(api_server: ApiServer, secret_run: str) -> None:
    url = f"{API}/{DAG}/runs/{secret_run}/replay"
    with api_server.client("admin") as admin:
        missing = admin.post(url, json={"dry_run": True})
        given = admin.post(url, json={"dry_run": True, "secrets": {"api_token": SECRET}})
        rotated = admin.post(url, json={"dry_run": True, "mode": "latest-code", "secrets": {"api_token": "new-tok"}})
        unknown = admin.post(url, json={"dry_run": True, "secrets": {"size": "1"}})
    assert missing.status_code == 200 and missing.json()["blocked"] is True
    assert [d["kind"] for d in missing.json()["drift"]] == ["secret_missing"]
    assert given.status_code == 200, given.text
    assert given.json()["drift"] == [] and given.json()["blocked"] is False
    assert rotated.json()["blocked"] is False and [d["kind"] for d in rotated.json()["drift"]] == ["secret_changed"]
    assert unknown.status_code == 400 and "not redacted" in unknown.json()["detail"]
    for answer in (missing, given, rotated, unknown):
        assert SECRET not in answer.text and "new-tok" not in answer.text
