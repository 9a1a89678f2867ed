"""Mapped repro tasks are recorded per map index and replayed like any other; a change in the
number of instances is its own drift; plain tasks between recorded ones are named, not hidden."""

from __future__ import annotations

import pytest

from airflow_repro.airflow import replay as service
from airflow_repro.core.replay import DriftKind
from airflow_repro.core.runs import load_run
from tests.support.airflow_session import DAGS_FOLDER, load_dag, run_replay

pytestmark = pytest.mark.usefixtures("repro_env")

DAG_ID = "repro_mapped"
MAPPED_DAG = """
from airflow.sdk import dag, task
from airflow_repro import repro_task, runtime

@dag(dag_id="repro_mapped", schedule=None)
def repro_mapped():
    @repro_task(outputs=["shards/{{map_index}}.txt"], seed=5)
    def shard(n: int, factor: int):
        ctx = runtime.current()
        ctx.output_path(f"shards/{{ctx.map_index}}.txt").write_text(str(n * factor))
        return n * factor

    @task
    def plain(values):  # not recorded: named in the plan
        return sum(values)

    plain(shard.partial(factor=2).expand(n={shards}))

repro_mapped()
"""


def write_dag(shards: str = "[1, 2, 3]") -> None:
    (DAGS_FOLDER / "repro_mapped.py").write_text(MAPPED_DAG.format(shards=shards))


@pytest.fixture
def recorded() -> tuple[service.Backends, str]:
    write_dag()
    run = load_dag(DAG_ID, "repro_mapped.py").test()
    assert run.state == "success"
    return service.Backends.from_airflow_conf(), run.run_id


def test_a_mapped_task_replays_pinned_per_map_index_and_verifies_identical(
    recorded: tuple[service.Backends, str],
) -> None:
    backends, run_id = recorded
    stored = load_run(backends.store, DAG_ID, run_id)
    assert sorted(t.manifest.identity.map_index for t in stored.tasks) == [0, 1, 2]
    plan = service.plan(backends, DAG_ID, run_id, "pinned")
    assert plan.drift == [], plan.drift
    assert sorted((p.task_id, p.map_index) for p in plan.tasks) == [("shard", 0), ("shard", 1), ("shard", 2)]
    assert plan.unrecorded_tasks == ["plain"]
    assert run_replay(load_dag(DAG_ID, "repro_mapped.py"), plan, backends).state == "success"
    report = service.verify(backends, DAG_ID, plan.replay_run_id)
    assert report.verdict == "identical"
    assert sorted((t.task_id, t.map_index, t.status) for t in report.tasks) == [
        ("shard", i, "identical") for i in range(3)
    ]
    assert all(t.objects_compared == 1 for t in report.tasks), "each map index wrote its own shard"


def test_another_number_of_mapped_instances_is_drift_named_once(recorded: tuple[service.Backends, str]) -> None:
    backends, run_id = recorded
    write_dag("[1, 2, 3, 4]")
    plan = service.plan(backends, DAG_ID, run_id, "pinned")
    counts = [d for d in plan.drift if d.kind is DriftKind.MAP_COUNT_CHANGED]
    assert len(counts) == 1 and counts[0].task_id == "shard"
    assert (counts[0].recorded, counts[0].current) == ("3", "4") and "mapped over 3" in counts[0].detail
    assert counts[0] in plan.blocking_drift
    code = [d for d in plan.drift if d.kind is DriftKind.CODE_CHANGED]
    assert len(code) == 1, "one drift item per task, not one per map index"
    assert not service.plan(backends, DAG_ID, run_id, "latest-code").blocking_drift


def test_the_dag_run_manifest_names_the_tasks_that_were_not_recorded(recorded: tuple[service.Backends, str]) -> None:
    from airflow_repro.core.runs import run_document

    backends, run_id = recorded
    document = run_document(backends.store, load_run(backends.store, DAG_ID, run_id))
    assert document.dag_run_manifest is not None
    unrecorded = document.dag_run_manifest.unrecorded_tasks
    assert [(t.task_id, t.map_index, t.state) for t in unrecorded or []] == [("plain", -1, "success")]
    assert sorted(e.map_index for e in document.dag_run_manifest.tasks) == [0, 1, 2]


def test_show_and_the_replay_report_name_the_tasks_that_were_not_recorded(
    recorded: tuple[service.Backends, str],
) -> None:
    from click.testing import CliRunner

    from airflow_repro.cli import main

    _backends, run_id = recorded
    shown = CliRunner().invoke(main, ["show", DAG_ID, run_id])
    assert shown.exit_code == 0, shown.output
    assert "not recorded (a replay re-runs them with whatever they read then): plain (success)" in shown.output
    planned = CliRunner().invoke(main, ["replay", DAG_ID, run_id, "--dry-run"])
    assert planned.exit_code == 0, planned.output
    assert "not recorded (re-run on replay with whatever they read then): plain" in planned.output
