"""Replays from a task, in real Airflow (``dag.test()``): the reused tasks' code does not run,
their recorded outputs are committed to the replay's branch, the replayed tasks read the
recorded data at its original commits, and verify says which tasks were reused.

Which task code ran is proven by side-effect files the tasks write outside the store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from airflow_repro.airflow import replay as service
from airflow_repro.cli import main
from airflow_repro.core.manifest import ReusedFrom
from airflow_repro.core.runs import StoredRun, load_run
from tests.support.airflow_session import DAGS_FOLDER, load_dag, run_replay

pytestmark = pytest.mark.usefixtures("repro_env")

DAG_ID = "repro_from_task"
FILE = "repro_from_task.py"
DAG = """
import random
from pathlib import Path

from airflow.sdk import dag
from airflow_repro import Input, repro_task, runtime

RAN = Path({ran!r})


def ran(name):
    with RAN.open("a") as handle:
        handle.write(name + "\\n")


@dag(dag_id="repro_from_task", schedule=None)
def repro_from_task():
    @repro_task(outputs=["raw.txt"], seed=1)
    def extract():
        ran("extract")
        runtime.current().output_path("raw.txt").write_text("1,2,3")
        return [1, 2]

    @repro_task(outputs=["shards/{{map_index}}.txt"], seed=2)
    def shard(n: int):
        ran(f"shard {{n}}")
        ctx = runtime.current()
        ctx.output_path(f"shards/{{ctx.map_index}}.txt").write_text(str(n * 10))
        return n * 10

    @repro_task(inputs={{"raw": Input("raw.txt"), "first": Input("shards/0.txt")}}, outputs=["model.txt"], seed=3)
    def train():
        ran("train")
        ctx = runtime.current()
        raw, first = ctx.input_path("raw").read_text(), ctx.input_path("first").read_text()
        ctx.output_path("model.txt").write_text(f"{{raw}}|{{first}}|{{random.random()}}")

    @repro_task(inputs={{"model": Input("model.txt")}}, outputs=["report.txt"], seed=4)
    def evaluate():
        ran("evaluate")
        ctx = runtime.current()
        ctx.output_path("report.txt").write_text("report of " + ctx.input_path("model").read_text())

    shard.expand(n=extract()) >> train() >> evaluate()


repro_from_task()
"""


@pytest.fixture
def ran_file(tmp_path: Path) -> Path:
    return tmp_path / "ran.txt"


@pytest.fixture
def recorded(ran_file: Path) -> tuple[service.Backends, str]:
    (DAGS_FOLDER / FILE).write_text(DAG.format(ran=str(ran_file)))
    run = load_dag(DAG_ID, FILE).test()
    assert run.state == "success"
    assert sorted(ran_file.read_text().split("\n")[:-1]) == ["evaluate", "extract", "shard 1", "shard 2", "train"]
    ran_file.unlink()
    return service.Backends.from_airflow_conf(), run.run_id


def replay_from(backends: service.Backends, run_id: str, from_task: str) -> tuple[Any, StoredRun]:
    plan = service.plan(backends, DAG_ID, run_id, "pinned", from_task=from_task)
    assert plan.blocking_drift == [], plan.drift
    dag_run = run_replay(load_dag(DAG_ID, FILE), plan, backends)
    assert dag_run.state == "success"
    assert {ti.state for ti in dag_run.get_task_instances()} == {"success"}, "reused tasks read as succeeded"
    return plan, load_run(backends.store, DAG_ID, plan.replay_run_id)


def by_task(run: StoredRun) -> dict[tuple[str, int], Any]:
    return {(t.manifest.identity.task_id, t.manifest.identity.map_index): t for t in run.tasks}


def test_a_replay_from_a_middle_task_reuses_the_upstream_without_running_its_code(
    recorded: tuple[service.Backends, str], ran_file: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    backends, run_id = recorded
    original = by_task(load_run(backends.store, DAG_ID, run_id))
    capfd.readouterr()
    plan, replay = replay_from(backends, run_id, "train")
    logged = capfd.readouterr().out
    commit = original[("extract", -1)].commit_id
    assert f"airflow-repro: task reused from run {run_id} at commit {commit}" in logged, "the task's log says so"
    assert plan.replayed_task_ids == ["evaluate", "train"]
    assert [(t.task_id, t.map_index) for t in plan.reused_tasks or []] == [("extract", -1), ("shard", 0), ("shard", 1)]

    assert sorted(ran_file.read_text().split("\n")[:-1]) == ["evaluate", "train"], "no reused task's code ran"
    replayed = by_task(replay)
    assert set(replayed) == set(original), "every task has its manifest in the replay"
    for key in (("extract", -1), ("shard", 0), ("shard", 1)):
        info = replayed[key].manifest.replay
        assert info is not None and info.reused_from == ReusedFrom(run_id=run_id, commit_id=original[key].commit_id)
        assert replayed[key].manifest.outputs == original[key].manifest.outputs
    for key in (("train", -1), ("evaluate", -1)):
        info = replayed[key].manifest.replay
        assert info is not None and info.reused_from is None
    # train read the recorded data of extract and shard 0 at the very commit the original train read
    assert replayed[("train", -1)].manifest.inputs == original[("train", -1)].manifest.inputs
    assert {i.commit_id for i in original[("train", -1)].manifest.inputs} != {replay.head_commit}

    report = service.verify(backends, DAG_ID, plan.replay_run_id)
    assert report.verdict == "identical"
    assert {(t.task_id, t.map_index): t.reused for t in report.tasks} == {
        ("extract", -1): True,
        ("shard", 0): True,
        ("shard", 1): True,
        ("train", -1): False,
        ("evaluate", -1): False,
    }
    shown = CliRunner().invoke(main, ["verify", DAG_ID, plan.replay_run_id, "--stored"])
    assert shown.exit_code == 0, shown.output
    assert "extract: identical (1 objects compared, reused: not run)" in shown.output
    assert "train: identical (1 objects compared)" in shown.output


def test_a_mapped_start_task_replays_every_instance_expanded_from_the_reused_upstreams_value(
    recorded: tuple[service.Backends, str], ran_file: Path
) -> None:
    backends, run_id = recorded
    plan, replay = replay_from(backends, run_id, "shard")
    assert plan.replayed_task_ids == ["evaluate", "shard", "train"]
    assert [t.task_id for t in plan.reused_tasks or []] == ["extract"]
    assert sorted(ran_file.read_text().split("\n")[:-1]) == ["evaluate", "shard 1", "shard 2", "train"]
    assert sorted(by_task(replay)) == [("evaluate", -1), ("extract", -1), ("shard", 0), ("shard", 1), ("train", -1)]
    assert service.verify(backends, DAG_ID, plan.replay_run_id).verdict == "identical"


def test_the_cli_plans_from_a_task_and_refuses_an_unknown_one(recorded: tuple[service.Backends, str]) -> None:
    _backends, run_id = recorded
    planned = CliRunner().invoke(main, ["replay", DAG_ID, run_id, "--from-task", "train", "--dry-run"])
    assert planned.exit_code == 0, planned.output
    assert "replay from task train: replayed evaluate, train" in planned.output
    assert "reused (recorded outputs, not run): extract at " in planned.output and "shard[1] at " in planned.output

    unknown = CliRunner().invoke(main, ["replay", DAG_ID, run_id, "--from-task", "trian", "--dry-run"])
    assert unknown.exit_code == 2, unknown.output
    assert "recorded no task 'trian' to replay from" in unknown.output
    assert "its recorded tasks are: evaluate, extract, shard, train" in unknown.output
