"""One JSON shape for a recorded run: `airflow-repro show --json` prints what the REST API answers."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from airflow_repro.cli import main
from tests.api.conftest import EXAMPLE_DAG, ApiServer, RecordedRuns


def test_show_json_and_the_api_answer_the_same_document(
    api_server: ApiServer, recorded_runs: RecordedRuns, repro_env: dict[str, str]
) -> None:
    with api_server.client("viewer") as viewer:
        answer = viewer.get(f"/repro/api/v1/dags/{EXAMPLE_DAG}/runs/{recorded_runs.example}/manifest")
    assert answer.status_code == 200, answer.text
    shown = CliRunner().invoke(
        main, ["show", EXAMPLE_DAG, recorded_runs.example, "--json", "--home", str(Path(repro_env["home"]))]
    )
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output) == answer.json()
    assert answer.json()["dag_run_manifest"]["state"] == "success"
