"""Replay planning: from a recorded DAG run, the pins of each task, and what can no longer hold.

Pure: the caller gives the recorded run (from the store), a description of the DAG as it is
now (parsed by the Airflow shell) and the checks that need the outside world (:class:`RestoreChecks`:
the archive, the planning process's environment, whether uv can install a record). Every pin is
checked before anything runs; the drift report says precisely what changed and whether it can be
restored. Mode ``pinned`` restores what drifted in code or environment from the archive and refuses
only what cannot be restored (a task added or removed, an archive missing, a distribution no index
serves); mode ``latest-code`` accepts drift of code and environment (and tasks added or removed)
but never of data or parameters.

A replay from a task (``from_task``) runs that task and everything downstream of it; the other
recorded tasks are reused (:class:`ReusedTask`): they record the original's outputs at the commit
that holds them instead of running (:mod:`airflow_repro.core.reuse`), so their drift blocks nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from airflow_repro.core import metadata_keys as keys
from airflow_repro.core.manifest import (
    SCHEMA_VERSION,
    CanonicalDocument,
    CodeVersion,
    DataInput,
    EnvironmentPin,
    canonical_json,
)
from airflow_repro.core.naming import run_branch_name
from airflow_repro.core.ports import VersionedDataStore
from airflow_repro.core.redaction import dotted, redacted_paths, with_value_at
from airflow_repro.core.runs import StoredRun, read_json_model
from airflow_repro.errors import ManifestError, NotFoundError, ReproError, ReproUserError

if TYPE_CHECKING:
    from airflow_repro.core.code_snapshot import CodeSnapshot
    from airflow_repro.core.environment_record import EnvironmentRecord

ReplayMode = Literal["pinned", "latest-code"]
REPLAY_MODES: tuple[str, ...] = ("pinned", "latest-code")
REPLAY_CONF_KEY = "airflow_repro.replay"
REPLAY_PLAN_PATH = "_repro/replay_plan.json"


class DriftKind(StrEnum):
    TASK_ADDED = "task_added"
    TASK_REMOVED = "task_removed"
    CODE_CHANGED = "code_changed"
    BUNDLE_VERSION_CHANGED = "bundle_version_changed"
    ENVIRONMENT_CHANGED = "environment_changed"
    INPUT_MISSING = "input_missing"
    PARAMS_CHANGED = "params_changed"
    SECRET_MISSING = "secret_missing"
    SECRET_CHANGED = "secret_changed"
    MAP_COUNT_CHANGED = "map_count_changed"
    OUTPUT_MISSING = "output_missing"


#: drift that ``latest-code`` accepts (and records); anything else blocks every mode. A secret
#: that changed (a rotated token) is accepted there too: the record shows its marker changed.
CODE_DRIFT = frozenset(
    {
        DriftKind.TASK_ADDED,
        DriftKind.TASK_REMOVED,
        DriftKind.CODE_CHANGED,
        DriftKind.BUNDLE_VERSION_CHANGED,
        DriftKind.ENVIRONMENT_CHANGED,
        DriftKind.SECRET_CHANGED,
        DriftKind.MAP_COUNT_CHANGED,
    }
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _unset(value: Any) -> bool:
    return value is None or value == []


def _optional(description: str, **kwargs: Any) -> Any:
    return Field(default=None, description=description, exclude_if=_unset, **kwargs)


class Drift(_Frozen):
    kind: DriftKind
    task_id: str
    detail: str
    recorded: str | None = None
    current: str | None = None
    restorable: bool | None = _optional(
        "Whether a pinned replay restores what drifted from the archive (code, environment)."
    )
    restore_note: str | None = _optional("How it is restored, or why it cannot be, and where that was checked.")
    changes: list[str] | None = _optional("What changed, one line each (distributions: 'numpy 2.4.6 -> 2.5.0').")
    diff: str | None = _optional("A unified diff of the archived and the current code (truncated).")
    reused: bool | None = _optional(
        "The task is reused by a replay from a later task (it does not run): its drift is reported, blocks nothing."
    )

    def blocks(self, mode: ReplayMode) -> bool:
        if self.reused:
            # Recorded outputs stand in only for the recorded expansion of a mapped task.
            return self.kind == DriftKind.MAP_COUNT_CHANGED
        if self.kind not in CODE_DRIFT:
            return True
        return mode == "pinned" and not self.restorable


class TaskPins(_Frozen):
    """What a replayed task must use instead of resolving afresh."""

    task_id: str
    map_index: int = -1
    original_manifest_digest: str
    inputs: list[DataInput] = Field(default_factory=list)
    seed: int | None = None
    environment_digest: str
    source_hash: str
    bundle_version: str | None = None
    task_params: dict[str, Any] = Field(default_factory=dict)
    op_args: list[Any] | None = _optional("The recorded positional arguments (secrets as markers).")
    op_kwargs: dict[str, Any] | None = _optional("The recorded keyword arguments (secrets as markers).")
    code: CodeVersion | None = _optional("The recorded code version: what a pinned replay restores.")
    environment: EnvironmentPin | None = _optional("The recorded environment pin: what a pinned replay restores.")


class ReusedTask(_Frozen):
    """A recorded task instance a replay from a later task does not run: it records that it reuses
    the original's outputs, at the commit that holds them."""

    task_id: str
    map_index: int = -1
    commit_id: str = Field(description="The original run's commit holding the task's outputs and manifest.")
    original_manifest_digest: str


class ReplayPlan(CanonicalDocument, _Frozen):
    """Stored on the replay's branch before it is triggered; read by each replayed task."""

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    kind: Literal["airflow-repro/replay-plan"] = "airflow-repro/replay-plan"
    dag_id: str
    original_run_id: str
    original_repository: str
    original_ref: str
    replay_run_id: str
    mode: ReplayMode
    dag_run_conf: dict[str, Any] = Field(default_factory=dict)
    tasks: list[TaskPins]
    drift: list[Drift] = Field(default_factory=list)
    created_at: str
    unrecorded_tasks: list[str] | None = _optional(
        "Tasks of the DAG that are not recorded (plain operators): a replay re-runs them with whatever they read then."
    )
    from_task: str | None = _optional("The task a partial replay starts from: it and its downstream tasks run.")
    replayed_tasks: list[str] | None = _optional("With from_task: the recorded tasks that run again.")
    reused_tasks: list[ReusedTask] | None = _optional(
        "With from_task: the recorded task instances that do not run; their recorded outputs are reused."
    )

    @property
    def replayed_task_ids(self) -> list[str]:
        """The recorded tasks that run in the replay (every one, unless it starts from a task)."""
        if self.from_task is not None:
            return list(self.replayed_tasks or [])
        return sorted({pins.task_id for pins in self.tasks})

    def reused(self, task_id: str, map_index: int = -1) -> ReusedTask | None:
        """The recorded outputs ``task_id`` reuses instead of running, or ``None`` if it runs."""
        for task in self.reused_tasks or ():
            if task.task_id == task_id and task.map_index == map_index:
                return task
        return None

    @property
    def blocking_drift(self) -> list[Drift]:
        return [d for d in self.drift if d.blocks(self.mode)]

    def refusal_message(self) -> str:
        """Why this plan cannot be triggered: the message of :class:`~airflow_repro.errors.ReplayRefused`."""
        lines = [
            f"- [{d.kind}] {d.task_id}: {d.detail}" + (f" ({d.restore_note})" if d.restore_note else "")
            for d in self.blocking_drift
        ]
        hint = (
            " Use --mode latest-code to replay with the current code and environment (data, params and "
            "seeds stay pinned)."
            if all(d.kind in CODE_DRIFT for d in self.blocking_drift)
            else ""
        )
        return (
            f"cannot replay run {self.original_run_id!r} of {self.dag_id!r} in mode {self.mode}: "
            f"{len(self.blocking_drift)} pin(s) no longer hold:\n" + "\n".join(lines) + hint
        )

    def pins_for(self, task_id: str, map_index: int = -1) -> TaskPins | None:
        for pins in self.tasks:
            if pins.task_id == task_id and pins.map_index == map_index:
                return pins
        return None


@dataclass(frozen=True)
class CurrentTask:
    """A recorded task as the DAG defines it now (from the parsed DAG file)."""

    task_id: str
    source_hash: str
    environment_digest: str | None  # None: cannot be checked by the planning process
    bundle_version: str | None = None
    task_params: Mapping[str, Any] = field(default_factory=dict)
    code_snapshot: str | None = None  # digest of the DAG file's code snapshot as it is now
    environment_kind: str | None = None
    mapped: bool = False
    map_count: int | None = None  # mapped over a literal: how many instances it expands to now


class RestoreChecks(Protocol):
    """What planning needs from outside the core to say whether drift can be restored."""

    def current_code(self, *recorded: Any) -> CodeSnapshot | None:
        """The DAG file's code as it is now (None: not known to the planner), with string literals
        equal to a secret that ``recorded`` (parameters) holds as a marker replaced by it."""
        ...

    def archived_code(self, repository: str, digest: str) -> CodeSnapshot:
        """The archived snapshot (``ArchiveMissing`` / ``ArchiveCorrupt`` / ``ManifestError``)."""
        ...

    def archived_environment(self, repository: str, digest: str) -> EnvironmentRecord: ...

    def check_archived(self, repository: str, kind: str, digest: str) -> None:
        """Raise unless the archived lockfile or script at ``digest`` can be read intact."""
        ...

    def current_environment(self) -> EnvironmentRecord | None:
        """The planning process's environment (an approximation of the workers')."""
        ...

    def environment_problems(self, record: EnvironmentRecord) -> list[str]:
        """Why ``record`` cannot be rebuilt here (empty: it can)."""
        ...


def replay_run_id(original_run_id: str, now: datetime | None = None) -> str:
    """A run id that says what it replays (Airflow allows ``[A-Za-z0-9_.~:+-]``)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%f")
    return f"replay__{stamp}__of__{original_run_id}"


def plan_replay(
    recorded: StoredRun,
    current: Mapping[str, CurrentTask],
    store: VersionedDataStore,
    *,
    mode: ReplayMode,
    replay_run_id: str,
    secret_markers: Mapping[str, str] | None = None,
    restore: RestoreChecks | None = None,
    unrecorded_tasks: Sequence[str] | None = None,
    from_task: str | None = None,
    downstream: Mapping[str, Sequence[str]] | None = None,
) -> ReplayPlan:
    """Pins for every recorded task and the drift between the record and the DAG as it is now.

    ``restore``: where given, code and environment drift say whether (and how) a pinned replay
    restores them; without it nothing is restorable (a pinned replay refuses any such drift).

    ``unrecorded_tasks``: the DAG's tasks that are not recorded (listed in the plan).

    ``secret_markers``: for each redacted DAG-run conf entry (dotted path) the user gives a value
    for, that value's marker; the recorded conf holds only markers, so a replay needs the values.

    ``from_task``: replay that task and everything downstream of it (``downstream``: each task of
    the DAG as it is now and the tasks directly downstream of it); the other recorded tasks are
    reused at their recorded commits, and their drift blocks nothing.
    """
    if mode not in REPLAY_MODES:
        raise ReproUserError(f"unknown replay mode {mode!r}: use one of {', '.join(REPLAY_MODES)}")
    if not recorded.tasks:
        raise NotFoundError(f"run {recorded.run_id!r} of {recorded.dag_id!r} recorded no task: nothing to replay")
    drift: list[Drift] = []
    pins: list[TaskPins] = []
    recorded_ids = {t.manifest.identity.task_id for t in recorded.tasks}
    for task_id in sorted(set(current) - recorded_ids):
        drift.append(
            Drift(
                kind=DriftKind.TASK_ADDED,
                task_id=task_id,
                detail="task is in the DAG now but was not in the recorded run",
                restorable=False,
                restore_note="not restorable: the DAG's shape changed; a replay runs the DAG's current tasks",
            )
        )
    instances: dict[str, list[Any]] = {}
    for view in recorded.tasks:
        m = view.manifest
        instances.setdefault(m.identity.task_id, []).append(m)
        pins.append(_pins_of(m))
    for task_id, manifests in instances.items():  # one drift item per task, not per map index
        now = current.get(task_id)
        if now is None:
            drift.append(
                Drift(
                    kind=DriftKind.TASK_REMOVED,
                    task_id=task_id,
                    detail="task was recorded but is no longer in the DAG (removed or renamed)",
                    restorable=False,
                    restore_note="not restorable: the DAG's shape changed; a replay runs the DAG's current tasks",
                )
            )
        else:
            drift.extend(_task_drift(manifests[0], now, recorded.repository, restore))
            drift.extend(_map_drift(manifests, now))
        drift.extend(_missing_inputs(store, task_id, [i for m in manifests for i in m.inputs]))
    conf = _original_conf(recorded)
    drift.extend(secret_drift(conf, secret_markers or {}))
    scope = _scope(recorded, from_task, downstream, store) if from_task is not None else None
    if scope is not None:
        drift = scope.mark(drift)
    return ReplayPlan(
        dag_id=recorded.dag_id,
        original_run_id=recorded.run_id,
        original_repository=recorded.repository,
        original_ref=recorded.ref,
        replay_run_id=replay_run_id,
        mode=mode,
        dag_run_conf=conf,
        tasks=pins,
        drift=drift,
        created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        unrecorded_tasks=sorted(unrecorded_tasks or ()) or None,
        from_task=from_task,
        replayed_tasks=sorted(scope.replayed) if scope is not None else None,
        reused_tasks=scope.reused if scope is not None else None,
    )


# -- replays from a task ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplayScope:
    """What a replay from ``from_task`` runs (recorded task ids) and what it reuses."""

    from_task: str
    replayed: frozenset[str]
    reused: list[ReusedTask]
    missing_outputs: list[Drift]

    def mark(self, drift: list[Drift]) -> list[Drift]:
        """Drift of reused tasks marked as such (it blocks nothing), and unreadable reused outputs added."""
        reused_ids = {task.task_id for task in self.reused}
        marked = [_as_reused(d, self.from_task) if d.task_id in reused_ids else d for d in drift]
        return marked + self.missing_outputs


def _as_reused(drift: Drift, from_task: str) -> Drift:
    update: dict[str, Any] = {"reused": True}
    if drift.kind == DriftKind.MAP_COUNT_CHANGED:
        update["restore_note"] = (
            f"task {drift.task_id} is reused by a replay from {from_task}, but it now expands to a different "
            "number of map indexes: its recorded outputs cannot stand in for them; start the replay at "
            f"{drift.task_id} or earlier"
        )
    return drift.model_copy(update=update)


def downstream_closure(task_id: str, downstream: Mapping[str, Sequence[str]]) -> set[str]:
    """``task_id`` and every task downstream of it, directly or not."""
    found = {task_id}
    pending = [task_id]
    while pending:
        for child in downstream.get(pending.pop(), ()):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def check_from_task(recorded: StoredRun, from_task: str, downstream: Mapping[str, Sequence[str]]) -> None:
    """Raise :class:`NotFoundError` unless the DAG has ``from_task`` now and the run recorded it."""
    recorded_ids = sorted({t.manifest.identity.task_id for t in recorded.tasks})
    listing = f"its recorded tasks are: {', '.join(recorded_ids)}"
    if from_task not in recorded_ids:
        raise NotFoundError(
            f"run {recorded.run_id!r} of {recorded.dag_id!r} recorded no task {from_task!r} to replay from; {listing}"
        )
    if from_task not in downstream:
        raise NotFoundError(
            f"task {from_task!r} was recorded in run {recorded.run_id!r} but is no longer in DAG "
            f"{recorded.dag_id!r} (removed or renamed): a replay cannot start from it; {listing}"
        )


def _scope(
    recorded: StoredRun, from_task: str, downstream: Mapping[str, Sequence[str]] | None, store: VersionedDataStore
) -> ReplayScope:
    if downstream is None:
        raise ReproUserError("a replay from a task needs the DAG's task graph, which the planner was not given")
    check_from_task(recorded, from_task, downstream)
    runs = downstream_closure(from_task, downstream)
    recorded_ids = {t.manifest.identity.task_id for t in recorded.tasks}
    reused = []
    missing: list[Drift] = []
    for view in recorded.tasks:
        ident = view.manifest.identity
        if ident.task_id in runs or ident.task_id not in downstream:  # a removed task cannot record its reuse
            continue
        reused.append(
            ReusedTask(
                task_id=ident.task_id,
                map_index=ident.map_index,
                commit_id=view.commit_id,
                original_manifest_digest=view.manifest.digest,
            )
        )
        missing.extend(_missing_outputs(store, view.manifest, view.commit_id))
    reused.sort(key=lambda t: (t.task_id, t.map_index))
    return ReplayScope(
        from_task=from_task, replayed=frozenset(runs & recorded_ids), reused=reused, missing_outputs=missing
    )


def _missing_outputs(store: VersionedDataStore, manifest: Any, commit_id: str) -> list[Drift]:
    """A reused task's outputs must still be readable: the replayed tasks read them."""
    missing = []
    for output in manifest.outputs:
        try:
            store.check_available(manifest.output_repository, commit_id, output.path, output.content_hash)
        except NotFoundError as exc:
            missing.append(
                Drift(
                    kind=DriftKind.OUTPUT_MISSING,
                    task_id=manifest.identity.task_id,
                    detail=f"output {output.path!r} of the reused task can no longer be read: {exc}; "
                    "replay from this task (or an earlier one) instead",
                    recorded=f"{manifest.output_repository}@{commit_id}:{output.path}",
                )
            )
    return missing


def _pins_of(m: Any) -> TaskPins:
    return TaskPins(
        task_id=m.identity.task_id,
        map_index=m.identity.map_index,
        original_manifest_digest=m.digest,
        inputs=list(m.inputs),
        seed=m.parameters.seed,
        environment_digest=m.environment.digest,
        source_hash=m.code.source_hash,
        bundle_version=m.code.bundle_version,
        task_params=m.parameters.task_params,
        op_args=m.parameters.op_args,
        op_kwargs=m.parameters.op_kwargs or None,
        code=m.code,
        environment=m.environment,
    )


def _map_drift(manifests: list[Any], now: CurrentTask) -> list[Drift]:
    """A mapped task that expands to another number of instances now (or is mapped no longer)."""
    indexes = sorted(m.identity.map_index for m in manifests)
    was_mapped = indexes != [-1]
    recorded = len(indexes) if was_mapped else None
    if was_mapped == now.mapped and (recorded == now.map_count or now.map_count is None):
        return []  # the same, or mapped over an XCom: the count is known only when it runs

    def count(mapped: bool, n: int | None) -> str:
        return "not mapped" if not mapped else f"mapped over {n if n is not None else 'an XCom'}"

    return [
        Drift(
            kind=DriftKind.MAP_COUNT_CHANGED,
            task_id=now.task_id,
            detail=f"the task was {count(was_mapped, recorded)} instance(s) and is {count(now.mapped, now.map_count)} now",
            recorded=str(recorded) if was_mapped else "not mapped",
            current=str(now.map_count) if now.mapped else "not mapped",
            restorable=False,
            restore_note=(
                "not restorable: a pinned replay runs exactly the recorded instances; latest-code runs "
                "the new ones unpinned and verify reports the recorded ones it lacks"
            ),
        )
    ]


def _task_drift(recorded: Any, now: CurrentTask, repository: str, restore: RestoreChecks | None) -> list[Drift]:
    found = [
        *_code_drift(recorded, now, repository, restore),
        *_bundle_drift(recorded, now, repository, restore),
        *_environment_drift(recorded, now, repository, restore),
    ]
    if dict(now.task_params) != recorded.parameters.task_params:
        changed = sorted(
            key
            for key in set(now.task_params) | set(recorded.parameters.task_params)
            if now.task_params.get(key) != recorded.parameters.task_params.get(key)
        )
        found.append(
            Drift(
                kind=DriftKind.PARAMS_CHANGED,
                task_id=now.task_id,
                detail=f"params {changed} resolve to other values now (DAG defaults changed?)",
                recorded=canonical_json(recorded.parameters.task_params).decode(),
                current=canonical_json(dict(now.task_params)).decode(),
            )
        )
    return found


def code_changed(recorded: CodeVersion, source_hash: str, snapshot: str | None) -> bool:
    """Whether the code now differs from the recorded code: the callable's own source, or (where
    both are known) any module of the DAG bundle it imports."""
    if recorded.source_hash != source_hash:
        return True
    return recorded.snapshot is not None and snapshot is not None and recorded.snapshot != snapshot


def _code_drift(recorded: Any, now: CurrentTask, repository: str, restore: RestoreChecks | None) -> list[Drift]:
    code: CodeVersion = recorded.code
    current = restore.current_code(recorded.parameters, dict(now.task_params)) if restore is not None else None
    if not code_changed(code, now.source_hash, current.digest if current is not None else now.code_snapshot):
        return []
    detail = "the task's source code changed"
    diff = None
    restorable, note = _code_restorable(code, repository, restore)
    if restorable and code.snapshot is not None and restore is not None and current is not None:
        from airflow_repro.core.code_snapshot import changed_files, snapshot_diff

        archived = restore.archived_code(repository, code.snapshot)
        files = [f"{path} ({change})" for path, change in changed_files(archived, current)]
        if code.source_hash == now.source_hash and files:
            detail = f"code the task imports changed: {', '.join(files)}"
        elif files:
            detail = f"the task's source code changed; files: {', '.join(files)}"
        diff = snapshot_diff(archived, current) or None
    return [
        Drift(
            kind=DriftKind.CODE_CHANGED,
            task_id=now.task_id,
            detail=detail,
            recorded=code.snapshot or code.source_hash,
            current=now.code_snapshot or now.source_hash,
            restorable=restorable,
            restore_note=note,
            diff=diff,
        )
    ]


def _code_restorable(code: CodeVersion, repository: str, restore: RestoreChecks | None) -> tuple[bool, str]:
    """Whether the recorded code is archived intact (a snapshot, or a pod's script)."""
    if restore is None:
        return False, "restoring needs the archive, which this planner was not given"
    try:
        if code.script is not None:
            restore.check_archived(repository, "script", code.script)
            return True, f"restored: the pod is sent the archived script {code.script}"
        if code.snapshot is None:
            return False, (
                "not restorable: no code of this task was archived (recorded before archiving existed, "
                "or a pod task started by its own command)"
            )
        restore.archived_code(repository, code.snapshot)
    except ReproError as exc:
        return False, f"not restorable: {exc}"
    return True, f"restored: the task runs the archived code snapshot {code.snapshot}"


def _bundle_drift(recorded: Any, now: CurrentTask, repository: str, restore: RestoreChecks | None) -> list[Drift]:
    code: CodeVersion = recorded.code
    if code.bundle_version == now.bundle_version:
        return []
    restorable, note = _code_restorable(code, repository, restore)
    return [
        Drift(
            kind=DriftKind.BUNDLE_VERSION_CHANGED,
            task_id=now.task_id,
            detail="the DAG bundle is at another version",
            recorded=code.bundle_version,
            current=now.bundle_version,
            restorable=restorable,
            restore_note=note,
        )
    ]


PLANNER_CHECKED = (
    "checked in the planning process (CLI or API server), whose environment stands for the workers'; "
    "each worker checks its own again when the task starts"
)


def _environment_drift(recorded: Any, now: CurrentTask, repository: str, restore: RestoreChecks | None) -> list[Drift]:
    pin: EnvironmentPin = recorded.environment
    if pin.kind == "fingerprint" and restore is not None:
        return _fingerprint_drift(pin, now.task_id, repository, restore)
    if now.environment_digest is None or now.environment_digest == pin.digest:
        return []
    restorable, note = False, "not restorable: the image is pinned by the DAG; pin the recorded digest again"
    if pin.kind == "fingerprint":
        restorable, note = False, "restoring needs the archive, which this planner was not given"
    elif pin.kind == "lockfile":
        restorable, note = _archived(restore, repository, "lockfile", pin.digest, "the recorded lockfile")
    return [
        Drift(
            kind=DriftKind.ENVIRONMENT_CHANGED,
            task_id=now.task_id,
            detail=f"the {pin.kind} pin differs from the environment available now",
            recorded=pin.digest,
            current=now.environment_digest,
            restorable=restorable,
            restore_note=note,
        )
    ]


def _archived(restore: RestoreChecks | None, repository: str, kind: str, digest: str, what: str) -> tuple[bool, str]:
    if restore is None:
        return False, "restoring needs the archive, which this planner was not given"
    try:
        restore.check_archived(repository, kind, digest)
    except ReproError as exc:
        return False, f"not restorable: {exc}"
    return True, f"restored: the task's environment is rebuilt from {what} ({digest})"


def _fingerprint_drift(
    pin: EnvironmentPin, task_id: str, repository: str, restore: RestoreChecks | None
) -> list[Drift]:
    current = restore.current_environment() if restore is not None else None
    if restore is None or current is None or current.digest == pin.digest:
        return []  # the worker checks (and restores) when the task starts
    changes: list[str] | None = None
    try:
        archived = restore.archived_environment(repository, pin.digest)
    except ReproError as exc:
        restorable, note = False, f"not restorable: {exc}"
    else:
        from airflow_repro.core.environment_record import diff_environments

        changes = [change.text for change in diff_environments(archived, current)]
        problems = restore.environment_problems(archived)
        restorable = not problems
        note = (
            f"restored: the task runs in an environment rebuilt from the recorded distributions; {PLANNER_CHECKED}"
            if restorable
            else "not restorable: " + "; ".join(problems)
        )
    return [
        Drift(
            kind=DriftKind.ENVIRONMENT_CHANGED,
            task_id=task_id,
            detail="installed distributions differ from the recorded environment"
            + (
                f": {', '.join(changes[:5])}" + (f" and {len(changes) - 5} more" if len(changes) > 5 else "")
                if changes
                else ""
            ),
            recorded=pin.digest,
            current=current.digest,
            restorable=restorable,
            restore_note=note,
            changes=changes,
        )
    ]


def secret_drift(conf: Mapping[str, Any], supplied: Mapping[str, str]) -> list[Drift]:
    """Each redacted conf entry needs its value again: missing ones block, changed ones are named."""
    recorded = {dotted(path): marker for path, marker in redacted_paths(conf)}
    unknown = sorted(set(supplied) - set(recorded))
    if unknown:
        raise ReproUserError(
            f"secrets given for {unknown}, which are not redacted DAG-run conf entries of the recorded run "
            f"(those are: {sorted(recorded) or 'none'})"
        )
    found = []
    for key, marker in sorted(recorded.items()):
        if key not in supplied:
            found.append(
                Drift(
                    kind=DriftKind.SECRET_MISSING,
                    task_id="(dag-run conf)",
                    recorded=marker,
                    detail=(
                        f"DAG-run conf entry {key!r} is a secret: only its keyed digest was recorded. Give its value "
                        f"again: CLI --secret {key}=env:VARIABLE or --secret {key}=variable:AIRFLOW_VARIABLE, "
                        f'API body "secrets": {{"{key}": "..."}}'
                    ),
                )
            )
        elif supplied[key] != marker:
            found.append(
                Drift(
                    kind=DriftKind.SECRET_CHANGED,
                    task_id="(dag-run conf)",
                    recorded=marker,
                    current=supplied[key],
                    detail=f"the value given for secret conf entry {key!r} differs from the recorded one",
                )
            )
    return found


def conf_with_secrets(conf: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The replay run's conf: the recorded conf with each redacted entry given its value again."""
    paths = {dotted(path): path for path, _marker in redacted_paths(conf)}
    result = dict(conf)
    for key, value in values.items():
        result = with_value_at(result, paths[key], value)
    return result


def _missing_inputs(store: VersionedDataStore, task_id: str, inputs: list[DataInput]) -> list[Drift]:
    missing = []
    seen: set[tuple[str, str, str]] = set()
    for pinned in inputs:
        where = (pinned.repository, pinned.commit_id, pinned.path)
        if where in seen:  # map indexes of one task often read the same input: name it once
            continue
        seen.add(where)
        try:
            store.check_available(pinned.repository, pinned.commit_id, pinned.path, pinned.content_hash)
        except NotFoundError as exc:
            missing.append(
                Drift(
                    kind=DriftKind.INPUT_MISSING,
                    task_id=task_id,
                    detail=f"input {pinned.name!r} can no longer be read: {exc}",
                    recorded=f"{pinned.repository}@{pinned.commit_id}:{pinned.path}",
                )
            )
    return missing


def _original_conf(recorded: StoredRun) -> dict[str, Any]:
    confs = {canonical_json(t.manifest.parameters.dag_run_conf) for t in recorded.tasks}
    if len(confs) > 1:  # cannot happen within one DAG run; refuse rather than guess
        raise ReproUserError(f"run {recorded.run_id!r}: its tasks recorded different DAG-run confs")
    return dict(recorded.tasks[0].manifest.parameters.dag_run_conf)


@dataclass(frozen=True)
class ReplayMarker:
    """The DAG-run conf entry (:data:`REPLAY_CONF_KEY`) that tells each task of a run that it is a
    replay, and of what: written when the replay is triggered, read by every recorded task.

    ``repository`` names where the plan is stored when the trigger knows it (else the task's own).
    """

    of: str  # the replayed run's id
    mode: str
    plan_digest: str
    plan: str = REPLAY_PLAN_PATH  # where the plan is, on the replay run's branch
    repository: str | None = None

    @classmethod
    def for_plan(cls, plan: ReplayPlan, *, repository: str | None = None) -> ReplayMarker:
        return cls(of=plan.original_run_id, mode=plan.mode, plan_digest=plan.digest, repository=repository)

    def to_conf(self) -> dict[str, Any]:
        """The entry's value (``repository`` only where it is known)."""
        value = {"of": self.of, "mode": self.mode, "plan": self.plan, "plan_digest": self.plan_digest}
        if self.repository is not None:
            value["repository"] = self.repository
        return value

    def add_to(self, conf: Mapping[str, Any]) -> dict[str, Any]:
        """``conf`` with this marker in it: the conf a replay run is triggered with."""
        return {**conf, REPLAY_CONF_KEY: self.to_conf()}

    @classmethod
    def from_conf(cls, conf: Mapping[str, Any] | None) -> ReplayMarker | None:
        """The marker in a DAG run's conf; ``None`` if the run is no replay."""
        value = (conf or {}).get(REPLAY_CONF_KEY)
        if not value:
            return None
        if not isinstance(value, Mapping):
            raise ManifestError(f"the DAG-run conf's {REPLAY_CONF_KEY!r} entry is not a replay marker: {value!r}")

        def text(key: str) -> str:  # a missing plan_digest reads as "": it matches no plan
            return value[key] if isinstance(value.get(key), str) else ""

        return cls(
            of=text("of"),
            mode=text("mode"),
            plan_digest=text("plan_digest"),
            plan=text("plan") or REPLAY_PLAN_PATH,
            repository=text("repository") or None,
        )

    @staticmethod
    def strip(values: Mapping[str, Any]) -> dict[str, Any]:
        """Params or conf as the user gave them: without the marker (a manifest records it in ``replay``)."""
        return {key: value for key, value in values.items() if key != REPLAY_CONF_KEY}


def replay_marker(plan: ReplayPlan) -> dict[str, Any]:
    """The conf entry that tells each task of the new run it is a replay, and of what."""
    return ReplayMarker.for_plan(plan).to_conf()


def save_plan(store: VersionedDataStore, plan: ReplayPlan, *, default_branch: str) -> str:
    """Commit the plan on the replay's own branch (made from ``default_branch``); return the commit."""
    branch = run_branch_name(plan.dag_id, plan.replay_run_id)
    store.create_branch(plan.original_repository, branch, default_branch, exist_ok=True)
    staged = store.stage_bytes(plan.original_repository, plan.canonical_json())
    commit = store.commit(
        plan.original_repository,
        branch,
        {REPLAY_PLAN_PATH: staged},
        message=f"{plan.dag_id}: replay plan of {plan.original_run_id} ({plan.mode})",
        metadata={
            keys.KIND: "replay-plan",
            keys.REPLAY_OF: plan.original_run_id,
            keys.REPLAY_MODE: plan.mode,
            keys.LAKEFS_AIRFLOW_DAG_ID: plan.dag_id,
            keys.LAKEFS_AIRFLOW_RUN_ID: plan.replay_run_id,
        },
    )
    return commit.id


def load_plan(store: VersionedDataStore, repository: str, dag_id: str, replay_run_id: str) -> ReplayPlan:
    branch = run_branch_name(dag_id, replay_run_id)
    return read_json_model(store, repository, branch, REPLAY_PLAN_PATH, ReplayPlan, "the replay plan")


def list_replays(store: VersionedDataStore, repository: str, dag_id: str, run_id: str) -> list[ReplayPlan]:
    """Every replay of ``run_id`` (direct ones; a replay of a replay lists under its own original)."""
    prefix = run_branch_name(dag_id, "replay__")[: -len("_0123456789")]
    plans = []
    for branch in sorted(store.list_branches(repository)):
        if not branch.startswith(prefix):
            continue
        try:
            plan = read_json_model(store, repository, branch, REPLAY_PLAN_PATH, ReplayPlan, "the replay plan")
        except (NotFoundError, ManifestError):
            continue
        if plan.dag_id == dag_id and plan.original_run_id == run_id:
            plans.append(plan)
    return sorted(plans, key=lambda p: p.created_at)
