"""Verify explains a difference: identical / equivalent / differs per object, task and run, within
the declared tolerances, with the likely causes and bounded reports.

Runs are recorded through the real record path (``TaskRecorder`` on a real ``LocalStore``, no
tracker) and compared with the built-in comparators, streamed from the store. No Airflow.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from airflow_repro import Output
from airflow_repro.adapters.comparators import builtin_registry
from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.core.comparison import ObjectComparison
from airflow_repro.core.comparison import Tolerance as ObjectTolerance
from airflow_repro.core.environment import fingerprint_pin, hardware, versions
from airflow_repro.core.manifest import AirflowIdentity, CodeVersion, DataOutput, Parameters, TaskManifest
from airflow_repro.core.recorder import TaskEnvironment, TaskRecorder
from airflow_repro.core.runs import StoredRun, close_run, load_run
from airflow_repro.core.spec import TaskSpec, declared_outputs
from airflow_repro.core.verify import (
    LikelyCause,
    Tolerance,
    VerificationReport,
    likely_causes,
    load_report,
    repeat_report,
    save_report,
    store_comparer,
    verify_replay,
    weakest,
)
from airflow_repro.errors import ReproUserError

DAG, REPO = "dag", "repro"


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def recorder(store: LocalStore, tmp_path: Path) -> TaskRecorder:
    return TaskRecorder(store, None, default_repository=REPO, default_branch="main", work_root=tmp_path / "work")


def record(
    recorder: TaskRecorder, run_id: str, files: dict[str, bytes], outputs: Any = None, task_id: str = "train"
) -> None:
    paths, tolerances = declared_outputs(task_id, outputs if outputs is not None else list(files))
    spec = TaskSpec(task_id=task_id, outputs=paths, tolerances=tolerances)
    env = TaskEnvironment(
        identity=AirflowIdentity(dag_id=DAG, run_id=run_id, task_id=task_id, try_number=1),
        code=CodeVersion(source_hash="sha256:" + "0" * 64),
        environment=fingerprint_pin(),
        parameters=Parameters(seed=7),
        versions=versions("test"),
        hardware=hardware(),
    )
    prepared = recorder.prepare(spec, env)
    for path, data in files.items():
        target = prepared.output_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    recorder.finish(prepared)


def run_of(recorder: TaskRecorder, run_id: str, tasks: dict[str, dict[str, bytes]], outputs: Any = None) -> StoredRun:
    for task_id, files in tasks.items():
        record(recorder, run_id, files, outputs, task_id=task_id)
    close_run(recorder.store, DAG, run_id, "success")
    return load_run(recorder.store, DAG, run_id)


def table(loss_at_row_2: float) -> bytes:
    rows = [(0, 0.25), (1, 0.5), (2, loss_at_row_2), (3, 1.0)]
    return ("step,loss\n" + "".join(f"{s},{v!r}\n" for s, v in rows)).encode()


def verified(original: StoredRun, replay: StoredRun, store: LocalStore, **kwargs: Any) -> VerificationReport:
    registry = kwargs.pop("registry", None) or builtin_registry()
    return verify_replay(original, replay, comparer=store_comparer(store, original, replay, registry), **kwargs)


# -- verdicts and declared tolerances --------------------------------------------------------------
def test_a_perturbation_below_the_declared_tolerance_is_equivalent_with_its_deviation(
    recorder: TaskRecorder, store: LocalStore
) -> None:
    declared = {"metrics.csv": Output(abs_tol=1e-6)}
    original = run_of(recorder, "manual__1", {"train": {"metrics.csv": table(0.75)}}, declared)
    assert original.tasks[0].manifest.outputs[0].tolerance == ObjectTolerance(abs_tol=1e-6)  # recorded
    replay = run_of(recorder, "replay__1", {"train": {"metrics.csv": table(0.75 + 3e-9)}}, declared)

    report = verified(original, replay, store)
    assert report.verdict == "equivalent" and report.summary()["equivalent"] == 1
    (task,) = report.tasks
    (difference,) = task.objects
    assert task.status == difference.status == "equivalent" and difference.tolerance_source == "declared"
    comparison = difference.comparison
    assert comparison is not None and (comparison.verdict, comparison.format) == ("equivalent", "csv")
    assert comparison.tolerance == ObjectTolerance(abs_tol=1e-6)
    assert comparison.max_abs_deviation == pytest.approx(3e-9, rel=1e-3)
    assert report.explained == 1 and report.unexplained == 0 and report.note is None


def test_a_perturbation_above_the_tolerance_differs_naming_the_cell(recorder: TaskRecorder, store: LocalStore) -> None:
    declared = {"metrics.csv": Output(abs_tol=1e-6)}
    original = run_of(recorder, "manual__1", {"train": {"metrics.csv": table(0.75)}}, declared)
    replay = run_of(recorder, "replay__1", {"train": {"metrics.csv": table(0.7501)}}, declared)

    report = verified(original, replay, store)
    assert report.verdict == "differs"
    comparison = report.tasks[0].objects[0].comparison
    assert comparison is not None and comparison.verdict == "differs"
    assert comparison.details["first_differing_rows"] == [
        {"row": 2, "cells": {"loss": {"original": "0.75", "replay": "0.7501"}}}
    ]
    assert comparison.details["cells_out_of_tolerance"] == 1 and "loss" in comparison.summary


def test_an_override_replaces_the_declared_tolerance_and_an_undeclared_output_is_exact(
    recorder: TaskRecorder, store: LocalStore
) -> None:
    original = run_of(recorder, "manual__1", {"train": {"metrics.csv": table(0.75)}})
    replay = run_of(recorder, "replay__1", {"train": {"metrics.csv": table(0.75 + 3e-9)}})
    assert verified(original, replay, store).tasks[0].objects[0].tolerance_source == "exact"
    assert verified(original, replay, store).verdict == "differs"

    loose = verified(
        original, replay, store, tolerance=Tolerance(abs=1e-3), object_tolerance=ObjectTolerance(abs_tol=1e-3)
    )
    assert loose.verdict == "equivalent" and loose.object_tolerance == ObjectTolerance(abs_tol=1e-3)
    assert loose.tasks[0].objects[0].tolerance_source == "override"


def test_only_the_originals_declared_tolerance_counts_not_the_replays(
    recorder: TaskRecorder, store: LocalStore
) -> None:
    # a replay running changed code that now declares a loose tolerance cannot loosen its own verdict
    original = run_of(recorder, "manual__1", {"train": {"metrics.csv": table(0.75)}})
    loosened = run_of(recorder, "replay__1", {"train": {"metrics.csv": table(0.8)}}, {"metrics.csv": Output(rel_tol=1)})
    report = verified(original, loosened, store)
    assert report.verdict == "differs" and report.tasks[0].objects[0].tolerance_source == "exact"
    # the original's declaration is used even where the replay declares none or a tighter one
    declared = run_of(
        recorder, "manual__2", {"train": {"metrics.csv": table(0.75)}}, {"metrics.csv": Output(abs_tol=1e-6)}
    )
    for run_id, outputs in (("replay__2", None), ("replay__3", {"metrics.csv": Output()})):
        replay = run_of(recorder, run_id, {"train": {"metrics.csv": table(0.75 + 1e-9)}}, outputs)
        within = verified(declared, replay, store)
        assert within.verdict == "equivalent" and within.tasks[0].objects[0].tolerance_source == "declared"
    # an explicit override still replaces it
    strict = verified(declared, replay, store, object_tolerance=ObjectTolerance())
    assert strict.verdict == "differs" and strict.tasks[0].objects[0].tolerance_source == "override"


def test_the_run_is_the_weakest_of_its_tasks(recorder: TaskRecorder, store: LocalStore) -> None:
    declared = {"metrics.csv": Output(abs_tol=1e-6)}
    original = run_of(
        recorder, "manual__1", {"a": {"metrics.csv": table(0.75)}, "b": {"metrics.csv": table(0.75)}}, declared
    )
    replay = run_of(
        recorder, "replay__1", {"a": {"metrics.csv": table(0.75)}, "b": {"metrics.csv": table(0.75 + 1e-9)}}, declared
    )
    report = verified(original, replay, store)
    assert [(t.task_id, t.status) for t in report.tasks] == [("a", "identical"), ("b", "equivalent")]
    assert report.verdict == "equivalent"
    assert [weakest(s) for s in (["identical"], ["identical", "equivalent"], ["equivalent", "missing"], [])] == [
        "identical",
        "equivalent",
        "differs",
        "identical",
    ]


class SpyStore:
    """The real store, noting which objects were opened."""

    def __init__(self, store: LocalStore) -> None:
        self.store, self.opened = store, []

    def open_object(self, repository: str, ref: str, path: str) -> BinaryIO:
        self.opened.append(path)
        return self.store.open_object(repository, ref, path)


def test_identical_objects_are_decided_by_hash_without_reading(recorder: TaskRecorder, store: LocalStore) -> None:
    files = {"same.csv": table(0.5), "changed.json": b'{"a": 1}'}
    original = run_of(recorder, "manual__1", {"train": files})
    replay = run_of(recorder, "replay__1", {"train": {**files, "changed.json": b'{"a": 2}'}})
    spy = SpyStore(store)
    report = verify_replay(original, replay, comparer=store_comparer(spy, original, replay, builtin_registry()))  # type: ignore[arg-type]
    assert set(spy.opened) == {"changed.json"}
    (difference,) = report.tasks[0].objects
    assert difference.comparison is not None and difference.comparison.format == "json"
    assert difference.comparison.details  # the path that differs and its values


# -- bad input and broken comparators -------------------------------------------------------------
class Exploding:
    name = "exploding"

    def matches(self, path: str, head: bytes) -> bool:
        return path.endswith(".csv")

    def compare(
        self, original: BinaryIO, replay: BinaryIO, *, path: str, tolerance: ObjectTolerance
    ) -> ObjectComparison:
        raise RuntimeError("boom")


def test_a_comparator_that_raises_is_reported_for_its_object_and_the_rest_completes(
    recorder: TaskRecorder, store: LocalStore
) -> None:
    original = run_of(recorder, "manual__1", {"train": {"a.csv": table(0.5), "b.json": b"[1, 2]"}})
    replay = run_of(recorder, "replay__1", {"train": {"a.csv": table(0.6), "b.json": b"[1, 3]"}})
    registry = builtin_registry()
    registry.register(Exploding(), first=True)
    report = verified(original, replay, store, registry=registry)
    by_path = {o.path: o.comparison for o in report.tasks[0].objects}
    assert by_path["a.csv"] is not None and by_path["a.csv"].verdict == "differs"
    assert "exploding raised RuntimeError: boom" in (by_path["a.csv"].note or "")
    assert by_path["b.json"] is not None and by_path["b.json"].format == "json"


def test_a_malformed_file_falls_back_to_bytes_with_a_note(recorder: TaskRecorder, store: LocalStore) -> None:
    original = run_of(recorder, "manual__1", {"train": {"table.parquet": b"not parquet at all"}})
    replay = run_of(recorder, "replay__1", {"train": {"table.parquet": b"not parquet at all!"}})
    comparison = verified(original, replay, store).tasks[0].objects[0].comparison
    assert comparison is not None and comparison.format == "bytes" and comparison.verdict == "differs"
    assert "malformed parquet" in (comparison.note or "")


def test_at_most_max_explained_objects_are_compared_and_the_report_says_so(
    recorder: TaskRecorder, store: LocalStore
) -> None:
    original = run_of(recorder, "manual__1", {"train": {f"{i}.txt": b"a" for i in range(3)}})
    replay = run_of(recorder, "replay__1", {"train": {f"{i}.txt": b"b" for i in range(3)}})
    report = verified(original, replay, store, max_explained=2)
    assert (report.explained, report.unexplained) == (2, 1)
    assert [o.comparison is not None for o in report.tasks[0].objects] == [True, True, False]
    assert report.note is not None and "at most 2" in report.note and report.verdict == "differs"


def test_a_report_stays_bounded_however_many_cells_differ(recorder: TaskRecorder, store: LocalStore) -> None:
    sizes = []
    for n, run in ((1_000, "1"), (100_000, "2")):
        rows = "".join(f"{i},{i * 0.5}\n" for i in range(n))
        noisy = "".join(f"{i},{i * 0.5 + 1}\n" for i in range(n))
        original = run_of(recorder, f"manual__{run}", {"train": {"t.csv": f"i,v\n{rows}".encode()}})
        replay = run_of(recorder, f"replay__{run}", {"train": {"t.csv": f"i,v\n{noisy}".encode()}})
        report = verified(original, replay, store)
        assert report.tasks[0].objects[0].comparison.details["cells_out_of_tolerance"] == n  # type: ignore[union-attr]
        sizes.append(len(report.canonical_json()))
    assert sizes[1] < 2 * sizes[0] < 40_000  # 100x the cells, not 100x the report


def test_the_stored_report_keeps_the_explanation(recorder: TaskRecorder, store: LocalStore) -> None:
    declared = {"metrics.csv": Output(abs_tol=1e-6)}
    original = run_of(recorder, "manual__1", {"train": {"metrics.csv": table(0.75)}}, declared)
    replay = run_of(recorder, "replay__1", {"train": {"metrics.csv": table(0.75 + 1e-9)}}, declared)
    report = verified(original, replay, store)
    save_report(store, REPO, report)
    assert load_report(store, REPO, DAG, "replay__1") == report


def test_a_report_written_before_equivalent_existed_still_loads() -> None:
    old = {
        "dag_id": "d",
        "original_run_id": "a",
        "replay_run_id": "b",
        "verdict": "differs",
        "tolerance": {"abs": 0.0, "rel": 0.0},
        "tasks": [{"task_id": "t", "status": "differs", "objects": [{"path": "x", "change": "changed"}]}],
        "verified_at": "2026-01-01T00:00:00Z",
    }
    report = VerificationReport.model_validate_json(json.dumps(old))
    assert report.tasks[0].likely_causes == [] and report.tasks[0].objects[0].comparison is None


# -- declaring tolerances --------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [-1e-6, math.nan, math.inf, "1e-5", True, None, 10**400, -(10**400)])
def test_a_tolerance_that_is_negative_or_not_a_number_is_refused_with_the_fix(bad: object) -> None:
    with pytest.raises(ReproUserError, match=r"rel_tol must be a finite number >= 0, got .*use 0 for an exact"):
        Output(rel_tol=bad)  # type: ignore[arg-type]


def test_an_int_too_large_for_a_float_is_refused_without_quoting_its_digits() -> None:
    with pytest.raises(ReproUserError, match=r"abs_tol must be a finite number >= 0, got an integer too large"):
        Output(abs_tol=10**400)
    from airflow_repro.core.spec import check_tolerance

    assert check_tolerance(10**300, "abs_tol", where="t") == 1e300 and check_tolerance(1, "rel_tol", where="t") == 1.0


def test_outputs_take_paths_or_a_mapping_to_output() -> None:
    assert declared_outputs("t", ["a.csv", "b/"]) == (("a.csv", "b/"), {})
    paths, tolerances = declared_outputs("t", {"m.pt": Output(rel_tol=1e-5), "log.txt": None, "exact.csv": Output()})
    assert paths == ("m.pt", "log.txt", "exact.csv") and tolerances == {"m.pt": ObjectTolerance(rel_tol=1e-5)}
    with pytest.raises(ReproUserError, match=r"must map to airflow_repro.Output\(abs_tol=..., rel_tol=...\)"):
        declared_outputs("t", {"m.pt": 1e-5})
    with pytest.raises(ReproUserError, match=r"write outputs=\['m.pt'\]"):
        declared_outputs("t", "m.pt")


def test_a_folder_tolerance_covers_what_is_under_it_and_map_indexes_are_filled() -> None:
    spec = TaskSpec(
        task_id="t",
        outputs=("models/", "models/best.pt", "log.txt"),
        tolerances={"models/": ObjectTolerance(rel_tol=1e-3), "models/best.pt": ObjectTolerance(abs_tol=1e-9)},
    )
    assert spec.tolerance_for("models/a/b.pt") == ObjectTolerance(rel_tol=1e-3)
    assert spec.tolerance_for("models/best.pt") == ObjectTolerance(abs_tol=1e-9)
    assert spec.tolerance_for("log.txt") is None
    mapped = TaskSpec(
        task_id="m", outputs=("s/{map_index}.csv",), tolerances={"s/{map_index}.csv": ObjectTolerance(abs_tol=1)}
    )
    assert mapped.for_map_index(3).tolerance_for("s/3.csv") == ObjectTolerance(abs_tol=1)


def test_an_output_without_a_tolerance_keeps_its_manifest_digest(recorder: TaskRecorder) -> None:
    # manifests recorded before tolerances existed have no such key: their canonical JSON (and digest) stay
    run = run_of(recorder, "manual__1", {"train": {"a.csv": b"x"}, "b": {"m.csv": b"y"}}, None)
    assert b'"tolerance"' not in run.tasks[0].manifest.canonical_json()
    assert DataOutput(path="a", content_hash="h", size=1).model_dump(mode="json") == {
        "path": "a",
        "content_hash": "h",
        "size": 1,
    }
    declared = run_of(recorder, "manual__2", {"train": {"a.csv": b"x"}}, {"a.csv": Output(rel_tol=0.5)})
    assert b'"tolerance":{"abs_tol":0.0,"rel_tol":0.5}' in declared.tasks[0].manifest.canonical_json()


# -- likely causes ---------------------------------------------------------------------------------
def manifest_pair(recorder: TaskRecorder) -> tuple[TaskManifest, TaskManifest]:
    original = run_of(recorder, "manual__1", {"train": {"a.txt": b"a"}})
    replay = run_of(recorder, "replay__1", {"train": {"a.txt": b"b"}})
    return original.tasks[0].manifest, replay.tasks[0].manifest


def test_causes_name_hardware_gpus_threads_and_library_versions(recorder: TaskRecorder) -> None:
    a, b = manifest_pair(recorder)
    a = a.model_copy(
        update={
            "hardware": a.hardware.model_copy(
                update={"cpu_model": "Intel Xeon 8480", "gpus": [{"name": "A100", "driver": "535.1"}], "threads": None}
            ),
            "versions": a.versions.model_copy(update={"libraries": {"numpy": "2.4.6", "torch": "2.5.0"}}),
        }
    )
    b = b.model_copy(
        update={
            "hardware": b.hardware.model_copy(
                update={
                    "cpu_model": "AMD EPYC 9654",
                    "gpus": [{"name": "H100", "driver": "550.2"}],
                    "threads": {"OMP_NUM_THREADS": "8"},
                }
            ),
            "versions": b.versions.model_copy(update={"libraries": {"numpy": "2.5.0", "torch": "2.5.0"}}),
        }
    )
    causes = likely_causes(a, b)
    assert LikelyCause(kind="hardware", detail="CPU model: Intel Xeon 8480 -> AMD EPYC 9654") in causes
    assert LikelyCause(kind="gpu", detail="GPUs: A100 (driver 535.1) -> H100 (driver 550.2)") in causes
    assert LikelyCause(kind="threads", detail="OMP_NUM_THREADS: unset -> 8") in causes
    assert LikelyCause(kind="library", detail="library versions: numpy 2.4.6 -> 2.5.0") in causes
    assert {c.kind for c in causes} == {"hardware", "gpu", "threads", "library"}


def test_causes_name_the_environment_pin_the_seed_and_the_code(recorder: TaskRecorder) -> None:
    a, b = manifest_pair(recorder)
    b = b.model_copy(
        update={
            "environment": b.environment.model_copy(update={"digest": "sha256:" + "9" * 64}),
            "parameters": b.parameters.model_copy(update={"seed": 8}),
            "code": b.code.model_copy(update={"source_hash": "sha256:" + "1" * 64}),
        }
    )
    kinds = {c.kind: c.detail for c in likely_causes(a, b)}
    assert set(kinds) == {"environment", "seed", "code"}
    assert kinds["seed"] == "seed: 7 -> 8" and "the current code" in kinds["code"]


def test_when_nothing_recorded_differs_the_task_is_likely_nondeterministic(
    recorder: TaskRecorder, store: LocalStore
) -> None:
    original = run_of(recorder, "manual__1", {"train": {"a.txt": b"a"}})
    replay = run_of(recorder, "replay__1", {"train": {"a.txt": b"b"}})
    (cause,) = verified(original, replay, store).tasks[0].likely_causes
    assert cause.kind == "nondeterministic" and "--repeat" in cause.detail
    identical = run_of(recorder, "replay__2", {"train": {"a.txt": b"a"}})
    assert verified(original, identical, store).tasks[0].likely_causes == []


# -- repeats ---------------------------------------------------------------------------------------
def test_repeats_tell_intrinsic_nondeterminism_from_drift(recorder: TaskRecorder) -> None:
    original = run_of(recorder, "manual__1", {"train": {"a.txt": b"a"}, "other": {"o.txt": b"o"}})
    noisy = [
        run_of(recorder, f"replay__{i}", {"train": {"a.txt": bytes([65 + i])}, "other": {"o.txt": b"o"}})
        for i in range(3)
    ]
    (task,) = repeat_report(original, noisy, [("train", -1)]).tasks
    assert task.conclusion == "intrinsic_nondeterminism" and task.distinct_outcomes == 3 and task.replays == 3
    drifted = [run_of(recorder, f"drift__{i}", {"train": {"a.txt": b"z"}, "other": {"o.txt": b"o"}}) for i in range(3)]
    report = repeat_report(original, drifted, [("train", -1)])
    assert report.runs == ["drift__1", "drift__2"]
    assert report.tasks[0].conclusion == "drift" and report.tasks[0].agrees_with_original == 0
    incomplete = repeat_report(original, [noisy[0], load_run(recorder.store, DAG, "manual__1")], [("other", -1)])
    assert incomplete.tasks[0].conclusion == "reproduced"


def test_a_repeat_that_recorded_nothing_makes_the_report_incomplete_not_drift(recorder: TaskRecorder) -> None:
    original = run_of(recorder, "manual__1", {"train": {"a.txt": b"a"}})
    verified_replay = run_of(recorder, "replay__1", {"train": {"a.txt": b"z"}})
    # --repeat 1 whose one repeat failed before recording: only the verified replay is there
    (task,) = repeat_report(original, [verified_replay], [("train", -1)], expected=2).tasks
    assert task.conclusion == "incomplete" and task.replays == 1 and "only 1 of 2" in task.detail
    (alone,) = repeat_report(original, [verified_replay], [("train", -1)]).tasks  # expected: every replay given
    assert alone.conclusion == "drift"


# -- secrets ---------------------------------------------------------------------------------------
def test_what_a_comparison_quotes_of_a_secret_is_hidden(recorder: TaskRecorder, store: LocalStore) -> None:
    from airflow_repro.core.redaction import Redactor
    from airflow_repro.core.verify import without_secrets

    before = {"conf.json": b'{"db": {"password": "hunter2"}, "n": 1}', "t.csv": b"user,api_key\nana,k-111\n"}
    after = {"conf.json": b'{"db": {"password": "hunter3"}, "n": 2}', "t.csv": b"user,api_key\nana,k-222\n"}
    original = run_of(recorder, "manual__1", {"train": before})
    replay = run_of(recorder, "replay__1", {"train": after})
    report = verified(original, replay, store)
    assert b"hunter3" in report.canonical_json() and b"k-222" in report.canonical_json()  # quoted as found

    redactor = Redactor(key=b"k" * 32)
    hidden = without_secrets(report, redactor.redact, redactor.is_sensitive_key)
    body = hidden.canonical_json()
    for secret in (b"hunter2", b"hunter3", b"k-111", b"k-222"):
        assert secret not in body
    by_path = {o.path: o.comparison for o in hidden.tasks[0].objects}
    assert by_path["conf.json"].details["differences_total"] == 2  # type: ignore[union-attr]
    assert {"path": "$.n", "change": "changed", "original": "1", "replay": "2", "abs_deviation": 1.0} in by_path[
        "conf.json"
    ].details["differences"]  # type: ignore[union-attr]


def test_the_thread_settings_of_the_task_process_are_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    threads = hardware().threads or {}
    assert (threads["OMP_NUM_THREADS"], threads["MKL_NUM_THREADS"]) == ("3", "1")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert "OMP_NUM_THREADS" not in (hardware().threads or {})


def test_an_object_whose_data_is_gone_is_reported_and_the_rest_is_compared(
    recorder: TaskRecorder, store: LocalStore
) -> None:
    import os

    original = run_of(recorder, "manual__1", {"train": {"a.json": b"[1]", "b.json": b"[2]"}})
    replay = run_of(recorder, "replay__1", {"train": {"a.json": b"[10]", "b.json": b"[20]"}})
    gone = next(o for o in replay.tasks[0].manifest.outputs if o.path == "a.json")
    path = store.object_path(gone.content_hash)
    os.chmod(path, 0o644)
    path.unlink()  # what garbage collection does to an object's data
    by_path = {o.path: o for o in verified(original, replay, store).tasks[0].objects}
    assert by_path["a.json"].comparison is None and by_path["a.json"].status == "differs"
    assert "could not be read to compare its content" in (by_path["a.json"].detail or "")
    assert by_path["b.json"].comparison is not None and by_path["b.json"].comparison.format == "json"
