"""Benchmark: what archiving code and environment costs a task, rebuilding an environment, store growth.

Run:  .venv/bin/python bench/bench_restore.py [--tasks 200] [--rounds 4] [--json PATH]

(1) record path: ``--tasks`` tasks recorded through ``TaskRecorder.prepare`` / ``finish`` (one
    pinned input, one small output, real fsyncs) on a ``LocalStore`` in a temp dir, each on a
    fresh ``LocalStore`` and ``TaskRecorder`` (as in a task's own process: in-process caches
    empty), with ``TaskEnvironment.archive`` empty (baseline: a task as recorded before archiving
    existed) and with the two objects a real task carries (the code snapshot of
    ``dags/example_ml_pipeline.py``, root ``dags/``, and ``environment_record()``; the manifest
    names the snapshot's digest). A warm-up task archived both first, so every timed task finds
    them stored. In each of ``--rounds`` rounds each variant records a run of its own, task by
    task in alternating order (A B, B A, A B, ...), so machine noise hits both alike. Reported:
    median ms per task of each, the added ms (target <= 5 ms; also the median of the per-task
    paired differences) and the ratio; and ``ensure_archived`` alone on a fresh store object
    (what the archive adds to ``finish``: a branch check and one stat per object).
    Also the one-off cost a task process pays to compute the objects: a fresh ``python -c``
    importing the modules and timing ``environment_record()`` (uncached), ``snapshot_code`` and
    the archive objects' digests (median of max(``--rounds``, 3) processes).
(2) rebuild: ``ensure_environment(environment_record(), tmpdir)``, this venv's distributions, with
    uv's default cache warm (an untimed build first), in a fresh folder each of ``--rounds``
    rounds; then the same call again on the built folder (reuse). Baseline in the same rounds:
    ``uv venv`` of an empty venv (the same flags the builder uses).
(3) store growth: 1,000 tasks (10 runs of 100) sharing one code snapshot and one environment,
    recorded into two fresh stores, one with the archive and one without (same task ids, same
    outputs; fsync off while building: the bytes on disk are the same). Bytes under ``objects/``
    (content: outputs, manifests, archived objects) and under ``repos/`` (commits, trees, refs),
    before and after; the archive's share is the difference between the two stores.

Prints a table; ``--json PATH`` also writes every figure there. No figure is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from airflow_repro.adapters.environment_builder import ensure_environment  # noqa: E402
from airflow_repro.adapters.local_store import LocalStore  # noqa: E402
from airflow_repro.adapters.local_venv import _uv_binary  # noqa: E402
from airflow_repro.core.archive import ARCHIVE_BRANCH, ArchiveObject, ensure_archived  # noqa: E402
from airflow_repro.core.code_snapshot import CodeSnapshot, snapshot_code  # noqa: E402
from airflow_repro.core.environment import environment_record, fingerprint_pin, hardware, versions  # noqa: E402
from airflow_repro.core.environment_record import EnvironmentRecord  # noqa: E402
from airflow_repro.core.manifest import AirflowIdentity, CodeVersion, Parameters  # noqa: E402
from airflow_repro.core.naming import run_branch_name  # noqa: E402
from airflow_repro.core.recorder import MANIFEST_DIR, TaskEnvironment, TaskRecorder  # noqa: E402
from airflow_repro.core.spec import Input, TaskSpec  # noqa: E402

KIB = 1024
DAG = "bench_restore"
REPOSITORY = "repro"
SOURCE = "sha256:" + "cd" * 32
DAG_FILE = REPO_ROOT / "dags" / "example_ml_pipeline.py"
CODE_ROOT = REPO_ROOT / "dags"
ADDED_TARGET_MS = 5.0
GROWTH_TASKS, GROWTH_RUNS = 1_000, 10
ENSURE_CALLS = 200
VARIANTS = ("baseline", "archive")

# Runs in a fresh interpreter: what a task process pays once to compute its archive objects.
FRESH_PROCESS = """
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
from airflow_repro.core.archive import ArchiveObject
from airflow_repro.core.code_snapshot import snapshot_code
from airflow_repro.core.environment import environment_record
t1 = time.perf_counter()
record = environment_record()
t2 = time.perf_counter()
snapshot = snapshot_code(Path(sys.argv[1]), Path(sys.argv[2]))
t3 = time.perf_counter()
objects = (ArchiveObject("code", snapshot.canonical_json()), ArchiveObject("environment", record.canonical_json()))
paths = [o.path for o in objects]
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "environment_record_s": t2 - t1, "snapshot_code_s": t3 - t2,
                  "archive_objects_s": t4 - t3, "distributions": len(record.distributions),
                  "snapshot_files": len(snapshot.files)}))
"""


# -- helpers ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def fsync_off() -> Iterator[None]:
    """Setup only: same files on disk, without waiting for each to reach the platter."""
    real = os.fsync
    os.fsync = lambda fd: None
    try:
        yield
    finally:
        os.fsync = real


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def archive_objects(snapshot: CodeSnapshot, record: EnvironmentRecord) -> tuple[ArchiveObject, ...]:
    """What a recorded Python task carries (``airflow_repro.airflow.restore.archive_objects``)."""
    return (ArchiveObject("code", snapshot.canonical_json()), ArchiveObject("environment", record.canonical_json()))


def task_env(
    run_id: str, task_id: str, index: int, objects: tuple[ArchiveObject, ...], snapshot: CodeSnapshot | None
) -> TaskEnvironment:
    return TaskEnvironment(
        identity=AirflowIdentity(dag_id=DAG, run_id=run_id, task_id=task_id, try_number=1),
        code=CodeVersion(
            source_hash=SOURCE, bundle_version="bench-v1", snapshot=snapshot.digest if snapshot is not None else None
        ),
        environment=fingerprint_pin(),
        parameters=Parameters(seed=index, task_params={"index": index}),
        versions=versions("bench"),
        hardware=hardware(),
        archive=objects,
    )


def new_store(root: Path) -> LocalStore:
    """A store with the repository and one seed file on main, which every task reads."""
    store = LocalStore(root)
    store.create_repository(REPOSITORY, default_branch="main")
    seed = root.parent / f"{root.name}-seed.csv"
    seed.write_bytes(b"id,value\n" + b"".join(f"{i},{i * i}\n".encode() for i in range(64)))
    store.commit(REPOSITORY, "main", {"seed.csv": store.stage_file(REPOSITORY, seed)}, message="seed")
    return store


def record_task(
    store: LocalStore,
    work_root: Path,
    run_id: str,
    index: int,
    objects: tuple[ArchiveObject, ...],
    snapshot: CodeSnapshot | None,
) -> None:
    """One task's record path: pin the seed, write one output, commit outputs + manifest."""
    recorder = TaskRecorder(store, None, default_repository=REPOSITORY, default_branch="main", work_root=work_root)
    task_id = f"task_{index:04d}"
    output = f"data/{task_id}.txt"
    spec = TaskSpec(task_id=task_id, inputs={"seed": Input("seed.csv", ref="main")}, outputs=(output,))
    prepared = recorder.prepare(spec, task_env(run_id, task_id, index, objects, snapshot))
    (prepared.output_dir / "data").mkdir()
    (prepared.output_dir / output).write_bytes(f"output of {run_id}/{task_id}\n".encode() * 8)
    recorder.finish(prepared)


# -- (1) record path --------------------------------------------------------------------------------


def bench_record(root: Path, tasks: int, rounds: int, snapshot: CodeSnapshot, record: EnvironmentRecord) -> dict:
    objects = archive_objects(snapshot, record)
    store_root, work_root = root / "store", root / "work"
    new_store(store_root)
    # Warm-up: the archive's objects get stored; both code paths run once before any timing.
    record_task(LocalStore(store_root), work_root, "manual__warmup", 0, objects, snapshot)
    for i in range(1, 4):
        record_task(LocalStore(store_root), work_root, "manual__warmup", i, (), None)
    archive_head = LocalStore(store_root).resolve_ref(REPOSITORY, ARCHIVE_BRANCH)

    per_round = max(1, -(-tasks // rounds))
    carried = {"baseline": (), "archive": objects}
    shots = {"baseline": None, "archive": snapshot}
    samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
    round_medians: dict[str, list[float]] = {v: [] for v in VARIANTS}
    paired: list[float] = []  # archive minus baseline, task i of the same round
    for r in range(rounds):
        this_round: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for i in range(per_round):
            # Task by task, in alternating order (A B, B A, ...), each variant on its own run branch.
            for variant in VARIANTS if i % 2 == 0 else VARIANTS[::-1]:
                store = LocalStore(store_root)  # a task process's own store object: caches empty
                started = time.perf_counter()
                record_task(store, work_root, f"manual__r{r:02d}_{variant}", i, carried[variant], shots[variant])
                this_round[variant].append(time.perf_counter() - started)
            paired.append(this_round["archive"][-1] - this_round["baseline"][-1])
        for variant in VARIANTS:
            samples[variant] += this_round[variant]
            round_medians[variant].append(statistics.median(this_round[variant]))
    unchanged = LocalStore(store_root).resolve_ref(REPOSITORY, ARCHIVE_BRANCH) == archive_head

    # ensure_archived alone, both objects stored, on a fresh store object per call.
    ensure_s = []
    for _ in range(ENSURE_CALLS):
        store = LocalStore(store_root)
        seconds, added = timed(partial(ensure_archived, store, REPOSITORY, objects, default_branch="main"))
        assert added == [], added  # both were stored by the warm-up task
        ensure_s.append(seconds)

    base, arch = statistics.median(samples["baseline"]), statistics.median(samples["archive"])
    return {
        "tasks_per_variant": per_round * rounds,
        "rounds": rounds,
        "baseline_ms": round(base * 1e3, 3),
        "archive_ms": round(arch * 1e3, 3),
        "added_ms": round((arch - base) * 1e3, 3),
        "added_paired_median_ms": round(statistics.median(paired) * 1e3, 3),
        "added_target_ms": ADDED_TARGET_MS,
        "ratio": round(arch / base, 3),
        "round_medians_ms": {v: [round(x * 1e3, 2) for x in round_medians[v]] for v in VARIANTS},
        "baseline_p90_ms": round(statistics.quantiles(samples["baseline"], n=10)[-1] * 1e3, 2),
        "archive_p90_ms": round(statistics.quantiles(samples["archive"], n=10)[-1] * 1e3, 2),
        "archive_branch_unchanged": unchanged,
        "ensure_archived_ms": round(statistics.median(ensure_s) * 1e3, 3),
        "ensure_archived_calls": ENSURE_CALLS,
        "archive_object_bytes": {o.kind: len(o.data) for o in objects},
    }


def bench_fresh_process(rounds: int) -> dict:
    """The once-per-process cost of computing the snapshot and the environment record."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    runs = []
    for _ in range(max(rounds, 3)):
        result = subprocess.run(
            [sys.executable, "-c", FRESH_PROCESS, str(DAG_FILE), str(CODE_ROOT)],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO_ROOT,
            env=env,
        )
        runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    keys = ("import_s", "environment_record_s", "snapshot_code_s", "archive_objects_s")
    summary: dict[str, Any] = {
        k.replace("_s", "_ms"): round(statistics.median(r[k] for r in runs) * 1e3, 2) for k in keys
    }
    summary["processes"] = len(runs)
    summary["distributions"] = runs[0]["distributions"]
    summary["snapshot_files"] = runs[0]["snapshot_files"]
    return summary


# -- (2) rebuild ------------------------------------------------------------------------------------


def uv_cache_dir(uv: str) -> Path | None:
    result = subprocess.run([uv, "cache", "dir"], capture_output=True, text=True, check=False)
    return Path(result.stdout.strip()) if result.returncode == 0 and result.stdout.strip() else None


def empty_venv(uv: str, target: Path) -> None:
    subprocess.run(
        [uv, "venv", "--quiet", "--relocatable", "--python", sys.executable, str(target)],
        check=True,
        capture_output=True,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
    )


def dist_infos(python: Path) -> int:
    return sum(1 for _ in python.parent.parent.glob("lib/*/site-packages/*.dist-info"))


def bench_rebuild(root: Path, rounds: int, record: EnvironmentRecord) -> dict:
    uv = _uv_binary()
    cache = uv_cache_dir(uv)
    warm_s, _ = timed(lambda: ensure_environment(record, root / "warm-up"))  # untimed in the figures
    shutil.rmtree(root / "warm-up")
    builds, reuses, empties, installed = [], [], [], 0
    for r in range(rounds):
        empty = root / f"empty-{r}"
        empties.append(timed(partial(empty_venv, uv, empty))[0])
        shutil.rmtree(empty)
        cache_root = root / f"build-{r}"
        seconds, python = timed(partial(ensure_environment, record, cache_root))
        builds.append(seconds)
        reuses.append(timed(partial(ensure_environment, record, cache_root))[0])
        installed = dist_infos(python)
        shutil.rmtree(cache_root)
    build, empty_s = statistics.median(builds), statistics.median(empties)
    same_fs = cache is not None and cache.exists() and cache.stat().st_dev == root.stat().st_dev
    return {
        "distributions": len(record.distributions),
        "installed_dist_infos": installed,
        "rounds": rounds,
        "warm_up_build_s": round(warm_s, 3),
        "rebuild_s": round(build, 3),
        "rebuild_min_s": round(min(builds), 3),
        "rebuild_max_s": round(max(builds), 3),
        "reuse_ms": round(statistics.median(reuses) * 1e3, 3),
        "empty_venv_s": round(empty_s, 3),
        "ratio_rebuild_to_empty": round(build / empty_s, 2),
        "uv_cache": str(cache),
        "uv_cache_on_same_filesystem": same_fs,
        "uv": subprocess.run([uv, "--version"], capture_output=True, text=True, check=False).stdout.strip(),
    }


# -- (3) store growth -------------------------------------------------------------------------------


def manifest_sizes(store: LocalStore, runs: list[str]) -> list[int]:
    sizes = []
    for run_id in runs:
        branch = run_branch_name(DAG, run_id)
        sizes += [o.size for o in store.list_objects(REPOSITORY, branch, prefix=MANIFEST_DIR + "/")]
    return sizes


def grow_store(root: Path, objects: tuple[ArchiveObject, ...], snapshot: CodeSnapshot | None) -> dict:
    store = new_store(root / "store")
    before = {"objects": folder_bytes(root / "store" / "objects"), "repos": folder_bytes(root / "store" / "repos")}
    per_run = GROWTH_TASKS // GROWTH_RUNS
    runs = [f"manual__growth_{r:02d}" for r in range(GROWTH_RUNS)]
    started = time.perf_counter()
    with fsync_off():
        for run_id in runs:
            for i in range(per_run):
                record_task(store, root / "work", run_id, i, objects, snapshot)
    setup_s = time.perf_counter() - started
    after = {"objects": folder_bytes(root / "store" / "objects"), "repos": folder_bytes(root / "store" / "repos")}
    archived = []
    for obj in objects:
        info = store.stat_object(REPOSITORY, ARCHIVE_BRANCH, obj.path)
        archived.append(store.object_path(info.content_hash).stat().st_size)
    archive_commits = 0
    if objects:  # the archive branch exists only where something was archived
        main_commits = sum(1 for _ in store.log(REPOSITORY, "main"))
        archive_commits = sum(1 for _ in store.log(REPOSITORY, ARCHIVE_BRANCH)) - main_commits
    sizes = manifest_sizes(store, runs)
    return {
        "objects_added": after["objects"] - before["objects"],
        "repos_added": after["repos"] - before["repos"],
        "archived_object_files": len(archived),
        "archived_object_bytes": sum(archived),
        "archive_branch_commits": archive_commits,
        "manifests": len(sizes),
        "manifest_mean_bytes": round(statistics.mean(sizes), 1),
        "setup_s": round(setup_s, 1),
    }


def bench_growth(root: Path, snapshot: CodeSnapshot, record: EnvironmentRecord) -> dict:
    without = grow_store(root / "without", (), None)
    with_archive = grow_store(root / "with", archive_objects(snapshot, record), snapshot)
    objects_diff = with_archive["objects_added"] - without["objects_added"]
    repos_diff = with_archive["repos_added"] - without["repos_added"]
    manifest_diff = (with_archive["manifest_mean_bytes"] - without["manifest_mean_bytes"]) * with_archive["manifests"]
    return {
        "tasks": GROWTH_TASKS,
        "runs": GROWTH_RUNS,
        "without": without,
        "with": with_archive,
        "objects_added_by_archive": objects_diff,
        "repos_added_by_archive": repos_diff,
        "total_added_by_archive": objects_diff + repos_diff,
        "per_task_added_bytes": round((objects_diff + repos_diff) / GROWTH_TASKS, 1),
        "of_which_archived_objects": with_archive["archived_object_bytes"],
        # The archive itself: its objects (once) and the archive branch's commit, tree and ref.
        "archive_itself_bytes": with_archive["archived_object_bytes"] + repos_diff,
        # The rest of objects/: every manifest names the snapshot digest (code.snapshot).
        "manifest_references_bytes": objects_diff - with_archive["archived_object_bytes"],
        "manifest_references_from_means": round(manifest_diff),
    }


# -- report -----------------------------------------------------------------------------------------


def print_record(rec: dict, fresh: dict) -> None:
    n = rec["tasks_per_variant"]
    print(
        f"(1) record path, {n} tasks per variant in {rec['rounds']} interleaved rounds, fresh LocalStore per task, "
        "both archive objects already stored"
    )
    print(f"    {'variant':<34} {'median ms/task':>15} {'p90 ms':>8}   round medians (ms)")
    for label, key in (("baseline (archive empty)", "baseline"), ("archive (code + environment)", "archive")):
        medians = ", ".join(f"{x:.1f}" for x in rec["round_medians_ms"][key])
        print(f"    {label:<34} {rec[key + '_ms']:>15.2f} {rec[key + '_p90_ms']:>8.2f}   {medians}")
    verdict = "met" if rec["added_ms"] <= ADDED_TARGET_MS else "MISSED"
    print(
        f"    added per task {rec['added_ms']:+.2f} ms (target <= {ADDED_TARGET_MS:.0f} ms: {verdict}; median of the "
        f"paired differences {rec['added_paired_median_ms']:+.2f} ms); archive/baseline = {rec['ratio']:.3f}x"
    )
    print(
        f"    ensure_archived alone (both stored, fresh store object): {rec['ensure_archived_ms']:.2f} ms "
        f"(median of {rec['ensure_archived_calls']}); archive branch unchanged by the timed tasks: "
        f"{rec['archive_branch_unchanged']}"
    )
    sizes = ", ".join(f"{k} {v:,} B" for k, v in rec["archive_object_bytes"].items())
    print(f"    objects carried: {sizes}")
    print(
        f"    once per task process (fresh python -c, median of {fresh['processes']}): imports "
        f"{fresh['import_ms']:.0f} ms, environment_record() {fresh['environment_record_ms']:.1f} ms "
        f"({fresh['distributions']} distributions), snapshot_code {fresh['snapshot_code_ms']:.2f} ms "
        f"({fresh['snapshot_files']} file), archive objects + digests {fresh['archive_objects_ms']:.2f} ms"
    )
    print()


def print_rebuild(reb: dict) -> None:
    print(
        f"(2) rebuild of this venv's environment ({reb['distributions']} distributions) with uv, cache warm "
        f"({reb['uv']}, cache {reb['uv_cache']}, same filesystem as the build: {reb['uv_cache_on_same_filesystem']})"
    )
    print(f"    {'step':<46} {'median':>10}   (of {reb['rounds']} rounds)")
    print(
        f"    {'ensure_environment, fresh folder':<46} {reb['rebuild_s']:>8.2f} s   "
        f"(min {reb['rebuild_min_s']:.2f}, max {reb['rebuild_max_s']:.2f}; {reb['installed_dist_infos']} .dist-info)"
    )
    print(f"    {'ensure_environment again (reuse)':<46} {reb['reuse_ms']:>7.2f} ms")
    print(f"    {'baseline: uv venv, empty':<46} {reb['empty_venv_s']:>8.3f} s")
    print(
        f"    rebuild / empty venv = {reb['ratio_rebuild_to_empty']:.1f}x   "
        f"(untimed warm-up build: {reb['warm_up_build_s']:.2f} s)"
    )
    print()


def print_growth(g: dict) -> None:
    print(
        f"(3) store growth, {g['tasks']:,} tasks ({g['runs']} runs of {g['tasks'] // g['runs']}) sharing one code "
        "snapshot and one environment"
    )
    print(f"    {'bytes added':<28} {'objects/':>12} {'repos/':>12} {'manifest mean':>14}")
    for label, key in (("without archive", "without"), ("with archive", "with")):
        row = g[key]
        print(
            f"    {label:<28} {row['objects_added']:>12,} {row['repos_added']:>12,} {row['manifest_mean_bytes']:>12.1f} B"
        )
    print(
        f"    {'added by the archive':<28} {g['objects_added_by_archive']:>12,} {g['repos_added_by_archive']:>12,}"
        f"   total {g['total_added_by_archive']:,} B = {g['per_task_added_bytes']:.1f} B per task"
    )
    w = g["with"]
    print(
        f"    of which the archive itself: {w['archived_object_files']} objects stored once "
        f"({g['of_which_archived_objects']:,} B) + the archive branch's {w['archive_branch_commits']} commit, tree "
        f"and ref ({g['repos_added_by_archive']:,} B) = {g['archive_itself_bytes']:,} B in all, "
        f"{g['archive_itself_bytes'] / g['tasks']:.1f} B per task"
    )
    print(
        f"    and every manifest naming the snapshot digest (code.snapshot): {g['manifest_references_bytes']:,} B = "
        f"{g['manifest_references_bytes'] / g['tasks']:.1f} B per task (from the mean manifest sizes: "
        f"{g['manifest_references_from_means']:,} B)"
    )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=200, help="tasks per variant in (1)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds in (1); rebuilds in (2)")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args()
    began = time.perf_counter()
    record = environment_record()
    snapshot = snapshot_code(DAG_FILE, CODE_ROOT)
    fingerprint_pin(), hardware()  # warm the interpreter-wide caches the recorder uses

    with tempfile.TemporaryDirectory(prefix="bench-restore-record-") as tmp:
        rec = bench_record(Path(tmp), args.tasks, args.rounds, snapshot, record)
    fresh = bench_fresh_process(args.rounds)
    print_record(rec, fresh)
    with tempfile.TemporaryDirectory(prefix="bench-restore-rebuild-") as tmp:
        reb = bench_rebuild(Path(tmp), args.rounds, record)
    print_rebuild(reb)
    with tempfile.TemporaryDirectory(prefix="bench-restore-growth-") as tmp:
        growth = bench_growth(Path(tmp), snapshot, record)
    print_growth(growth)

    total_s = time.perf_counter() - began
    load = os.getloadavg()
    print(
        f"benchmark wall time {total_s:.0f} s on {os.cpu_count()} CPUs; load average at the end "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min: other processes share the CPUs)"
    )
    if args.json is not None:
        figures = {
            "bench": "restore",
            "record": rec,
            "fresh_process": fresh,
            "rebuild": reb,
            "growth": growth,
            "wall_s": round(total_s, 1),
            "cpus": os.cpu_count(),
            "loadavg": [round(x, 2) for x in load],
        }
        args.json.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
