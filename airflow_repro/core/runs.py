"""Recorded DAG runs: find them, read their task manifests, and close them with a tag."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError

from airflow_repro.core import metadata_keys as keys
from airflow_repro.core.manifest import (
    DagRunManifest,
    DagRunManifestEntry,
    TaskManifest,
    UnrecordedTask,
    load_dag_run_manifest,
    load_task_manifest,
)
from airflow_repro.core.naming import run_branch_name, run_tag_name
from airflow_repro.core.ports import Commit, VersionedDataStore
from airflow_repro.core.recorder import MANIFEST_DIR
from airflow_repro.errors import AlreadyExistsError, ManifestError, ObjectNotFound, RefNotFound, RepositoryNotFound

log = logging.getLogger(__name__)

DAG_RUN_MANIFEST_PATH = "_repro/dag_run.json"


@dataclass(frozen=True)
class StoredTaskManifest:
    """A task manifest as the store holds it: the commit it is in and its path there."""

    manifest: TaskManifest
    commit_id: str
    manifest_path: str


@dataclass(frozen=True)
class StoredRun:
    """A DAG run as recorded: where it lives and the manifests of its tasks."""

    dag_id: str
    run_id: str
    repository: str
    branch: str
    ref: str  # the tag when the run is closed, else the branch
    head_commit: str
    closed: bool
    tasks: list[StoredTaskManifest]


def find_run_repository(store: VersionedDataStore, dag_id: str, run_id: str) -> str:
    """The repository holding a DAG run's branch (runs are looked up across repositories)."""
    branch = run_branch_name(dag_id, run_id)
    for repo in store.list_repositories():
        if branch in store.list_branches(repo.name):
            return repo.name
    raise RefNotFound(
        f"no recorded run {run_id!r} of DAG {dag_id!r} (looked for branch {branch!r} in every "
        "repository); list runs with 'airflow dags list-runs "
        f"{dag_id}' and check that its tasks are @repro_task tasks"
    )


def load_run(store: VersionedDataStore, dag_id: str, run_id: str) -> StoredRun:
    repository = find_run_repository(store, dag_id, run_id)
    branch = run_branch_name(dag_id, run_id)
    tag = run_tag_name(dag_id, run_id)
    closed = tag in store.list_tags(repository)
    ref = tag if closed else branch
    head = store.resolve_ref(repository, ref)
    commits_by_manifest = _latest_commit_per_manifest(store, repository, head)
    tasks = []
    for info in store.list_objects(repository, head, prefix=MANIFEST_DIR + "/"):
        with store.open_object(repository, head, info.path) as handle:
            data = handle.read()
        commit = commits_by_manifest.get(info.path)
        digest = commit.metadata.get(keys.MANIFEST_DIGEST) if commit else None
        if commit is None or not digest:
            raise ManifestError(
                f"{info.path} in run {run_id!r} of {dag_id!r} was not committed by airflow-repro's recorder "
                "(no commit names it with its digest); its content cannot be trusted for a replay"
            )
        manifest = load_task_manifest(data, expected_digest=digest)
        tasks.append(StoredTaskManifest(manifest=manifest, commit_id=commit.id, manifest_path=info.path))
    tasks.sort(key=lambda t: (t.manifest.timing.started_at, t.manifest.identity.task_id))
    return StoredRun(
        dag_id=dag_id,
        run_id=run_id,
        repository=repository,
        branch=branch,
        ref=ref,
        head_commit=head,
        closed=closed,
        tasks=tasks,
    )


def _latest_commit_per_manifest(store: VersionedDataStore, repository: str, head: str) -> dict[str, Commit]:
    found: dict[str, Commit] = {}
    for commit in store.log(repository, head):
        path = commit.metadata.get(keys.MANIFEST_PATH)
        if path and path not in found:
            found[path] = commit
    return found


def close_run(
    store: VersionedDataStore,
    dag_id: str,
    run_id: str,
    state: str,
    task_instances: Sequence[tuple[str, int, str | None]] | None = None,
) -> str | None:
    """Commit the DAG-run manifest on the run's branch and tag that commit immutably.

    ``task_instances``: every ``(task_id, map_index, state)`` of the run, as Airflow has them; the
    ones without a manifest are listed in the DAG-run manifest as not recorded.

    Idempotent: a run already closed returns its tag's commit. Returns ``None`` when the run
    recorded nothing (no repro tasks ran).
    """
    try:
        run = load_run(store, dag_id, run_id)
    except (RefNotFound, RepositoryNotFound):
        return None
    tag = run_tag_name(dag_id, run_id)
    if run.closed:
        return run.head_commit
    dag_manifest = DagRunManifest(
        dag_id=dag_id,
        run_id=run_id,
        repository=run.repository,
        branch=run.branch,
        state=state,
        tasks=[
            DagRunManifestEntry(
                task_id=t.manifest.identity.task_id,
                map_index=t.manifest.identity.map_index,
                try_number=t.manifest.identity.try_number,
                manifest_digest=t.manifest.digest,
                manifest_path=t.manifest_path,
                commit_id=t.commit_id,
                mlflow_run_id=t.manifest.tracking.mlflow_run_id,
            )
            for t in run.tasks
        ],
        unrecorded_tasks=_unrecorded(run, task_instances),
    )
    staged = store.stage_bytes(run.repository, dag_manifest.canonical_json())
    commit = store.commit(
        run.repository,
        run.branch,
        {DAG_RUN_MANIFEST_PATH: staged},
        message=f"{dag_id}: DAG run {run_id} {state}",
        metadata={
            keys.KIND: "dag-run",
            keys.DAG_RUN_MANIFEST_DIGEST: dag_manifest.digest,
            keys.LAKEFS_AIRFLOW_DAG_ID: dag_id,
            keys.LAKEFS_AIRFLOW_RUN_ID: run_id,
        },
        allow_empty=True,
    )
    try:
        return store.create_tag(run.repository, tag, commit.id)
    except AlreadyExistsError:  # closed concurrently by another process: the first tag stands
        return store.resolve_ref(run.repository, tag)


def _unrecorded(
    run: StoredRun, task_instances: Sequence[tuple[str, int, str | None]] | None
) -> list[UnrecordedTask] | None:
    if task_instances is None:
        return None
    recorded = {(t.manifest.identity.task_id, t.manifest.identity.map_index) for t in run.tasks}
    return [
        UnrecordedTask(task_id=task_id, map_index=map_index, state=state)
        for task_id, map_index, state in sorted(task_instances, key=lambda t: (t[0], t[1]))
        if (task_id, map_index) not in recorded
    ]


def load_dag_run_manifest_at(store: VersionedDataStore, repository: str, ref: str) -> DagRunManifest:
    with store.open_object(repository, ref, DAG_RUN_MANIFEST_PATH) as handle:
        return load_dag_run_manifest(handle.read())


class RunTaskDocument(BaseModel):
    """One task of a recorded run, as ``show --json`` and the REST API print it."""

    task_id: str
    map_index: int
    try_number: int
    commit_id: str
    manifest_path: str
    manifest_digest: str
    manifest: dict[str, Any] = Field(description="The task manifest, as committed (canonical JSON).")


class RunDocument(BaseModel):
    """A recorded DAG run as JSON: the one shape the CLI (``show --json``) and the REST API answer."""

    dag_id: str
    run_id: str
    repository: str
    branch: str
    ref: str = Field(description="The run's tag once it is closed, else its branch.")
    closed: bool
    head_commit: str
    tasks: list[RunTaskDocument]
    dag_run_manifest: DagRunManifest | None = Field(
        description="The DAG-run manifest of a closed run (None while open, or if it was never written)."
    )


def run_document(store: VersionedDataStore, run: StoredRun) -> RunDocument:
    dag_run_manifest = None
    if run.closed:
        try:
            dag_run_manifest = load_dag_run_manifest_at(store, run.repository, run.ref)
        except ObjectNotFound:  # tagged without its DAG-run manifest: report the tasks anyway
            log.warning("run %s of %s is closed but has no DAG-run manifest at %s", run.run_id, run.dag_id, run.ref)
    return RunDocument(
        dag_id=run.dag_id,
        run_id=run.run_id,
        repository=run.repository,
        branch=run.branch,
        ref=run.ref,
        closed=run.closed,
        head_commit=run.head_commit,
        dag_run_manifest=dag_run_manifest,
        tasks=[
            RunTaskDocument(
                task_id=t.manifest.identity.task_id,
                map_index=t.manifest.identity.map_index,
                try_number=t.manifest.identity.try_number,
                commit_id=t.commit_id,
                manifest_path=t.manifest_path,
                manifest_digest=t.manifest.digest,
                manifest=json.loads(t.manifest.canonical_json()),
            )
            for t in run.tasks
        ],
    )


ModelT = TypeVar("ModelT", bound=BaseModel)


def read_json_model(
    store: VersionedDataStore, repository: str, ref: str, path: str, model: type[ModelT], what: str
) -> ModelT:
    """Read a stored JSON document (plan, report) as ``model``; invalid content is a ManifestError."""
    with store.open_object(repository, ref, path) as handle:
        data = handle.read()
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise ManifestError(f"{what} at {repository}@{ref}:{path} is not valid: {exc}") from exc
