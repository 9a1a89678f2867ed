"""Verify explains a difference, in process: real DAG runs and replays (``dag.test()``), the
stored report and the MLflow tags of the replayed task."""

from __future__ import annotations

import pytest

from airflow_repro.airflow import replay as service
from airflow_repro.core import metadata_keys as keys
from airflow_repro.core.comparison import Tolerance as ObjectTolerance
from airflow_repro.core.runs import load_run
from airflow_repro.core.verify import Tolerance
from tests.support.airflow_session import load_dag, run_replay

pytestmark = pytest.mark.usefixtures("repro_env")


def test_an_unseeded_perturbation_below_the_tolerance_is_equivalent_above_it_differs_naming_the_cell(
    repro_env: dict[str, str],
) -> None:
    dag = load_dag("repro_float_noise", "repro_verify_dags.py")
    original = dag.test()
    backends = service.Backends.from_airflow_conf()
    recorded = load_run(backends.store, dag.dag_id, original.run_id)
    outputs = {o.path: o for o in recorded.tasks[0].manifest.outputs}
    assert outputs["metrics.csv"].tolerance == ObjectTolerance(abs_tol=1e-6) and outputs["stable.txt"].tolerance is None
    plan = service.plan(backends, dag.dag_id, original.run_id, "pinned")
    assert run_replay(dag, plan, backends).state == "success"

    report = service.verify(backends, dag.dag_id, plan.replay_run_id)
    assert report.verdict == "equivalent"
    (task,) = report.tasks
    assert task.status == "equivalent" and task.objects_compared == 2
    (difference,) = task.objects  # stable.txt is identical: decided by its hash
    assert difference.path == "metrics.csv" and difference.tolerance_source == "declared"
    comparison = difference.comparison
    assert comparison is not None and (comparison.verdict, comparison.format) == ("equivalent", "csv")
    assert 0 < (comparison.max_abs_deviation or 0) < 1e-9  # two draws of [1e-9, 2e-9) differ by less than 1e-9
    assert [c.kind for c in task.likely_causes] == ["nondeterministic"]
    assert service.stored_report(backends, dag.dag_id, plan.replay_run_id) == report

    import mlflow

    run_id = load_run(backends.store, dag.dag_id, plan.replay_run_id).tasks[0].manifest.tracking.mlflow_run_id
    tags = mlflow.MlflowClient(repro_env["mlflow"]).get_run(run_id).data.tags
    assert tags[keys.MLFLOW_VERDICT] == tags[keys.MLFLOW_TASK_VERDICT] == "equivalent"
    assert (
        tags[keys.MLFLOW_VERIFY_SUMMARY].startswith("metrics.csv: ")
        and "nondeterministic" in tags[keys.MLFLOW_VERIFY_CAUSES]
    )

    # the same replay judged within a tolerance below the perturbation: differs, naming the cell
    strict = service.verify(backends, dag.dag_id, plan.replay_run_id, Tolerance(abs=1e-12))
    assert strict.verdict == "differs" and strict.object_tolerance == ObjectTolerance(abs_tol=1e-12)
    comparison = strict.tasks[0].objects[0].comparison
    assert comparison is not None and comparison.verdict == "differs"
    (row,) = comparison.details["first_differing_rows"]
    assert row["row"] == 2 and list(row["cells"]) == ["loss"]
    assert row["cells"]["loss"]["original"].startswith("0.75000000")


def test_repeat_on_an_unseeded_task_reports_intrinsic_nondeterminism(repro_env: dict[str, str]) -> None:
    dag = load_dag("repro_noisy_after_prepare", "repro_verify_dags.py")
    original = dag.test()
    backends = service.Backends.from_airflow_conf()
    plan = service.plan(backends, dag.dag_id, original.run_id, "pinned")
    assert run_replay(dag, plan, backends).state == "success"
    report = service.verify(backends, dag.dag_id, plan.replay_run_id)
    assert report.verdict == "differs"
    assert [(t.task_id, t.status) for t in report.tasks] == [("prepare", "identical"), ("noisy", "differs")]
    (cause,) = report.tasks[1].likely_causes
    assert cause.kind == "nondeterministic" and "--repeat" in cause.detail
    comparison = report.tasks[1].objects[0].comparison
    assert comparison is not None and comparison.format == "bytes"  # noise.bin: no format of its own

    repeated = service.repeat(backends, report, 2, lambda again: run_replay(dag, again, backends).run_id)
    assert repeated.repeats is not None and len(repeated.repeats.runs) == 2
    (task,) = repeated.repeats.tasks
    assert (task.task_id, task.conclusion, task.replays) == ("noisy", "intrinsic_nondeterminism", 3)
    assert task.distinct_outcomes == 3 and task.agrees_with_original == 0
    # the repeats started from the differing task: prepare's recorded outputs were reused, not run again
    assert "from task noisy" in (repeated.repeats.note or "")
    for run_id in repeated.repeats.runs:
        tasks = {t.manifest.identity.task_id: t.manifest for t in load_run(backends.store, dag.dag_id, run_id).tasks}
        assert tasks["prepare"].replay is not None and tasks["prepare"].replay.reused_from is not None
        assert tasks["noisy"].replay is not None and tasks["noisy"].replay.reused_from is None
    assert service.stored_report(backends, dag.dag_id, plan.replay_run_id).repeats == repeated.repeats


def test_declared_tolerances_are_checked_when_the_dag_is_parsed() -> None:
    from airflow_repro import Output, ReproPythonOperator
    from airflow_repro.errors import ReproUserError

    operator = ReproPythonOperator(
        task_id="t", python_callable=lambda: None, outputs={"m.csv": Output(abs_tol=1e-3), "log.txt": None}
    )
    assert operator.repro_spec.outputs == ("m.csv", "log.txt")
    assert operator.repro_spec.tolerance_for("m.csv") == ObjectTolerance(abs_tol=1e-3)
    assert operator.repro_spec.tolerance_for("log.txt") is None
    with pytest.raises(ReproUserError, match=r"output 'm.csv' must map to airflow_repro.Output\(abs_tol=\.\.\."):
        ReproPythonOperator(task_id="t2", python_callable=lambda: None, outputs={"m.csv": 1e-3})
    with pytest.raises(ReproUserError, match=r"abs_tol must be a finite number >= 0, got -0.1"):
        ReproPythonOperator(task_id="t3", python_callable=lambda: None, outputs={"m.csv": Output(abs_tol=-0.1)})


def test_a_pod_task_declares_tolerances_the_same_way() -> None:
    from airflow_repro import Output, ReproKubernetesPodOperator
    from tests.support.kubernetes import IMAGE

    operator = ReproKubernetesPodOperator(
        task_id="train", namespace="ml", image=IMAGE, cmds=["true"], outputs={"models/": Output(rel_tol=1e-5)}
    )
    assert operator.repro_spec.outputs == ("models/",)
    assert operator.repro_spec.tolerance_for("models/model.pt") == ObjectTolerance(rel_tol=1e-5)
