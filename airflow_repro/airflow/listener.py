"""DAG-run listener: when a DAG run ends, close its record with an immutable tag.

Runs in the scheduler (and in the process of ``dag.test()``). It is a side channel: it logs and
never raises, so a store problem cannot disturb scheduling; ``airflow-repro show`` still reads an
unclosed run from its branch.
"""

from __future__ import annotations

import logging

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)


def _close(dag_run: object, state: str) -> None:
    try:
        from airflow_repro.backends import Backends
        from airflow_repro.core.runs import close_run

        store = Backends.from_airflow_conf().store
        commit_id = close_run(store, dag_run.dag_id, dag_run.run_id, state, _task_instances(dag_run))  # type: ignore[attr-defined]
        if commit_id:
            log.info("airflow-repro closed run %s of %s at commit %s", dag_run.run_id, dag_run.dag_id, commit_id)  # type: ignore[attr-defined]
    except Exception:
        log.exception("airflow-repro could not close the record of DAG run %r", getattr(dag_run, "run_id", None))


def _task_instances(dag_run: object) -> list[tuple[str, int, str | None]] | None:
    """Every task instance of the run, to name the ones that left no manifest (None: unknown)."""
    from sqlalchemy.orm import object_session

    run_id = getattr(dag_run, "run_id", None)
    try:
        # In the scheduler the run is bound to its session, inside prohibit_commit: query on that
        # session (get_task_instances() without one would commit it and break the scheduler loop).
        session = object_session(dag_run)
        kwargs = {"session": session} if session is not None else {}
        instances = dag_run.get_task_instances(**kwargs)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a side channel: the run is still closed, without the list
        log.warning("airflow-repro could not list the task instances of %r", run_id)
        return None
    return [
        (ti.task_id, ti.map_index if ti.map_index is not None else -1, str(ti.state) if ti.state else None)
        for ti in instances
    ]


@hookimpl
def on_starting(component: object) -> None:
    """Before any DAG-run or task event of this process: lineage events carry no conf secret."""
    try:
        from airflow_repro.airflow.lineage import redact_provider_run_conf

        redact_provider_run_conf()
    except Exception:
        log.exception("airflow-repro could not set up redaction of lineage events")


@hookimpl
def on_dag_run_success(dag_run: object, msg: str) -> None:
    _close(dag_run, "success")
