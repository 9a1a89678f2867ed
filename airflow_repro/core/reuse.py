"""A task that a replay from a later task does not run: its record in the replay run.

Such a task commits, on the replay run's branch and in one commit, the replayed run's outputs of
the task (the same bytes, read from the commit that holds them) together with a manifest saying
where they come from (``replay.reused_from``). The replay's branch then holds a complete run: the
tasks downstream read exactly the recorded data, a verification compares like with like, and a
replay of the replay finds every task. A retry finds the commit an earlier try made and adopts it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from airflow_repro.core import metadata_keys as keys
from airflow_repro.core.manifest import (
    AirflowIdentity,
    ReplayInfo,
    ReusedFrom,
    TaskManifest,
    Timing,
    Tracking,
    load_task_manifest,
)
from airflow_repro.core.naming import run_branch_name
from airflow_repro.core.ports import Commit, StagedObject, VersionedDataStore
from airflow_repro.core.recorder import manifest_path, task_key
from airflow_repro.core.replay import ReplayPlan, ReusedTask
from airflow_repro.errors import StoreCorruption

REUSED_TASK_KIND = "reused-task"


@dataclass(frozen=True)
class ReusedAttempt:
    """What a reused task committed (or, ``adopted``, what an earlier try of it committed)."""

    manifest: TaskManifest
    commit: Commit
    adopted: bool


def commit_reused_task(
    store: VersionedDataStore,
    plan: ReplayPlan,
    reused: ReusedTask,
    identity: AirflowIdentity,
    *,
    default_branch: str,
    work_root: Path,
) -> ReusedAttempt:
    """Commit the original outputs of ``reused`` and its reuse manifest on the replay's branch."""
    original = original_manifest(store, plan, reused)
    repository = original.output_repository
    branch = run_branch_name(identity.dag_id, identity.run_id)
    store.create_branch(repository, branch, default_branch, exist_ok=True)
    mpath = manifest_path(identity.task_id, identity.map_index)
    # Only a later try can find its own earlier commit (Airflow raises the try number on a retry or
    # a clear); a first try need not walk the branch's history.
    earlier = _earlier_commit(store, repository, branch, identity) if identity.try_number > 1 else None
    if earlier is not None:
        with store.open_object(repository, earlier.id, mpath) as handle:
            committed = load_task_manifest(handle.read(), expected_digest=earlier.metadata.get(keys.MANIFEST_DIGEST))
        return ReusedAttempt(manifest=committed, commit=earlier, adopted=True)
    started = _utcnow()
    manifest = reuse_manifest(original, plan, reused, identity, branch=branch, started_at=started)
    work_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="reused-", dir=work_root) as folder:
        changes: dict[str, StagedObject | None] = dict(_staged_outputs(store, original, reused, Path(folder)))
        changes[mpath] = store.stage_bytes(repository, manifest.canonical_json())
        commit = store.commit(
            repository,
            branch,
            changes,
            message=f"{identity.dag_id}.{identity.task_id}: outputs of {plan.original_run_id} reused by "
            f"{identity.run_id} (try {identity.try_number})",
            metadata=_commit_metadata(manifest, mpath, plan),
        )
    return ReusedAttempt(manifest=manifest, commit=commit, adopted=False)


def original_manifest(store: VersionedDataStore, plan: ReplayPlan, reused: ReusedTask) -> TaskManifest:
    """The replayed run's manifest of the task, checked against the digest the plan names."""
    path = manifest_path(reused.task_id, reused.map_index)
    with store.open_object(plan.original_repository, reused.commit_id, path) as handle:
        return load_task_manifest(handle.read(), expected_digest=reused.original_manifest_digest)


def reuse_manifest(
    original: TaskManifest,
    plan: ReplayPlan,
    reused: ReusedTask,
    identity: AirflowIdentity,
    *,
    branch: str,
    started_at: str,
) -> TaskManifest:
    """The replay's manifest of a reused task: the original's record of how its outputs were made
    (code, environment, inputs, parameters, hardware), under the replay's identity and branch.

    No MLflow run (nothing ran) and no pod; ``replay.reused_from`` names the commit."""
    replay = ReplayInfo(
        of_run_id=plan.original_run_id,
        mode=plan.mode,
        plan_digest=plan.digest,
        original_manifest_digest=original.digest,
        reused_from=ReusedFrom(run_id=plan.original_run_id, commit_id=reused.commit_id),
    )
    return original.model_copy(
        update={
            "identity": identity,
            "output_branch": branch,
            "tracking": Tracking(),
            "timing": Timing(started_at=started_at, ended_at=_utcnow(), duration_s=0.0),
            "replay": replay,
            "kubernetes": None,
        }
    )


def _staged_outputs(
    store: VersionedDataStore, original: TaskManifest, reused: ReusedTask, folder: Path
) -> dict[str, StagedObject]:
    """Each recorded output, read from its commit and staged again; its hash must be the recorded one."""
    staged = {}
    for n, output in enumerate(original.outputs):
        local = folder / str(n) / PurePosixPath(output.path).name
        local.parent.mkdir(parents=True)
        store.materialize(original.output_repository, reused.commit_id, output.path, local)
        again = store.stage_file(original.output_repository, local, move=True)
        if again.content_hash != output.content_hash:
            raise StoreCorruption(
                f"task {reused.task_id}: recorded output {output.path!r} at commit {reused.commit_id} no longer "
                f"has the recorded content ({output.content_hash}, found {again.content_hash}); it cannot be "
                "reused: replay from this task instead"
            )
        staged[output.path] = again
    return staged


def _earlier_commit(
    store: VersionedDataStore, repository: str, branch: str, identity: AirflowIdentity
) -> Commit | None:
    wanted = task_key(identity)
    for commit in store.log(repository, branch):
        if commit.metadata.get(keys.TASK_KEY) == wanted:
            return commit
    return None


def _commit_metadata(manifest: TaskManifest, mpath: str, plan: ReplayPlan) -> dict[str, str]:
    ident = manifest.identity
    return {
        keys.KIND: REUSED_TASK_KIND,
        keys.TASK_KEY: task_key(ident),
        keys.TRY_NUMBER: str(ident.try_number),
        keys.MANIFEST_DIGEST: manifest.digest,
        keys.MANIFEST_PATH: mpath,
        keys.ENV_PIN: manifest.environment.digest,
        keys.REPLAY_OF: plan.original_run_id,
        keys.LAKEFS_AIRFLOW_DAG_ID: ident.dag_id,
        keys.LAKEFS_AIRFLOW_RUN_ID: ident.run_id,
        keys.AIRFLOW_TASK_ID: ident.task_id,
    }


def _utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
