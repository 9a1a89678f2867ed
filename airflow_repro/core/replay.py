"""Replay planning: from a recorded DAG run, the pins of each task, and what can no longer hold.

Pure: the caller gives the recorded run (from the store) and a description of the DAG as it is
now (parsed by the Airflow shell). Every pin is checked before anything runs; the drift report
says precisely what changed. Mode ``pinned`` refuses any drift; mode ``latest-code`` accepts
drift of code and environment (and tasks added or removed) but never of data or parameters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from airflow_repro.core import metadata_keys as keys
from airflow_repro.core.manifest import SCHEMA_VERSION, DataInput, canonical_json
from airflow_repro.core.naming import run_branch_name
from airflow_repro.core.ports import VersionedDataStore
from airflow_repro.core.redaction import dotted, redacted_paths, with_value_at
from airflow_repro.core.runs import StoredRun, read_json_model
from airflow_repro.errors import ManifestError, NotFoundError, ReproUserError

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
    }
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Drift(_Frozen):
    kind: DriftKind
    task_id: str
    detail: str
    recorded: str | None = None
    current: str | None = None

    def blocks(self, mode: ReplayMode) -> bool:
        return mode == "pinned" or self.kind not in CODE_DRIFT


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


class ReplayPlan(_Frozen):
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

    @property
    def blocking_drift(self) -> list[Drift]:
        return [d for d in self.drift if d.blocks(self.mode)]

    def refusal_message(self) -> str:
        """Why this plan cannot be triggered: the message of :class:`~airflow_repro.errors.ReplayRefused`."""
        lines = [f"- [{d.kind}] {d.task_id}: {d.detail}" for d in self.blocking_drift]
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

    def canonical_json(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.canonical_json()).hexdigest()


@dataclass(frozen=True)
class CurrentTask:
    """A recorded task as the DAG defines it now (from the parsed DAG file)."""

    task_id: str
    source_hash: str
    environment_digest: str | None  # None: cannot be checked by the planning process
    bundle_version: str | None = None
    task_params: Mapping[str, Any] = field(default_factory=dict)


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
) -> ReplayPlan:
    """Pins for every recorded task and the drift between the record and the DAG as it is now.

    ``secret_markers``: for each redacted DAG-run conf entry (dotted path) the user gives a value
    for, that value's marker; the recorded conf holds only markers, so a replay needs the values.
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
            )
        )
    for view in recorded.tasks:
        m = view.manifest
        task_id = m.identity.task_id
        pins.append(
            TaskPins(
                task_id=task_id,
                map_index=m.identity.map_index,
                original_manifest_digest=m.digest,
                inputs=list(m.inputs),
                seed=m.parameters.seed,
                environment_digest=m.environment.digest,
                source_hash=m.code.source_hash,
                bundle_version=m.code.bundle_version,
                task_params=m.parameters.task_params,
            )
        )
        now = current.get(task_id)
        if now is None:
            drift.append(
                Drift(
                    kind=DriftKind.TASK_REMOVED,
                    task_id=task_id,
                    detail="task was recorded but is no longer in the DAG (removed or renamed)",
                )
            )
        else:
            drift.extend(_task_drift(m, now))
        drift.extend(_missing_inputs(store, task_id, m.inputs))
    conf = _original_conf(recorded)
    drift.extend(secret_drift(conf, secret_markers or {}))
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
    )


def _task_drift(recorded: Any, now: CurrentTask) -> list[Drift]:
    task_id = now.task_id
    found = []
    checks = (
        (DriftKind.CODE_CHANGED, recorded.code.source_hash, now.source_hash, "the task's source code changed"),
        (
            DriftKind.BUNDLE_VERSION_CHANGED,
            recorded.code.bundle_version,
            now.bundle_version,
            "the DAG bundle is at another version",
        ),
        (
            DriftKind.ENVIRONMENT_CHANGED,
            recorded.environment.digest,
            now.environment_digest,
            f"the {recorded.environment.kind} pin differs from the environment available now",
        ),
    )
    for kind, was, is_now, detail in checks:
        if kind is DriftKind.ENVIRONMENT_CHANGED and is_now is None:
            continue
        if was != is_now:
            found.append(Drift(kind=kind, task_id=task_id, detail=detail, recorded=was, current=is_now))
    if dict(now.task_params) != recorded.parameters.task_params:
        changed = sorted(
            key
            for key in set(now.task_params) | set(recorded.parameters.task_params)
            if now.task_params.get(key) != recorded.parameters.task_params.get(key)
        )
        found.append(
            Drift(
                kind=DriftKind.PARAMS_CHANGED,
                task_id=task_id,
                detail=f"params {changed} resolve to other values now (DAG defaults changed?)",
                recorded=canonical_json(recorded.parameters.task_params).decode(),
                current=canonical_json(dict(now.task_params)).decode(),
            )
        )
    return found


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
    for pinned in inputs:
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
