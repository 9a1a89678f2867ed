"""Secrets planted everywhere a user puts them are in no sink: store, MLflow, lineage, logs, XCom.

Conf and params with sensitive keys, a URL with credentials, a connection password and extra, a
Variable and an environment variable, all used by a recorded task run for real (``dag.test()``
with a real MLflow server and the OpenLineage provider's file transport). Only names and keyed
markers may be recorded; the task itself must still get every value.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from airflow_repro.core.redaction import is_redacted
from airflow_repro.core.runs import load_run
from tests.support.airflow_session import DAGS_FOLDER, SESSION_HOME, load_dag
from tests.support.openlineage import openlineage_enabled, read_events

pytestmark = pytest.mark.usefixtures("repro_env")

SECRETS = {
    "conf_password": "CONF-PASSWORD-1b2c3d",
    "conf_token": "CONF-TOKEN-9d8e7f",
    "conf_url_password": "URL-PASSWORD-5a6b7c",
    "param_password": "PARAM-PASSWORD-7f3a9c",
    "param_url_token": "PARAM-URLTOKEN-4e4e4e",
    "conn_password": "CONN-PASSWORD-2f2f2f",
    "conn_extra_key": "CONN-APIKEY-8c8c8c",
    "variable": "VARIABLE-SECRET-6d6d6d",
    "env": "ENV-SECRET-3a3a3a",
}

DAG_FILE = DAGS_FOLDER / "repro_secret_dags.py"
DAG_FILE.write_text(f'''"""A recorded task that is given secrets every way a user gives them."""
import hashlib
import os

from airflow.sdk import BaseHook, Variable, dag

from airflow_repro import repro_task, runtime


@dag(dag_id="repro_secrets", schedule=None,
     params={{"db_password": "{SECRETS["param_password"]}",
             "service_url": "https://hooks.example.com/x?token={SECRETS["param_url_token"]}", "size": 3}})
def repro_secrets():
    @repro_task(outputs=["received.txt"], seed=1,
                secret_names=["repro_secret_conn", "repro_db_password", "REPRO_ENV_SECRET"])
    def uses_secrets(token, params=None, dag_run=None):
        conn = BaseHook.get_connection("repro_secret_conn")
        seen = [dag_run.conf["password"], dag_run.conf["api_token"], dag_run.conf["db_url"],
                params["db_password"], params["service_url"], token, conn.extra_dejson["api_key"],
                Variable.get("repro_db_password"), os.environ["REPRO_ENV_SECRET"]]
        print("the task ran with", len(seen), "secrets")
        # proves the task got the real values without writing any of them anywhere
        digest = hashlib.sha256("|".join(seen).encode()).hexdigest()
        runtime.current().output_path("received.txt").write_text(digest)

    uses_secrets(token="{{{{ conn.repro_secret_conn.password }}}}")


repro_secrets()
''')


def test_secrets_reach_the_task_and_no_sink(
    repro_env: dict[str, str],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_REPRO_SECRET_CONN",
        json.dumps(
            {
                "conn_type": "http",
                "host": "api.example.com",
                "login": "svc",
                "password": SECRETS["conn_password"],
                "extra": {"api_key": SECRETS["conn_extra_key"]},
            }
        ),
    )
    monkeypatch.setenv("AIRFLOW_VAR_REPRO_DB_PASSWORD", SECRETS["variable"])
    monkeypatch.setenv("REPRO_ENV_SECRET", SECRETS["env"])
    conf = {
        "password": SECRETS["conf_password"],
        "api_token": SECRETS["conf_token"],
        "db_url": f"postgresql://svc:{SECRETS['conf_url_password']}@db:5432/x",
        "size": 2,
    }
    events_file = tmp_path / "events.jsonl"
    dag = load_dag("repro_secrets", DAG_FILE.name)
    with openlineage_enabled({"type": "file", "log_file_path": str(events_file), "append": True}):
        dag_run = dag.test(run_conf=conf)
    assert dag_run.state == "success"

    # the task was given every value
    expected = hashlib.sha256(
        "|".join(
            [
                SECRETS["conf_password"],
                SECRETS["conf_token"],
                conf["db_url"],
                SECRETS["param_password"],
                f"https://hooks.example.com/x?token={SECRETS['param_url_token']}",
                SECRETS["conn_password"],
                SECRETS["conn_extra_key"],
                SECRETS["variable"],
                SECRETS["env"],
            ]
        ).encode()
    ).hexdigest()
    home = Path(repro_env["home"])
    from airflow_repro.adapters.local_store import LocalStore

    run = load_run(LocalStore(home / "store"), dag.dag_id, dag_run.run_id)
    (task,) = run.tasks
    with LocalStore(home / "store").open_object("repro", task.commit_id, "received.txt") as handle:
        assert handle.read().decode() == expected

    # recorded: names and markers only; what is not secret stays readable
    parameters = task.manifest.parameters
    assert all(is_redacted(parameters.dag_run_conf[k]) for k in ("password", "api_token", "db_url"))
    assert parameters.dag_run_conf["size"] == 2 and parameters.task_params["size"] == 2  # conf overrides params
    assert is_redacted(parameters.task_params["db_password"]) and is_redacted(parameters.task_params["service_url"])
    assert is_redacted(parameters.op_kwargs["token"])
    assert parameters.secret_names == ["REPRO_ENV_SECRET", "repro_db_password", "repro_secret_conn"]

    sinks = {
        "the store": _files(home / "store"),
        "MLflow (database and artifacts)": [
            p for d in tmp_path_factory.getbasetemp().glob("mlflow-server*") for p in _files(d)
        ],
        "OpenLineage events": [events_file],
        "workspaces left behind": _files(home / "work"),
        "Airflow's task logs": _files(SESSION_HOME / "airflow" / "logs"),
    }
    events = read_events(events_file)
    assert any(e.get("eventType") == "COMPLETE" for e in events)
    output = capfd.readouterr()
    assert "the task ran with 9 secrets" in output.out + output.err
    leaks = [
        f"{name} in {where}"
        for where, files in sinks.items()
        for path in files
        for name, value in SECRETS.items()
        if value.encode() in path.read_bytes()
    ]
    leaks += [f"{name} in the task's output" for name, value in SECRETS.items() if value in output.out + output.err]
    leaks += [f"{name} in XCom" for name, value in SECRETS.items() if value in _xcom_text(dag.dag_id, dag_run.run_id)]
    assert leaks == []


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _xcom_text(dag_id: str, run_id: str) -> str:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(XComModel.value).where(XComModel.dag_id == dag_id, XComModel.run_id == run_id)
        ).all()
    return json.dumps([str(r) for r in rows])
