"""Verification: did a replay reproduce the original, output by output?

Outputs are compared by the content hashes both manifests recorded, so nothing already hashed is
read again: the cost grows with the number of objects, not their size. Metrics are compared within
a tolerance (exact by default). A deep verification (``add_damage``) also re-reads both runs'
outputs from the store: an output whose stored bytes no longer match makes its task differ.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from airflow_repro.core import metadata_keys as keys
from airflow_repro.core.integrity import DamagedOutput, damaged_outputs
from airflow_repro.core.manifest import SCHEMA_VERSION, DataOutput, TaskManifest, canonical_json
from airflow_repro.core.naming import run_branch_name
from airflow_repro.core.ports import VersionedDataStore
from airflow_repro.core.runs import StoredRun, read_json_model
from airflow_repro.errors import ReproUserError

VERIFICATION_PATH = "_repro/verification.json"
Verdict = Literal["identical", "differs"]
TaskStatus = Literal["identical", "differs", "missing"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ObjectSide(_Frozen):
    content_hash: str
    size: int


class ObjectDifference(_Frozen):
    path: str
    change: Literal["changed", "missing_in_replay", "extra_in_replay", "damaged_in_original", "damaged_in_replay"]
    original: ObjectSide | None = None
    replay: ObjectSide | None = None
    detail: str | None = None  # what is wrong with a damaged object, as the store said


MetricValue = float | Literal["NaN", "Infinity", "-Infinity"] | None


class MetricDifference(_Frozen):
    """Non-finite values are spelled as JSON has no number for them: "NaN", "Infinity", "-Infinity"."""

    name: str
    original: MetricValue
    replay: MetricValue
    abs_diff: MetricValue = None


class TaskVerification(_Frozen):
    task_id: str
    map_index: int = -1
    status: TaskStatus
    objects_compared: int = 0
    objects: list[ObjectDifference] = Field(default_factory=list)
    metrics: list[MetricDifference] = Field(default_factory=list)
    original_manifest_digest: str | None = None
    replay_manifest_digest: str | None = None


class Tolerance(_Frozen):
    """A metric matches when ``|a - b| <= abs + rel * |a|`` (both 0 by default: exact)."""

    abs: float = Field(default=0.0, ge=0)
    rel: float = Field(default=0.0, ge=0)

    def matches(self, original: float, replay: float) -> bool:
        if original == replay:  # also equal infinities, whose difference is NaN
            return True
        if math.isnan(original) or math.isnan(replay):
            return math.isnan(original) and math.isnan(replay)
        return abs(original - replay) <= self.abs + self.rel * abs(original)


class VerificationReport(_Frozen):
    schema_version: Literal["1.0"] = SCHEMA_VERSION
    kind: Literal["airflow-repro/verification"] = "airflow-repro/verification"
    dag_id: str
    original_run_id: str
    replay_run_id: str
    verdict: Verdict
    tolerance: Tolerance
    tasks: list[TaskVerification]
    verified_at: str

    def canonical_json(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {"identical": 0, "differs": 0, "missing": 0}
        for task in self.tasks:
            counts[task.status] += 1
        return counts


TaskKey = tuple[str, int]
MetricsByTask = Mapping[TaskKey, Mapping[str, float]]


def verify_replay(
    original: StoredRun,
    replay: StoredRun,
    *,
    original_metrics: MetricsByTask | None = None,
    replay_metrics: MetricsByTask | None = None,
    tolerance: Tolerance | None = None,
) -> VerificationReport:
    """Compare every task of the original with its replay, object by object and metric by metric."""
    if original.dag_id != replay.dag_id:
        raise ReproUserError(
            f"cannot verify {replay.run_id!r} of {replay.dag_id!r} against a run of {original.dag_id!r}"
        )
    tolerance = tolerance or Tolerance()
    replayed = {_key(t.manifest): t.manifest for t in replay.tasks}
    tasks = []
    for view in original.tasks:
        key = _key(view.manifest)
        tasks.append(
            compare_task(
                view.manifest,
                replayed.get(key),
                (original_metrics or {}).get(key, {}),
                (replay_metrics or {}).get(key, {}),
                tolerance,
            )
        )
    verdict: Verdict = "identical" if all(t.status == "identical" for t in tasks) else "differs"
    return VerificationReport(
        dag_id=original.dag_id,
        original_run_id=original.run_id,
        replay_run_id=replay.run_id,
        verdict=verdict,
        tolerance=tolerance,
        tasks=tasks,
        verified_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    )


def compare_task(
    original: TaskManifest,
    replay: TaskManifest | None,
    original_metrics: Mapping[str, float],
    replay_metrics: Mapping[str, float],
    tolerance: Tolerance,
) -> TaskVerification:
    ident = original.identity
    if replay is None:
        return TaskVerification(
            task_id=ident.task_id, map_index=ident.map_index, status="missing", original_manifest_digest=original.digest
        )
    objects = compare_outputs(original.outputs, replay.outputs)
    metrics = compare_metrics(original_metrics, replay_metrics, tolerance)
    return TaskVerification(
        task_id=ident.task_id,
        map_index=ident.map_index,
        status="identical" if not objects and not metrics else "differs",
        objects_compared=len({o.path for o in original.outputs} | {o.path for o in replay.outputs}),
        objects=objects,
        metrics=metrics,
        original_manifest_digest=original.digest,
        replay_manifest_digest=replay.digest,
    )


def compare_outputs(original: list[DataOutput], replay: list[DataOutput]) -> list[ObjectDifference]:
    before = {o.path: o for o in original}
    after = {o.path: o for o in replay}
    differences = []
    for path in sorted(before.keys() | after.keys()):
        a, b = before.get(path), after.get(path)
        if a is not None and b is not None and a.content_hash == b.content_hash:
            continue
        change = "changed" if a and b else ("missing_in_replay" if a else "extra_in_replay")
        differences.append(
            ObjectDifference(
                path=path,
                change=change,
                original=ObjectSide(content_hash=a.content_hash, size=a.size) if a else None,
                replay=ObjectSide(content_hash=b.content_hash, size=b.size) if b else None,
            )
        )
    return differences


def compare_metrics(
    original: Mapping[str, float], replay: Mapping[str, float], tolerance: Tolerance
) -> list[MetricDifference]:
    differences = []
    for name in sorted(original.keys() | replay.keys()):
        a, b = original.get(name), replay.get(name)
        if a is not None and b is not None and tolerance.matches(a, b):
            continue
        differences.append(
            MetricDifference(
                name=name,
                original=_json_number(a),
                replay=_json_number(b),
                abs_diff=_json_number(abs(a - b)) if a is not None and b is not None else None,
            )
        )
    return differences


def _json_number(value: float | None) -> MetricValue:
    if value is None or math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _key(manifest: TaskManifest) -> TaskKey:
    return (manifest.identity.task_id, manifest.identity.map_index)


def run_damage(store: VersionedDataStore, run: StoredRun) -> list[DamagedOutput]:
    """Re-read every output of a recorded run from the store and re-hash it: the damaged ones."""
    return damaged_outputs(store, run.repository, [(t.commit_id, t.manifest) for t in run.tasks])


def add_damage(
    report: VerificationReport, original: list[DamagedOutput], replay: list[DamagedOutput]
) -> VerificationReport:
    """The report with the outputs found damaged on either side: their tasks (and so the verdict)
    differ, whatever the recorded hashes say."""
    found: dict[TaskKey, list[ObjectDifference]] = {}
    for side, damaged in (("original", original), ("replay", replay)):
        for d in damaged:
            found.setdefault((d.task_id, d.map_index), []).append(
                ObjectDifference.model_validate(
                    {
                        "path": d.path,
                        "change": f"damaged_in_{side}",
                        "detail": d.detail,
                        side: {"content_hash": d.content_hash, "size": d.size},
                    }
                )
            )
    if not found:
        return report
    tasks = [_with_objects(t, found.get((t.task_id, t.map_index), [])) for t in report.tasks]
    verdict: Verdict = "identical" if all(t.status == "identical" for t in tasks) else "differs"
    return report.model_copy(update={"tasks": tasks, "verdict": verdict})


def _with_objects(task: TaskVerification, damaged: list[ObjectDifference]) -> TaskVerification:
    if not damaged:
        return task
    status: TaskStatus = "missing" if task.status == "missing" else "differs"
    return task.model_copy(update={"objects": [*task.objects, *damaged], "status": status})


def save_report(store: VersionedDataStore, repository: str, report: VerificationReport) -> str:
    """Commit the report on the replay's branch, next to the data it judges; return the commit."""
    branch = run_branch_name(report.dag_id, report.replay_run_id)
    staged = store.stage_bytes(repository, report.canonical_json())
    commit = store.commit(
        repository,
        branch,
        {VERIFICATION_PATH: staged},
        message=f"{report.dag_id}: verification of {report.replay_run_id}: {report.verdict}",
        metadata={
            keys.KIND: "verification",
            keys.VERDICT: report.verdict,
            keys.REPLAY_OF: report.original_run_id,
            keys.LAKEFS_AIRFLOW_DAG_ID: report.dag_id,
            keys.LAKEFS_AIRFLOW_RUN_ID: report.replay_run_id,
        },
        allow_empty=True,
    )
    return commit.id


def load_report(store: VersionedDataStore, repository: str, dag_id: str, replay_run_id: str) -> VerificationReport:
    branch = run_branch_name(dag_id, replay_run_id)
    return read_json_model(store, repository, branch, VERIFICATION_PATH, VerificationReport, "the verification report")


class FieldDifference(_Frozen):
    task_id: str
    field: str
    a: str | None
    b: str | None


class RunDiff(_Frozen):
    """What differs between two recorded runs of one DAG: pins (manifest fields) and outputs."""

    dag_id: str
    run_a: str
    run_b: str
    only_in_a: list[str] = Field(default_factory=list)
    only_in_b: list[str] = Field(default_factory=list)
    fields: list[FieldDifference] = Field(default_factory=list)
    objects: dict[str, list[ObjectDifference]] = Field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return not (self.only_in_a or self.only_in_b or self.fields or self.objects)


_PINNED_FIELDS: dict[str, Callable[[TaskManifest], object]] = {
    "code.source_hash": lambda m: m.code.source_hash,
    "code.bundle_version": lambda m: m.code.bundle_version,
    "environment": lambda m: f"{m.environment.kind}:{m.environment.digest}",
    "parameters.seed": lambda m: m.parameters.seed,
    "parameters.task_params": lambda m: m.parameters.task_params,
    "parameters.dag_run_conf": lambda m: m.parameters.dag_run_conf,
    "parameters.op_kwargs": lambda m: m.parameters.op_kwargs,
    "parameters.op_args": lambda m: m.parameters.op_args,
    "code.snapshot": lambda m: m.code.snapshot,
    "inputs": lambda m: sorted(f"{i.name}={i.repository}@{i.commit_id}:{i.path}" for i in m.inputs),
    "resources": lambda m: m.resources.model_dump(),
}


def diff_runs(run_a: StoredRun, run_b: StoredRun) -> RunDiff:
    tasks_a = {_label(t.manifest): t.manifest for t in run_a.tasks}
    tasks_b = {_label(t.manifest): t.manifest for t in run_b.tasks}
    fields, objects = [], {}
    for label in sorted(tasks_a.keys() & tasks_b.keys()):
        a, b = tasks_a[label], tasks_b[label]
        for name, read in _PINNED_FIELDS.items():
            value_a, value_b = read(a), read(b)
            if value_a != value_b:
                fields.append(FieldDifference(task_id=label, field=name, a=_text(value_a), b=_text(value_b)))
        changed = compare_outputs(a.outputs, b.outputs)
        if changed:
            objects[label] = changed
    return RunDiff(
        dag_id=run_a.dag_id,
        run_a=run_a.run_id,
        run_b=run_b.run_id,
        only_in_a=sorted(tasks_a.keys() - tasks_b.keys()),
        only_in_b=sorted(tasks_b.keys() - tasks_a.keys()),
        fields=fields,
        objects=objects,
    )


def _label(manifest: TaskManifest) -> str:
    ident = manifest.identity
    return ident.task_id if ident.map_index < 0 else f"{ident.task_id}[{ident.map_index}]"


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else canonical_json(value).decode()
