"""The record path: pin a task's inputs before it runs, commit its outputs and manifest after.

Pure orchestration over the ports (data store, experiment tracker) and a scratch folder; the
Airflow shell calls :meth:`TaskRecorder.prepare` before the task's code and
:meth:`TaskRecorder.finish` / :meth:`TaskRecorder.abort` after it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from airflow_repro.core import metadata_keys as keys
from airflow_repro.core.archive import ArchiveObject, ensure_archived
from airflow_repro.core.manifest import (
    AirflowIdentity,
    CodeVersion,
    DataInput,
    DataOutput,
    EnvironmentPin,
    Hardware,
    KubernetesPod,
    Parameters,
    ReplayInfo,
    TaskManifest,
    Timing,
    Tracking,
    Versions,
    canonical_json,
    load_task_manifest,
)
from airflow_repro.core.naming import run_branch_name
from airflow_repro.core.ports import (
    Commit,
    ExperimentTracker,
    StagedObject,
    TrackerLog,
    TrackerRun,
    VersionedDataStore,
)
from airflow_repro.core.spec import TaskSpec
from airflow_repro.errors import (
    NotFoundError,
    ObjectGone,
    ObjectNotFound,
    OutputError,
    ParamsNotSerializableError,
    ReproError,
    StoreCorruption,
)
from airflow_repro.task_formats import ContextFile, PinnedInput

MANIFEST_DIR = "_repro/manifests"
CONTEXT_FILE = "context.json"
METRICS_FILE = "metrics.json"


def manifest_path(task_id: str, map_index: int) -> str:
    suffix = "" if map_index < 0 else f".{map_index}"
    return f"{MANIFEST_DIR}/{task_id}{suffix}.json"


def task_key(identity: AirflowIdentity) -> str:
    return f"{identity.dag_id}/{identity.run_id}/{identity.task_id}/{identity.map_index}"


@dataclass(frozen=True)
class TaskEnvironment:
    """Facts about the running attempt the Airflow shell gathers for the manifest."""

    identity: AirflowIdentity
    code: CodeVersion
    environment: EnvironmentPin
    parameters: Parameters
    versions: Versions
    hardware: Hardware
    replay: ReplayInfo | None = None
    pinned_inputs: Mapping[str, DataInput] = field(default_factory=dict)
    kubernetes: KubernetesPod | None = None  # where the task ran, for tasks run in a pod
    # What the task itself is given: ``parameters`` holds what is recorded (secrets redacted).
    runtime_params: Mapping[str, Any] | None = None
    runtime_kwargs: Mapping[str, Any] | None = None
    runtime_args: Sequence[Any] | None = None
    # What a replay restores the task from, archived before its outputs are committed.
    archive: tuple[ArchiveObject, ...] = ()

    @property
    def task_params(self) -> Mapping[str, Any]:
        return self.parameters.task_params if self.runtime_params is None else self.runtime_params

    @property
    def task_kwargs(self) -> Mapping[str, Any]:
        return self.parameters.op_kwargs if self.runtime_kwargs is None else self.runtime_kwargs

    @property
    def task_args(self) -> Sequence[Any]:
        """The positional arguments the task itself is given (``parameters.op_args`` records them)."""
        if self.runtime_args is not None:
            return self.runtime_args
        return self.parameters.op_args or ()


@dataclass
class PreparedTask:
    """A task attempt whose inputs are pinned and whose workspace is ready."""

    spec: TaskSpec
    env: TaskEnvironment
    repository: str
    branch: str
    inputs: list[DataInput]
    workdir: Path
    output_dir: Path
    context_file: Path
    context: ContextFile  # what ``context_file`` holds: the pins the task's process reads
    tracked_run: TrackerRun | None
    started_at: str
    started_monotonic: float = field(default_factory=time.monotonic)

    @property
    def metrics_file(self) -> Path:
        return self.workdir / METRICS_FILE


@dataclass(frozen=True)
class RecordedAttempt:
    """The outcome of a recorded task attempt."""

    manifest: TaskManifest
    commit: Commit
    reused_commit: bool
    tracked_run: TrackerRun | None


class TaskRecorder:
    """Runs the record path of one task attempt against a store and (optionally) a tracker."""

    def __init__(
        self,
        store: VersionedDataStore,
        tracker: ExperimentTracker | None,
        *,
        default_repository: str,
        default_branch: str,
        work_root: Path,
        experiment: str | None = None,
    ) -> None:
        self.store = store
        self.tracker = tracker
        self.default_repository = default_repository
        self.default_branch = default_branch
        self.work_root = work_root
        self.experiment = experiment

    # -- before the task -----------------------------------------------------------------------
    def prepare(self, spec: TaskSpec, env: TaskEnvironment, *, materialize: bool = True) -> PreparedTask:
        """Check params, make the run branch, pin inputs to commits, lay out the workspace.

        ``{map_index}`` in the declared outputs is expanded for the task instance (the returned
        ``spec`` holds the expanded paths). Raises user errors naming the task before any of its
        code runs. ``materialize=False``: the inputs are pinned but not copied into the workspace
        (a pod fetches them itself through presigned URLs).
        """
        ident = env.identity
        spec = spec.for_map_index(ident.map_index)
        _check_serializable(spec.task_id, env.parameters)
        repository = spec.repository or self.default_repository
        branch = run_branch_name(ident.dag_id, ident.run_id)
        self.store.create_repository(repository, default_branch=self.default_branch, exist_ok=True)
        self.store.create_branch(repository, branch, self.default_branch, exist_ok=True)
        inputs = [
            self._resolve_input(spec, name, repository, branch, env.pinned_inputs) for name in sorted(spec.inputs)
        ]

        workdir = self._fresh_workdir(ident)
        output_dir = workdir / "outputs"
        output_dir.mkdir(parents=True)
        materialized = {}
        for pinned in inputs:
            local = _inside(
                workdir,
                workdir / "inputs" / pinned.name / PurePosixPath(pinned.path).name,
                f"task {spec.task_id}: input {pinned.name!r}",
            )
            if materialize:
                self.store.materialize(pinned.repository, pinned.commit_id, pinned.path, local)
            materialized[pinned.name] = PinnedInput(
                name=pinned.name,
                path=local,
                repository=pinned.repository,
                commit_id=pinned.commit_id,
                store_path=pinned.path,
            )
        tracked = self._start_tracked_run(ident, repository, branch, env.replay)
        context_file = workdir / CONTEXT_FILE
        context = ContextFile(
            task=f"{ident.dag_id}.{ident.task_id}",
            seed=spec.seed,
            output_dir=output_dir,
            declared_outputs=tuple(spec.outputs),
            inputs=materialized,
            params=dict(env.task_params),
            metrics_file=workdir / METRICS_FILE,
            map_index=ident.map_index,
        )
        context.write(context_file)
        return PreparedTask(
            spec=spec,
            env=env,
            repository=repository,
            branch=branch,
            inputs=inputs,
            workdir=workdir,
            output_dir=output_dir,
            context_file=context_file,
            context=context,
            tracked_run=tracked,
            started_at=_utcnow(),
        )

    def _resolve_input(
        self, spec: TaskSpec, name: str, repository: str, branch: str, pinned: Mapping[str, DataInput]
    ) -> DataInput:
        declared = spec.inputs[name]
        recorded = pinned.get(name)
        if recorded is not None and recorded.path == declared.path:
            return self._check_pinned_input(spec, recorded)
        repo = declared.repository or repository
        ref = declared.ref or branch
        hint = (
            f" (it is read from this DAG run's branch: is the task that writes it upstream of {spec.task_id!r}?)"
            if declared.ref is None
            else ""
        )
        try:
            commit_id = self.store.resolve_ref(repo, ref)
        except NotFoundError as exc:
            raise type(exc)(f"task {spec.task_id}: input {name!r}: {exc}{hint}") from exc
        try:
            info = self.store.stat_object(repo, commit_id, declared.path)
        except ObjectGone as exc:
            raise type(exc)(f"task {spec.task_id}: input {name!r}: {exc}{hint}") from exc
        except ObjectNotFound as exc:
            where = f"ref {ref!r} (commit {commit_id})" if ref != commit_id else f"commit {commit_id}"
            raise type(exc)(
                f"task {spec.task_id}: input {name!r}: path {declared.path!r} does not exist in repository "
                f"{repo!r} at {where}; see list_objects({repo!r}, {ref!r}){hint}"
            ) from exc
        except NotFoundError as exc:
            raise type(exc)(f"task {spec.task_id}: input {name!r}: {exc}{hint}") from exc
        return DataInput(
            name=name,
            repository=repo,
            ref=ref,
            commit_id=commit_id,
            path=declared.path,
            content_hash=info.content_hash,
            size=info.size,
        )

    def _check_pinned_input(self, spec: TaskSpec, pinned: DataInput) -> DataInput:
        """A replay reads exactly the recorded commit; say so clearly if it is gone."""
        try:
            info = self.store.stat_object(pinned.repository, pinned.commit_id, pinned.path)
        except NotFoundError as exc:
            raise type(exc)(f"task {spec.task_id}: pinned input {pinned.name!r} cannot be read: {exc}") from exc
        if info.content_hash != pinned.content_hash:
            raise StoreCorruption(
                f"task {spec.task_id}: pinned input {pinned.name!r} at {pinned.commit_id} no longer has the "
                f"recorded content ({pinned.content_hash}, found {info.content_hash})"
            )
        return pinned

    def _fresh_workdir(self, ident: AirflowIdentity) -> Path:
        attempt = f"{ident.task_id}.{ident.map_index}.try{ident.try_number}.{os.getpid()}"
        workdir = self.work_root / run_branch_name(ident.dag_id, ident.run_id) / attempt
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        return workdir

    def _start_tracked_run(
        self, ident: AirflowIdentity, repository: str, branch: str, replay: ReplayInfo | None
    ) -> TrackerRun | None:
        if self.tracker is None:
            return None
        tags = {
            keys.MLFLOW_DAG_ID: ident.dag_id,
            keys.MLFLOW_RUN_ID: ident.run_id,
            keys.MLFLOW_TASK_ID: ident.task_id,
            keys.MLFLOW_MAP_INDEX: str(ident.map_index),
            keys.MLFLOW_TRY_NUMBER: str(ident.try_number),
            keys.MLFLOW_REPOSITORY: repository,
            keys.MLFLOW_BRANCH: branch,
        }
        if replay is not None:
            tags[keys.MLFLOW_REPLAY_OF] = replay.of_run_id
            tags[keys.MLFLOW_REPLAY_MODE] = replay.mode
        run_name = f"{ident.task_id}" + (f"[{ident.map_index}]" if ident.map_index >= 0 else "")
        return self.tracker.start_run(self.experiment or ident.dag_id, f"{run_name} try {ident.try_number}", tags)

    # -- after the task ------------------------------------------------------------------------
    def finish(self, prepared: PreparedTask, *, outputs: Mapping[str, StagedObject] | None = None) -> RecordedAttempt:
        """Commit outputs and manifest in one commit, then link the tracked run to it.

        ``outputs``: the outputs already in the store, checked by the caller (a pod uploaded them
        through presigned URLs); by default they are staged from the workspace's output folder.
        """
        staged = dict(outputs) if outputs is not None else self._stage_outputs(prepared)
        ident = prepared.env.identity
        # Before the outputs: a committed manifest never names code or an environment not archived.
        ensure_archived(self.store, prepared.repository, prepared.env.archive, default_branch=self.default_branch)
        # A first try cannot have committed before; only retries and clears look for their commit.
        existing = self._find_own_commit(prepared, staged) if ident.try_number > 1 else None
        if existing is not None:
            # What this attempt reports must be what is committed: the earlier attempt's manifest.
            return self._adopt_commit(prepared, existing)
        manifest = self._build_manifest(prepared, staged)
        manifest_file = prepared.workdir / "manifest.json"
        manifest_file.write_bytes(manifest.canonical_json())
        mpath = manifest_path(ident.task_id, ident.map_index)
        changes: dict[str, StagedObject | None] = dict(staged)
        changes[mpath] = self.store.stage_file(prepared.repository, manifest_file, move=True)
        commit = self.store.commit(
            prepared.repository,
            prepared.branch,
            changes,
            message=f"{ident.dag_id}.{ident.task_id}: outputs of {ident.run_id} (try {ident.try_number})",
            metadata=self._commit_metadata(prepared, manifest, mpath),
        )
        self._link_tracked_run(prepared, manifest, commit)
        shutil.rmtree(prepared.workdir, ignore_errors=True)
        return RecordedAttempt(manifest=manifest, commit=commit, reused_commit=False, tracked_run=prepared.tracked_run)

    def _adopt_commit(self, prepared: PreparedTask, commit: Commit) -> RecordedAttempt:
        """A retry whose outputs equal its task's earlier commit: report that commit's manifest and
        MLflow run (linked and ended FINISHED), and end this attempt's own run as superseded."""
        ident = prepared.env.identity
        mpath = manifest_path(ident.task_id, ident.map_index)
        with self.store.open_object(prepared.repository, commit.id, mpath) as handle:
            committed = load_task_manifest(handle.read(), expected_digest=commit.metadata.get(keys.MANIFEST_DIGEST))
        recorded_run = _tracked_run_of(committed, prepared.tracked_run)
        own_run = prepared.tracked_run
        if recorded_run is not None:
            self._link_tracked_run(prepared, committed, commit, run=recorded_run)
        if self.tracker is not None and own_run is not None and own_run != recorded_run:
            tags = {
                keys.MLFLOW_COMMIT_ID: commit.id,
                keys.MLFLOW_MANIFEST_DIGEST: committed.digest,
                keys.MLFLOW_REUSED_COMMIT: "true",
            }
            if recorded_run is not None:
                tags[keys.MLFLOW_SUPERSEDED_BY] = recorded_run.run_id
            self.tracker.log(own_run, TrackerLog(tags=tags, metrics=_read_metrics(prepared.metrics_file)))
            self.tracker.end_run(own_run, "FAILED")
        shutil.rmtree(prepared.workdir, ignore_errors=True)
        return RecordedAttempt(manifest=committed, commit=commit, reused_commit=True, tracked_run=recorded_run)

    def abort(self, prepared: PreparedTask, error: BaseException | None = None) -> None:
        """A failed attempt commits nothing; its tracked run is marked FAILED."""
        try:
            if self.tracker is not None and prepared.tracked_run is not None:
                tags = {keys.MLFLOW_ERROR: _short(repr(error))} if error is not None else {}
                self.tracker.log(prepared.tracked_run, TrackerLog(tags=tags))
                self.tracker.end_run(prepared.tracked_run, "FAILED")
        finally:
            shutil.rmtree(prepared.workdir, ignore_errors=True)

    def _stage_outputs(self, prepared: PreparedTask) -> dict[str, StagedObject]:
        task = prepared.spec.task_id
        written = _written_files(prepared.workdir, prepared.output_dir, task)
        declared = prepared.spec.outputs
        missing = [d for d in declared if not d.endswith("/") and d not in written]
        if missing:
            raise OutputError(
                f"task {task} declared outputs it did not write: {missing}; write them with "
                "runtime.current().output_path(...) or remove them from outputs=[...]"
            )
        undeclared = [w for w in written if not _is_declared(w, declared)]
        if undeclared:
            raise OutputError(f"task {task} wrote undeclared outputs {undeclared}; declare them in outputs=[...]")
        staged = {}
        for path, source in written.items():
            # A file with other hard links is shared with something outside the workspace: copy it,
            # so the store never owns (or later sees changed) another file's data.
            staged[path] = self.store.stage_file(prepared.repository, source, move=source.stat().st_nlink == 1)
        return staged

    def _build_manifest(self, prepared: PreparedTask, staged: Mapping[str, StagedObject]) -> TaskManifest:
        env = prepared.env
        run = prepared.tracked_run
        return TaskManifest(
            identity=env.identity,
            code=env.code,
            environment=env.environment,
            inputs=prepared.inputs,
            outputs=[
                DataOutput(path=p, content_hash=s.content_hash, size=s.size, tolerance=prepared.spec.tolerance_for(p))
                for p, s in staged.items()
            ],
            output_repository=prepared.repository,
            output_branch=prepared.branch,
            parameters=env.parameters,
            resources=prepared.spec.resources,
            hardware=env.hardware,
            versions=env.versions,
            tracking=Tracking(
                mlflow_run_id=run.run_id if run else None,
                mlflow_experiment_id=run.experiment_id if run else None,
                mlflow_tracking_uri=recorded_tracking_uri(run.tracking_uri) if run else None,
            ),
            timing=Timing(
                started_at=prepared.started_at,
                ended_at=_utcnow(),
                duration_s=round(time.monotonic() - prepared.started_monotonic, 3),
            ),
            replay=env.replay,
            kubernetes=env.kubernetes,
        )

    def _commit_metadata(self, prepared: PreparedTask, manifest: TaskManifest, mpath: str) -> dict[str, str]:
        ident = prepared.env.identity
        meta = {
            keys.TASK_KEY: task_key(ident),
            keys.TRY_NUMBER: str(ident.try_number),
            keys.MANIFEST_DIGEST: manifest.digest,
            keys.MANIFEST_PATH: mpath,
            keys.ENV_PIN: manifest.environment.digest,
            keys.OUTPUTS_DIGEST: _outputs_digest(manifest.outputs),
            keys.LAKEFS_AIRFLOW_DAG_ID: ident.dag_id,
            keys.LAKEFS_AIRFLOW_RUN_ID: ident.run_id,
            keys.AIRFLOW_TASK_ID: ident.task_id,
        }
        run = prepared.tracked_run
        if run is not None:
            meta[keys.LAKEFS_MLFLOW_RUN_ID] = run.run_id
            if run.url:
                meta[keys.LAKEFS_MLFLOW_URL] = run.url
        return meta

    def _find_own_commit(self, prepared: PreparedTask, staged: Mapping[str, StagedObject]) -> Commit | None:
        """A retried attempt whose outputs are identical to a commit already made for this task
        instance on the run branch reuses that commit instead of making a second one."""
        ident = prepared.env.identity
        wanted_key = task_key(ident)
        wanted = _outputs_digest(
            [DataOutput(path=p, content_hash=s.content_hash, size=s.size) for p, s in staged.items()]
        )
        for commit in self.store.log(prepared.repository, prepared.branch):
            if commit.metadata.get(keys.TASK_KEY) == wanted_key:
                return commit if commit.metadata.get(keys.OUTPUTS_DIGEST) == wanted else None
        return None

    def _link_tracked_run(
        self, prepared: PreparedTask, manifest: TaskManifest, commit: Commit, run: TrackerRun | None = None
    ) -> None:
        run = run or prepared.tracked_run
        if self.tracker is None or run is None:
            return
        record = TrackerLog(
            tags={
                keys.MLFLOW_COMMIT_ID: commit.id,
                keys.MLFLOW_MANIFEST_DIGEST: manifest.digest,
                keys.MLFLOW_ENV_PIN: manifest.environment.digest,
                keys.MLFLOW_ENV_KIND: manifest.environment.kind,
                keys.MLFLOW_REPOSITORY: prepared.repository,
                keys.MLFLOW_BRANCH: prepared.branch,
            },
            params=_flat_params(manifest.parameters),
            metrics=_read_metrics(prepared.metrics_file),
            json_artifacts={"repro/manifest.json": json.loads(manifest.canonical_json())},
        )
        self.tracker.log(run, record)
        self.tracker.end_run(run, "FINISHED")


def recorded_tracking_uri(uri: str) -> str:
    """A tracking URI as a manifest shows it: a server's address as is, a local database by file
    name only (``sqlite:///<local>/mlflow.db``): the server's folders are nobody's business."""
    scheme, sep, rest = uri.partition(":")
    if not sep or rest.startswith("//") and not rest.startswith("///"):
        return uri  # http(s)://host... (credentials were stripped by the tracker)
    return f"{scheme}:///<local>/{PurePosixPath(rest).name}"


def _tracked_run_of(manifest: TaskManifest, current: TrackerRun | None) -> TrackerRun | None:
    """The tracked run a committed manifest links to (this attempt's own, when it is the same)."""
    tracking = manifest.tracking
    if not tracking.mlflow_run_id:
        return None
    if current is not None and current.run_id == tracking.mlflow_run_id:
        return current
    return TrackerRun(
        run_id=tracking.mlflow_run_id,
        experiment_id=tracking.mlflow_experiment_id or "",
        tracking_uri=current.tracking_uri if current else (tracking.mlflow_tracking_uri or ""),
    )


def _written_files(workdir: Path, output_dir: Path, task: str) -> dict[str, Path]:
    """Every regular file under the output folder, by repository path; walked without following
    symlinks, and refused if the folder (or anything in it) is a symlink or leads elsewhere."""
    where = f"task {task}: its output folder"
    if output_dir.is_symlink() or not output_dir.is_dir():
        raise OutputError(
            f"{where} was replaced by a symlink or a file; write outputs into it, nothing was read or moved"
        )
    _inside(workdir, output_dir, where)
    written: dict[str, Path] = {}
    for folder, dirs, files in os.walk(output_dir, followlinks=False):
        for name in sorted([*dirs, *files]):
            entry = Path(folder) / name
            relative = entry.relative_to(output_dir).as_posix()
            if entry.is_symlink():
                raise OutputError(f"task {task}: output {relative!r} is a symlink; write a regular file")
            if name in files:
                if not entry.is_file():
                    raise OutputError(f"task {task}: output {relative!r} is not a regular file")
                written[relative] = entry
    return dict(sorted(written.items()))


def _inside(root: Path, path: Path, what: str) -> Path:
    """``path`` if it stays inside ``root`` once every symlink is resolved, else an OutputError."""
    real_root = root.resolve()
    real = path.resolve()
    if real != real_root and real_root not in real.parents:
        raise OutputError(
            f"{what}: {path.relative_to(root) if path.is_relative_to(root) else path.name} "
            "leads outside the task's workspace; nothing was read or moved"
        )
    return path


def _is_declared(path: str, declared: tuple[str, ...]) -> bool:
    return any(path == d or (d.endswith("/") and path.startswith(d)) for d in declared)


def _outputs_digest(outputs: list[DataOutput]) -> str:
    body = canonical_json(sorted([o.path, o.content_hash] for o in outputs))
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _check_serializable(task_id: str, parameters: Parameters) -> None:
    for what, value in (
        ("params", parameters.task_params),
        ("dag_run.conf", parameters.dag_run_conf),
        ("op_kwargs", parameters.op_kwargs),
        ("op_args", parameters.op_args or []),
    ):
        try:
            canonical_json(value)
        except ReproError as exc:
            raise ParamsNotSerializableError(
                f"task {task_id}: {what} cannot be recorded: {exc}. Pass JSON values only "
                "(str, int, float, bool, None, lists and dicts of them)"
            ) from exc


def _flat_params(parameters: Parameters) -> dict[str, str]:
    """MLflow params: the seed and each top-level task param / conf entry, as JSON text."""
    flat: dict[str, str] = {}
    if parameters.seed is not None:
        flat["seed"] = str(parameters.seed)
    for prefix, values in (("param", parameters.task_params), ("conf", parameters.dag_run_conf)):
        for name, value in values.items():
            flat[f"{prefix}.{name}"] = _short(json.dumps(value, sort_keys=True), 6000)
    return flat


def _read_metrics(path: Path) -> dict[str, float]:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return {str(k): float(v) for k, v in data.items()}


def _short(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


__all__ = [
    "PreparedTask",
    "RecordedAttempt",
    "TaskEnvironment",
    "TaskRecorder",
    "manifest_path",
    "task_key",
]
