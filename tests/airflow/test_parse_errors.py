"""Bad task declarations fail at DAG parse time with the task's name and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

DAG_TEMPLATE = """
from airflow.sdk import dag
from airflow_repro import Input, repro_task

@dag(dag_id="bad_{name}", schedule=None)
def bad():
    @repro_task({arguments})
    def the_task():
        pass
    the_task()

bad()
"""


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("lockfile", 'lockfile="missing.lock"', "lockfile 'missing.lock' not found.*uv pip compile"),
        ("output", 'outputs=["/abs/out.csv"]', "invalid output of task the_task '/abs/out.csv'"),
        ("ref", 'inputs={"x": Input("a.csv", ref="bad ref")}', "malformed ref 'bad ref'"),
        ("seed", "seed=-3", "task the_task: seed must be a non-negative int"),
        ("memory", 'resources={"memory": "lots"}', "the_task.*memory 'lots'"),
        ("repository", 'repository="Not_Valid"', "invalid repository name 'Not_Valid'"),
    ],
)
def test_bad_declarations_are_import_errors(
    airflow_db: Path, tmp_path: Path, name: str, arguments: str, message: str
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    dag_file = tmp_path / f"bad_{name}.py"
    dag_file.write_text(DAG_TEMPLATE.format(name=name, arguments=arguments))
    bag = DagBag(dag_folder=str(dag_file))
    assert f"bad_{name}" not in bag.dags
    (error,) = bag.import_errors.values()
    assert "the_task" in error
    import re

    assert re.search(message, error, re.S), error
