"""Recording a task without Airflow: the environment a task records, and a task recorded into a store."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.core.environment import fingerprint_pin, hardware, versions
from airflow_repro.core.manifest import AirflowIdentity, CodeVersion, Parameters
from airflow_repro.core.recorder import TaskEnvironment, TaskRecorder
from airflow_repro.core.spec import TaskSpec


def environment(task_id: str, try_number: int = 1, **params: object) -> TaskEnvironment:
    return TaskEnvironment(
        identity=AirflowIdentity(dag_id="dag", run_id="manual__1", task_id=task_id, try_number=try_number),
        code=CodeVersion(source_hash="sha256:" + "0" * 64),
        environment=fingerprint_pin(),
        parameters=Parameters(seed=7, **params),  # type: ignore[arg-type]
        versions=versions("test"),
        hardware=hardware(),
    )


def run_task(recorder: TaskRecorder, spec: TaskSpec, files: dict[str, bytes], try_number: int = 1):
    prepared = recorder.prepare(spec, environment(spec.task_id, try_number))
    for path, data in files.items():
        target = prepared.output_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return recorder.finish(prepared)


REPO = "repro"
DAG = "dag"
RUN = "manual__1"


def record(store: LocalStore, home: Path, run_id: str, files: dict[str, bytes], task_id: str = "a") -> None:
    recorder = TaskRecorder(store, None, default_repository=REPO, default_branch="main", work_root=home / "work")
    env = environment(task_id)
    env = dataclasses.replace(env, identity=env.identity.model_copy(update={"run_id": run_id}))
    prepared = recorder.prepare(TaskSpec(task_id=task_id, outputs=tuple(files)), env)
    for path, data in files.items():
        (prepared.output_dir / path).write_bytes(data)
    recorder.finish(prepared)
