"""A replay from a later task starts no pod for the tasks it reuses: through the real operator
and the fake Kubernetes API."""

from __future__ import annotations

import pytest

from airflow_repro.core.replay import plan_replay, replay_run_id
from airflow_repro.core.runs import load_run
from tests.kubernetes.fake_cluster import FakeCoreV1Api
from tests.support.airflow_session import load_dag, run_replay
from tests.support.kubernetes import current_pod_tasks

pytestmark = pytest.mark.usefixtures("repro_env")


def test_a_reused_pod_task_starts_no_pod_and_its_downstream_reads_the_recorded_data(
    fake_cluster: FakeCoreV1Api,
) -> None:
    from airflow_repro.airflow import replay as service

    dag = load_dag("k8s_record", "k8s_test_dags.py")
    original = dag.test()
    assert original.state == "success"
    backends = service.Backends.from_airflow_conf()
    recorded = load_run(backends.store, dag.dag_id, original.run_id)
    current = current_pod_tasks(dag, scale=3)
    plan = plan_replay(
        recorded,
        current,
        backends.store,
        mode="pinned",
        replay_run_id=replay_run_id(original.run_id),
        from_task="total",
        downstream={t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks},
    )
    assert plan.blocking_drift == [] and [t.task_id for t in plan.reused_tasks or []] == ["produce"]
    fake_cluster.created.clear()
    assert run_replay(dag, plan, backends).state == "success"

    started = [b["metadata"]["name"] for b in fake_cluster.created]
    assert not [name for name in started if "produce" in name], started
    assert [name for name in started if "total" in name], "the replayed task ran in its pod"
    before = {t.manifest.identity.task_id: t for t in recorded.tasks}
    replayed = {
        t.manifest.identity.task_id: t.manifest for t in load_run(backends.store, dag.dag_id, plan.replay_run_id).tasks
    }
    produce = replayed["produce"]
    assert produce.replay is not None and produce.replay.reused_from is not None
    assert produce.replay.reused_from.commit_id == before["produce"].commit_id
    assert produce.kubernetes is None and produce.outputs == before["produce"].manifest.outputs
    assert replayed["total"].inputs == before["total"].manifest.inputs
    report = service.verify(backends, dag.dag_id, plan.replay_run_id)
    assert report.verdict == "identical"
    assert {t.task_id: t.reused for t in report.tasks} == {"produce": True, "total": False}
