"""Verification: did a replay reproduce the original, output by output, and if not, why?

Outputs are first compared by the content hashes both manifests recorded: an output whose hashes
match is ``identical`` and nothing is read. Only an output whose hashes differ is read, streamed
from the store at both commits, and compared by its format (:mod:`airflow_repro.core.comparison`):
``equivalent`` (different bytes, equal within its tolerance) or ``differs``, with where and by how
much. Metrics are compared within a tolerance (exact by default). A task's status is the weakest
of its objects' and metrics' (identical > equivalent > differs); the run's verdict is the weakest
of its tasks' (a task missing from the replay makes it differ).

Which tolerance an object is compared within: an override given to the verification (the CLI's
``--abs-tol/--rel-tol``, the API's ``abs_tol/rel_tol``), else the one the original task declared
for it (``Output(rel_tol=...)``, recorded in its manifest), else exact. What the replay declares
is ignored: a replay running changed code cannot loosen its own verdict. The same override is
the metrics' tolerance (metrics are exact without one).

For every task that is not identical, the two manifests are lined up and what they record
differently (hardware, thread settings, library versions, environment pin, seed, code, inputs)
is listed as its ``likely_causes``; where nothing differs, the task itself is likely
nondeterministic, and :func:`repeat_report` says whether replays on the same pins even agree
with each other.

A deep verification (``add_damage``) also re-reads both runs' outputs from the store: an output
whose stored bytes no longer match makes its task differ. Every report is bounded: at most
:data:`MAX_EXPLAINED` objects get a content comparison (each with bounded details), the rest are
counted and said to be unexplained.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from airflow_repro.core import metadata_keys as keys
from airflow_repro.core.comparison import ComparatorRegistry, ObjectComparison, compare_objects
from airflow_repro.core.comparison import Tolerance as ObjectTolerance
from airflow_repro.core.integrity import DamagedOutput, damaged_outputs
from airflow_repro.core.manifest import SCHEMA_VERSION, DataOutput, TaskManifest, canonical_json
from airflow_repro.core.naming import run_branch_name
from airflow_repro.core.ports import VersionedDataStore
from airflow_repro.core.runs import StoredRun, StoredTaskManifest, read_json_model
from airflow_repro.errors import NotFoundError, ReproUserError, StoreCorruption

VERIFICATION_PATH = "_repro/verification.json"
Verdict = Literal["identical", "equivalent", "differs"]
TaskStatus = Literal["identical", "equivalent", "differs", "missing"]
#: Weakest wins: a task missing from the replay makes the run differ.
_RANK: dict[str, int] = {"identical": 0, "equivalent": 1, "differs": 2, "missing": 2}
#: At most this many objects per report are compared by content; the others are counted.
MAX_EXPLAINED = 50
#: At most this many likely causes per task (library changes beyond are counted in the last one).
MAX_CAUSES = 12


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
    detail: str | None = None  # what is wrong with a damaged object, or why it was not compared
    comparison: ObjectComparison | None = Field(
        default=None,
        description="What the content comparison found (changed objects only, at most MAX_EXPLAINED per report).",
    )
    tolerance_source: Literal["override", "declared", "exact"] | None = Field(
        default=None, description="Where the comparison's tolerance came from."
    )

    @property
    def status(self) -> Literal["equivalent", "differs"]:
        """``equivalent`` only where the content comparison said so; any other difference differs."""
        if self.change == "changed" and self.comparison is not None:
            return self.comparison.verdict
        return "differs"


MetricValue = float | Literal["NaN", "Infinity", "-Infinity"] | None


class MetricDifference(_Frozen):
    """Non-finite values are spelled as JSON has no number for them: "NaN", "Infinity", "-Infinity"."""

    name: str
    original: MetricValue
    replay: MetricValue
    abs_diff: MetricValue = None
    within_tolerance: bool = Field(default=False, description="Not equal, but within the tolerance: equivalent.")


class LikelyCause(_Frozen):
    """Something the two manifests record differently besides the outputs, or ``nondeterministic``."""

    kind: Literal[
        "hardware",
        "gpu",
        "threads",
        "library",
        "environment",
        "seed",
        "code",
        "inputs",
        "resources",
        "nondeterministic",
    ]
    detail: str


class TaskVerification(_Frozen):
    task_id: str
    map_index: int = -1
    status: TaskStatus
    objects_compared: int = 0
    objects: list[ObjectDifference] = Field(default_factory=list)
    metrics: list[MetricDifference] = Field(default_factory=list)
    original_manifest_digest: str | None = None
    replay_manifest_digest: str | None = None
    likely_causes: list[LikelyCause] = Field(default_factory=list)
    reused: bool = Field(
        default=False,
        description="The replay started from a later task: this one did not run, its outputs were reused.",
    )


class Tolerance(_Frozen):
    """A metric matches when ``|a - b| <= abs + rel * |a|`` (both 0 by default: exact)."""

    abs: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    rel: float = Field(default=0.0, ge=0, allow_inf_nan=False)

    def matches(self, original: float, replay: float) -> bool:
        if original == replay:  # also equal infinities, whose difference is NaN
            return True
        if math.isnan(original) or math.isnan(replay):
            return math.isnan(original) and math.isnan(replay)
        return abs(original - replay) <= self.abs + self.rel * abs(original)

    def for_objects(self) -> ObjectTolerance:
        return ObjectTolerance(abs_tol=self.abs, rel_tol=self.rel)


class RepeatedTask(_Frozen):
    """One task over the replays of a repeat: how many distinct outcomes (output hashes) they gave."""

    task_id: str
    map_index: int = -1
    replays: int = Field(description="Replays that recorded the task (the verified one and the repeats).")
    distinct_outcomes: int
    agrees_with_original: int = Field(description="Of those replays, how many reproduced the original's outputs.")
    conclusion: Literal["intrinsic_nondeterminism", "drift", "reproduced", "incomplete"]
    detail: str


class RepeatReport(_Frozen):
    """``--repeat N``: N more replays on the same pins, and whether the replays agree with each other."""

    runs: list[str] = Field(description="Run ids of the repeated replays.")
    tasks: list[RepeatedTask]
    note: str | None = None


class VerificationReport(_Frozen):
    schema_version: Literal["1.0"] = SCHEMA_VERSION
    kind: Literal["airflow-repro/verification"] = "airflow-repro/verification"
    dag_id: str
    original_run_id: str
    replay_run_id: str
    verdict: Verdict
    tolerance: Tolerance
    object_tolerance: ObjectTolerance | None = Field(
        default=None, description="The tolerance given for every object, overriding the declared ones."
    )
    tasks: list[TaskVerification]
    verified_at: str
    explained: int = Field(default=0, description="Changed objects compared by content.")
    unexplained: int = Field(default=0, description="Changed objects not compared by content (over the cap).")
    note: str | None = None
    repeats: RepeatReport | None = None

    def canonical_json(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {"identical": 0, "equivalent": 0, "differs": 0, "missing": 0}
        for task in self.tasks:
            counts[task.status] += 1
        return counts


TaskKey = tuple[str, int]
MetricsByTask = Mapping[TaskKey, Mapping[str, float]]
#: Compares the contents of one changed output: (original task, replay task, path, tolerance).
ContentComparer = Callable[[StoredTaskManifest, StoredTaskManifest, str, ObjectTolerance], ObjectComparison]


def store_comparer(
    store: VersionedDataStore, original: StoredRun, replay: StoredRun, registry: ComparatorRegistry | None = None
) -> ContentComparer:
    """Compares an output's two contents streamed from the store, each at the commit of its task."""

    def compare(
        a: StoredTaskManifest, b: StoredTaskManifest, path: str, tolerance: ObjectTolerance
    ) -> ObjectComparison:
        return compare_objects(
            path,
            lambda: store.open_object(original.repository, a.commit_id, path),
            lambda: store.open_object(replay.repository, b.commit_id, path),
            tolerance,
            registry=registry,
        )

    return compare


@dataclass
class _Explaining:
    """The content comparison of one verification, and how many objects it may still explain."""

    compare: ContentComparer | None
    override: ObjectTolerance | None
    left: int
    explained: int = 0
    unexplained: int = 0


def verify_replay(
    original: StoredRun,
    replay: StoredRun,
    *,
    original_metrics: MetricsByTask | None = None,
    replay_metrics: MetricsByTask | None = None,
    tolerance: Tolerance | None = None,
    object_tolerance: ObjectTolerance | None = None,
    comparer: ContentComparer | None = None,
    max_explained: int = MAX_EXPLAINED,
) -> VerificationReport:
    """Compare every task of the original with its replay, object by object and metric by metric.

    ``comparer`` (e.g. :func:`store_comparer`) reads the outputs whose hashes differ; without one
    they differ by hash alone. ``object_tolerance`` overrides every declared output tolerance.
    """
    if original.dag_id != replay.dag_id:
        raise ReproUserError(
            f"cannot verify {replay.run_id!r} of {replay.dag_id!r} against a run of {original.dag_id!r}"
        )
    tolerance = tolerance or Tolerance()
    explaining = _Explaining(comparer, object_tolerance, max_explained)
    replayed = {_key(t.manifest): t for t in replay.tasks}
    tasks = []
    for view in original.tasks:
        key = _key(view.manifest)
        found = replayed.get(key)
        reused = _reused(found)
        metrics = (original_metrics or {}).get(key, {})
        verified = _verify_task(
            view,
            found,
            metrics,
            metrics if reused else (replay_metrics or {}).get(key, {}),  # a reused task's metrics are the original's
            tolerance,
            explaining,
        )
        tasks.append(verified.model_copy(update={"reused": True}) if reused else verified)
    return VerificationReport(
        dag_id=original.dag_id,
        original_run_id=original.run_id,
        replay_run_id=replay.run_id,
        verdict=weakest(t.status for t in tasks),
        tolerance=tolerance,
        object_tolerance=object_tolerance,
        tasks=tasks,
        verified_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        explained=explaining.explained,
        unexplained=explaining.unexplained,
        note=_cap_note(explaining, max_explained),
    )


def _reused(replayed: StoredTaskManifest | None) -> bool:
    """Whether the replay reused this task's recorded outputs instead of running it."""
    info = replayed.manifest.replay if replayed is not None else None
    return info is not None and info.reused_from is not None


def weakest(statuses: Iterable[str]) -> Verdict:
    """The weakest of some statuses (none at all: identical): a task's from its objects', the run's from its tasks'."""
    rank = max((_RANK[s] for s in statuses), default=0)
    return "identical" if rank == 0 else "equivalent" if rank == 1 else "differs"


def _cap_note(explaining: _Explaining, cap: int) -> str | None:
    if not explaining.unexplained:
        return None
    return (
        f"{explaining.unexplained} changed object(s) were not compared by content: a report explains at most "
        f"{cap}; they count as differing (compare one with 'airflow-repro diff' or verify fewer tasks)"
    )


def _verify_task(
    original: StoredTaskManifest,
    replay: StoredTaskManifest | None,
    original_metrics: Mapping[str, float],
    replay_metrics: Mapping[str, float],
    tolerance: Tolerance,
    explaining: _Explaining,
) -> TaskVerification:
    task = compare_task(
        original.manifest, replay.manifest if replay else None, original_metrics, replay_metrics, tolerance
    )
    if replay is None or task.status == "identical":
        return task
    objects = [_explained(o, original, replay, explaining) for o in task.objects]
    statuses = [o.status for o in objects] + ["equivalent" if m.within_tolerance else "differs" for m in task.metrics]
    return task.model_copy(
        update={
            "objects": objects,
            "status": weakest(statuses),
            "likely_causes": likely_causes(original.manifest, replay.manifest),
        }
    )


def _explained(
    difference: ObjectDifference, original: StoredTaskManifest, replay: StoredTaskManifest, explaining: _Explaining
) -> ObjectDifference:
    if difference.change != "changed" or explaining.compare is None:
        return difference
    if explaining.left <= 0:
        explaining.unexplained += 1
        return difference
    explaining.left -= 1
    explaining.explained += 1
    tolerance, source = object_tolerance(difference.path, original.manifest, replay.manifest, explaining.override)
    try:
        comparison = explaining.compare(original, replay, difference.path, tolerance)
    except (NotFoundError, StoreCorruption) as exc:  # the data is gone or damaged: say so, verify the rest
        return difference.model_copy(update={"detail": f"could not be read to compare its content: {exc}"})
    return difference.model_copy(update={"comparison": comparison, "tolerance_source": source})


def object_tolerance(
    path: str, original: TaskManifest, replay: TaskManifest, override: ObjectTolerance | None = None
) -> tuple[ObjectTolerance, Literal["override", "declared", "exact"]]:
    """The tolerance output ``path`` is compared within, and where it came from (see the module doc)."""
    if override is not None:
        return override, "override"
    # only the original's declaration: a replay (running the current code) cannot loosen its own verdict
    declared = next((o.tolerance for o in original.outputs if o.path == path), None)
    if declared is not None:
        return declared, "declared"
    return ObjectTolerance(), "exact"


def compare_task(
    original: TaskManifest,
    replay: TaskManifest | None,
    original_metrics: Mapping[str, float],
    replay_metrics: Mapping[str, float],
    tolerance: Tolerance,
) -> TaskVerification:
    """A task compared by recorded hashes and metrics only (no content is read)."""
    ident = original.identity
    if replay is None:
        return TaskVerification(
            task_id=ident.task_id, map_index=ident.map_index, status="missing", original_manifest_digest=original.digest
        )
    objects = compare_outputs(original.outputs, replay.outputs)
    metrics = compare_metrics(original_metrics, replay_metrics, tolerance)
    statuses = ["differs" for _ in objects] + ["equivalent" if m.within_tolerance else "differs" for m in metrics]
    return TaskVerification(
        task_id=ident.task_id,
        map_index=ident.map_index,
        status=weakest(statuses),
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
    """The metrics that are not exactly equal: beyond the tolerance, or ``within_tolerance``."""
    differences = []
    for name in sorted(original.keys() | replay.keys()):
        a, b = original.get(name), replay.get(name)
        if a is not None and b is not None and (a == b or (math.isnan(a) and math.isnan(b))):
            continue
        differences.append(
            MetricDifference(
                name=name,
                original=_json_number(a),
                replay=_json_number(b),
                abs_diff=_json_number(abs(a - b)) if a is not None and b is not None else None,
                within_tolerance=a is not None and b is not None and tolerance.matches(a, b),
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


# -- secrets in what comparisons quote -----------------------------------------------------------
HIDDEN = "***"
_PATH_SEGMENTS = re.compile(r"[^.\[\]\"$]+")


def without_secrets(
    report: VerificationReport, redact: Callable[[Any], Any], is_sensitive_key: Callable[[str], bool]
) -> VerificationReport:
    """The report with the values its comparisons quote hidden where they may be secrets.

    ``redact`` (the recorder's redactor) hides values under sensitive keys (a CSV column or JSON
    key named like ``password``) and URLs with credentials; a quoted item whose ``path`` has a
    sensitive segment (``$.db.password``) has its ``original``/``replay`` values hidden too."""
    tasks = []
    for task in report.tasks:
        objects = [_object_without_secrets(o, redact, is_sensitive_key) for o in task.objects]
        tasks.append(task.model_copy(update={"objects": objects}))
    return report.model_copy(update={"tasks": tasks})


def _object_without_secrets(
    difference: ObjectDifference, redact: Callable[[Any], Any], is_sensitive_key: Callable[[str], bool]
) -> ObjectDifference:
    comparison = difference.comparison
    if comparison is None:
        return difference
    details = _hide_by_path(redact(comparison.details), is_sensitive_key)
    hidden = comparison.model_copy(
        update={"details": details, "summary": redact(comparison.summary), "note": redact(comparison.note)}
    )
    return difference.model_copy(update={"comparison": hidden})


def _hide_by_path(value: Any, is_sensitive_key: Callable[[str], bool]) -> Any:
    if isinstance(value, list):
        return [_hide_by_path(v, is_sensitive_key) for v in value]
    if not isinstance(value, dict):
        return value
    found = {k: _hide_by_path(v, is_sensitive_key) for k, v in value.items()}
    path = found.get("path")
    if isinstance(path, str) and any(is_sensitive_key(p) for p in _PATH_SEGMENTS.findall(path)):
        found.update({side: HIDDEN for side in ("original", "replay") if side in found})
    return found


# -- likely causes --------------------------------------------------------------------------------
def likely_causes(original: TaskManifest, replay: TaskManifest) -> list[LikelyCause]:
    """What the two manifests record differently besides the outputs (bounded); where nothing
    does, one ``nondeterministic`` cause that suggests ``--repeat``."""
    causes = [
        *_hardware_causes(original, replay),
        *_thread_causes(original, replay),
        *_library_causes(original, replay),
        *_pin_causes(original, replay),
    ]
    if not causes:
        return [
            LikelyCause(
                kind="nondeterministic",
                detail="nothing recorded differs between the two runs (hardware, threads, libraries, environment, "
                "seed, code, inputs): the task itself is likely nondeterministic (unseeded randomness, "
                "parallel float summation); 'airflow-repro verify DAG_ID REPLAY_RUN_ID --repeat 3' replays it "
                "again on the same pins and says whether the replays even agree with each other",
            )
        ]
    return causes[:MAX_CAUSES]


def _changed(kind: str, what: str, a: object, b: object) -> list[LikelyCause]:
    if a == b:
        return []
    return [LikelyCause.model_validate({"kind": kind, "detail": f"{what}: {_shown(a)} -> {_shown(b)}"})]


def _shown(value: object) -> str:
    text = "unknown" if value is None else value if isinstance(value, str) else canonical_json(value).decode()
    return text if len(text) <= 120 else text[:119] + "…"


def _hardware_causes(a: TaskManifest, b: TaskManifest) -> list[LikelyCause]:
    ha, hb = a.hardware, b.hardware
    return [
        *_changed("hardware", "CPU model", ha.cpu_model, hb.cpu_model),
        *_changed("hardware", "CPU count", ha.cpu_count, hb.cpu_count),
        *_changed("hardware", "machine", f"{ha.machine} {ha.platform}", f"{hb.machine} {hb.platform}"),
        *_changed("gpu", "GPUs", _gpus(ha.gpus), _gpus(hb.gpus)),
    ]


def _gpus(gpus: list[dict[str, str]]) -> str:
    if not gpus:
        return "none"
    return ", ".join(f"{g.get('name', '?')} (driver {g.get('driver', '?')})" for g in gpus)


def _thread_causes(a: TaskManifest, b: TaskManifest) -> list[LikelyCause]:
    ta, tb = a.hardware.threads or {}, b.hardware.threads or {}
    names = sorted(ta.keys() | tb.keys())
    return [c for name in names for c in _changed("threads", name, ta.get(name, "unset"), tb.get(name, "unset"))]


def _library_causes(a: TaskManifest, b: TaskManifest) -> list[LikelyCause]:
    va, vb = a.versions, b.versions
    causes = [
        *_changed("library", "Python", va.python, vb.python),
        *_changed("library", "Airflow", va.airflow, vb.airflow),
    ]
    libs_a, libs_b = {**va.providers, **va.libraries}, {**vb.providers, **vb.libraries}
    changes = [
        f"{name} {libs_a.get(name, 'absent')} -> {libs_b.get(name, 'absent')}"
        for name in sorted(libs_a.keys() | libs_b.keys())
        if libs_a.get(name) != libs_b.get(name)
    ]
    if changes:
        shown = changes[:8]
        more = f" (and {len(changes) - len(shown)} more)" if len(changes) > len(shown) else ""
        causes.append(LikelyCause(kind="library", detail="library versions: " + ", ".join(shown) + more))
    return causes


def _pin_causes(a: TaskManifest, b: TaskManifest) -> list[LikelyCause]:
    causes = [
        *_changed("environment", "environment pin", _env(a), _env(b)),
        *_changed("seed", "seed", a.parameters.seed, b.parameters.seed),
        *_changed("inputs", "input commits", _inputs(a), _inputs(b)),
        *_changed("resources", "resources", a.resources.model_dump(), b.resources.model_dump()),
    ]
    if (a.code.source_hash, a.code.snapshot) != (b.code.source_hash, b.code.snapshot):
        ran = b.replay.code if b.replay is not None else None
        causes.append(
            LikelyCause(
                kind="code",
                detail=f"the replay ran {'the current' if ran != 'restored' else 'restored'} code, which differs "
                f"from the recorded one (source {a.code.source_hash[:19]} -> {b.code.source_hash[:19]})",
            )
        )
    elif b.replay is not None and "restored" in (b.replay.code, b.replay.environment):
        restored = [what for what in ("code", "environment") if getattr(b.replay, what) == "restored"]
        causes.append(
            LikelyCause(
                kind="code" if "code" in restored else "environment",
                detail=f"the replay ran the archived {' and '.join(restored)} restored from the record "
                "(rebuilt, not the original process's own)",
            )
        )
    return causes


def _env(manifest: TaskManifest) -> str:
    return f"{manifest.environment.kind}:{manifest.environment.digest}"


def _inputs(manifest: TaskManifest) -> list[str]:
    return sorted(f"{i.name}@{i.commit_id[:12]}" for i in manifest.inputs)


# -- repeats --------------------------------------------------------------------------------------
def repeat_report(
    original: StoredRun, replays: Sequence[StoredRun], tasks: Sequence[TaskKey], *, expected: int | None = None
) -> RepeatReport:
    """Whether replays on the same pins agree with each other, task by task (by output hashes).

    ``replays``: the verified replay first, then the repeats. Replays that disagree with each other
    show the task is intrinsically nondeterministic; replays that agree with each other but not
    with the original show drift (something about the run changed since the original).
    ``expected``: how many replays were run (default ``len(replays)``); a repeat that recorded
    nothing is not in ``replays``, so a task fewer replays recorded is ``incomplete``.
    """
    expected = len(replays) if expected is None else expected
    originals = {_key(t.manifest): t.manifest for t in original.tasks}
    # a task a replay reused (it started from a later task) did not run there: it proves nothing
    by_run = [{_key(t.manifest): t.manifest for t in run.tasks if not _reused(t)} for run in replays]
    repeated = []
    for key in tasks:
        outcomes = [_outcome(run[key]) for run in by_run if key in run]
        recorded = _outcome(originals[key]) if key in originals else None
        repeated.append(_repeated_task(key, outcomes, recorded, expected))
    return RepeatReport(runs=[r.run_id for r in replays[1:]], tasks=repeated)


def _outcome(manifest: TaskManifest) -> tuple[tuple[str, str], ...]:
    return tuple((o.path, o.content_hash) for o in manifest.outputs)


def _repeated_task(
    key: TaskKey, outcomes: list[tuple[tuple[str, str], ...]], recorded: object, expected: int
) -> RepeatedTask:
    distinct = len(set(outcomes))
    agreeing = sum(o == recorded for o in outcomes)
    if len(outcomes) < expected:
        conclusion, detail = "incomplete", f"only {len(outcomes)} of {expected} replays recorded the task"
    elif distinct > 1:
        conclusion = "intrinsic_nondeterminism"
        detail = (
            f"{len(outcomes)} replays on the same pins gave {distinct} different outputs: the task is "
            "nondeterministic in itself (seed its randomness, or declare a tolerance with Output(...))"
        )
    elif agreeing:
        conclusion, detail = "reproduced", f"all {len(outcomes)} replays reproduced the original's outputs"
    else:
        conclusion = "drift"
        detail = (
            f"all {len(outcomes)} replays agree with each other but not with the original: something that "
            "differs since the original run (see likely_causes) changes the result"
        )
    return RepeatedTask(
        task_id=key[0],
        map_index=key[1],
        replays=len(outcomes),
        distinct_outcomes=distinct,
        agrees_with_original=agreeing,
        conclusion=conclusion,
        detail=detail,
    )


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
    return report.model_copy(update={"tasks": tasks, "verdict": weakest([t.status for t in tasks])})


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
