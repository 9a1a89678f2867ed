"""Benchmark: replay planning for a 1,000-task DAG run, and verification of up to 10,000 outputs.

Run:  .venv/bin/python bench/bench_replay.py [--tasks 1000] [--repeats 3]

(a) plan: one run of ``--tasks`` tasks recorded through the real record path (``TaskRecorder``, no
    tracker): each task reads one input pinned to a commit (task 0: a tagged file of another
    repository; task i: task i-1's output on the run branch, so pinned to the commit task i-1
    made) and writes one small output; then ``close_run``. Setup only: ``os.fsync`` is a no-op
    while building (the bytes on disk are the same; only durability is skipped). Timed, best of
    ``--repeats``, each on a fresh ``LocalStore`` object (its in-process commit/tree caches
    empty; the OS page cache is warm): ``load_run`` and ``plan_replay`` with a ``current``
    mapping of every task, unchanged (no drift). Baseline in the same process: just listing the
    manifest objects and reading each one (``list_objects`` + ``open_object().read()``). For
    comparison, the check planning does NOT use: ``stat_object`` of every pinned input at its own
    commit (it parses each commit's whole tree, quadratic in the task count), against the same
    number of stats all at one commit. Planning uses ``check_available`` (commit and object exist).
(b) verify: for N in 1,000 / 5,000 / 10,000 output objects per run and object sizes 1 KiB and
    1 MiB, an original run and its replay, each of ``--verify-tasks`` tasks with N/tasks outputs
    committed with their manifest (the commits the recorder makes, metadata included). 1 KiB
    objects are real content; 1 MiB objects are sparse placeholder files (10 GiB apparent, no
    data blocks) whose zero bytes do NOT match the recorded hash, so any read of one through the
    store would raise StoreCorruption. Timed: ``verify_replay`` (best of max(``--repeats``, 10))
    and ``load_run`` of both runs (what the ``verify`` command does first; best of
    max(``--repeats``, 5)). Every store read is counted by wrapping ``LocalStore.open_object`` /
    ``materialize`` / ``_open_object_file`` / ``_copy_verified``.

Prints a table, then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from airflow_repro.adapters.local_store import LocalStore  # noqa: E402
from airflow_repro.core import metadata_keys as keys  # noqa: E402
from airflow_repro.core.environment import fingerprint_pin, hardware, versions  # noqa: E402
from airflow_repro.core.hashing import hash_bytes  # noqa: E402
from airflow_repro.core.manifest import (  # noqa: E402
    AirflowIdentity,
    CodeVersion,
    DataOutput,
    Parameters,
    ReplayInfo,
    TaskManifest,
    Timing,
)
from airflow_repro.core.naming import run_branch_name, run_tag_name  # noqa: E402
from airflow_repro.core.ports import StagedObject  # noqa: E402
from airflow_repro.core.recorder import (  # noqa: E402
    MANIFEST_DIR,
    TaskEnvironment,
    TaskRecorder,
    _outputs_digest,
    manifest_path,
    task_key,
)
from airflow_repro.core.replay import CurrentTask, plan_replay, replay_run_id  # noqa: E402
from airflow_repro.core.runs import StoredRun, close_run, load_run  # noqa: E402
from airflow_repro.core.spec import Input, TaskSpec  # noqa: E402
from airflow_repro.core.verify import verify_replay  # noqa: E402

KIB, MIB = 1024, 1024 * 1024
DAG = "bench_replay"
RUN = "manual__bench"
SOURCE = "sha256:" + "ab" * 32
PLAN_TARGET_S = 1.0
VERIFY_NS = (1_000, 5_000, 10_000)
VERIFY_SIZES = ((KIB, "1 KiB"), (MIB, "1 MiB"))


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


READ_METHODS = ("open_object", "materialize", "_open_object_file", "_copy_verified")


@contextlib.contextmanager
def counting_reads() -> Iterator[Counter[str]]:
    """Count every call that reads object bytes; ``open_object`` is split into manifests / data."""
    counts: Counter[str] = Counter()
    originals = {name: getattr(LocalStore, name) for name in READ_METHODS}

    def wrap(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(self: LocalStore, *args: Any, **kwargs: Any) -> Any:
            if name == "open_object":
                path = args[2] if len(args) > 2 else kwargs["path"]
                counts["open_object(manifest)" if path.startswith(MANIFEST_DIR + "/") else "open_object(data)"] += 1
            else:
                counts[name] += 1
            return method(self, *args, **kwargs)

        return counted

    for name, method in originals.items():
        setattr(LocalStore, name, wrap(name, method))
    try:
        yield counts
    finally:
        for name, method in originals.items():
            setattr(LocalStore, name, method)


def best_of(repeats: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def data_reads(counts: Counter[str]) -> int:
    """Reads of anything but a manifest. ``open_object`` calls ``_open_object_file`` and
    ``materialize`` calls ``_copy_verified``: those inner calls are not counted twice."""
    opened = counts["open_object(manifest)"] + counts["open_object(data)"]
    return (
        counts["open_object(data)"]
        + counts["materialize"]
        + max(counts["_open_object_file"] - opened, 0)
        + max(counts["_copy_verified"] - counts["materialize"], 0)
    )


# -- (a) plan ---------------------------------------------------------------------------------------


def task_env(task_id: str, run_id: str, started: int) -> TaskEnvironment:
    return TaskEnvironment(
        identity=AirflowIdentity(dag_id=DAG, run_id=run_id, task_id=task_id, try_number=1),
        code=CodeVersion(source_hash=SOURCE, bundle_version="bench-v1"),
        environment=fingerprint_pin(),
        parameters=Parameters(seed=started, task_params={"index": started}),
        versions=versions("bench"),
        hardware=hardware(),
    )


def build_plan_store(root: Path, tasks: int) -> float:
    """Record a run of ``tasks`` chained tasks through TaskRecorder; return the setup seconds."""
    started = time.perf_counter()
    store = LocalStore(root / "store")
    store.create_repository("reference-data")
    seed = root / "seed.csv"
    seed.write_bytes(b"seed data\n")
    commit = store.commit(
        "reference-data", "main", {"seed.csv": store.stage_file("reference-data", seed)}, message="seed"
    )
    store.create_tag("reference-data", "v1", commit.id)
    recorder = TaskRecorder(store, None, default_repository="repro", default_branch="main", work_root=root / "work")
    with fsync_off():
        for i in range(tasks):
            task_id = f"task_{i:04d}"
            source = (
                Input("seed.csv", repository="reference-data", ref="v1")
                if i == 0
                else Input(f"data/task_{i - 1:04d}.txt")
            )
            spec = TaskSpec(task_id=task_id, inputs={"upstream": source}, outputs=(f"data/{task_id}.txt",))
            prepared = recorder.prepare(spec, task_env(task_id, RUN, i))
            (prepared.output_dir / "data").mkdir()
            (prepared.output_dir / "data" / f"{task_id}.txt").write_bytes(f"output of {task_id}\n".encode() * 4)
            recorder.finish(prepared)
        close_run(store, DAG, RUN, "success")
    return time.perf_counter() - started


def stat_all(store_root: Path, pins: list[tuple[str, str, str]]) -> None:
    store = LocalStore(store_root)  # fresh in-process caches
    for repository, commit_id, path in pins:
        store.stat_object(repository, commit_id, path)


def tree_file(store_root: Path, repository: str, commit_id: str) -> Path:
    """The tree file of a commit, per the on-disk layout in local_store's docstring."""
    repo_dir = store_root / "repos" / repository
    commit = json.loads((repo_dir / "commits" / f"{commit_id}.json").read_bytes())
    return repo_dir / "trees" / f"{commit['tree']}.json"


def bench_plan(root: Path, tasks: int, repeats: int) -> dict[str, Any]:
    setup_s = build_plan_store(root, tasks)
    store_root = root / "store"

    def baseline() -> int:
        store = LocalStore(store_root)
        ref = store.resolve_ref("repro", run_tag_name(DAG, RUN))
        total = 0
        for info in store.list_objects("repro", ref, prefix=MANIFEST_DIR + "/"):
            with store.open_object("repro", ref, info.path) as handle:
                total += len(handle.read())
        return total

    baseline_s, manifest_bytes = best_of(repeats, baseline)

    loads, plans, log_walks = [], [], []
    with counting_reads() as counts:
        for _ in range(repeats):
            store = LocalStore(store_root)  # fresh in-process caches each time
            t0 = time.perf_counter()
            recorded = load_run(store, DAG, RUN)
            t1 = time.perf_counter()
            current = {
                t.manifest.identity.task_id: CurrentTask(
                    task_id=t.manifest.identity.task_id,
                    source_hash=t.manifest.code.source_hash,
                    environment_digest=t.manifest.environment.digest,
                    bundle_version=t.manifest.code.bundle_version,
                    task_params=t.manifest.parameters.task_params,
                )
                for t in recorded.tasks
            }
            t2 = time.perf_counter()
            plan = plan_replay(recorded, current, store, mode="pinned", replay_run_id=replay_run_id(RUN))
            t3 = time.perf_counter()
            loads.append(t1 - t0)
            plans.append(t3 - t2)
            assert len(plan.tasks) == tasks and plan.drift == [], plan.drift[:3]
            assert all(len(p.inputs) == 1 for p in plan.tasks)
        reads_per_pass = {k: v // repeats for k, v in counts.items()}
        data_reads_per_pass = data_reads(counts) // repeats
    for _ in range(repeats):  # part of load_run: walking the run's history for commit metadata
        store = LocalStore(store_root)
        t0 = time.perf_counter()
        commits = sum(1 for _ in store.log("repro", recorded.ref))
        log_walks.append(time.perf_counter() - t0)

    # Where plan_replay's time goes: its drift check stats every pinned input at its commit.
    pins = [(p.inputs[0].repository, p.inputs[0].commit_id, p.inputs[0].path) for p in plan.tasks]
    input_stat_s, _ = best_of(repeats, functools.partial(stat_all, store_root, pins))
    head = recorded.head_commit
    same_commit = [("repro", head, o.path) for o in LocalStore(store_root).list_objects("repro", head, prefix="data/")]
    same_commit_stat_s, _ = best_of(repeats, functools.partial(stat_all, store_root, same_commit[:tasks]))
    pinned_commits = {c for repo, c, _ in pins if repo == "repro"}
    tree_bytes = sum(tree_file(store_root, "repro", c).stat().st_size for c in pinned_commits)

    best = min(a + b for a, b in zip(loads, plans, strict=True))
    return {
        "tasks": tasks,
        "distinct_input_commits": len({p.inputs[0].commit_id for p in plan.tasks}),
        "setup_s": round(setup_s, 2),
        "load_run_s": round(min(loads), 4),
        "log_walk_s": round(min(log_walks), 4),
        "commits_walked": commits,
        "plan_replay_s": round(min(plans), 4),
        "input_stat_s": round(input_stat_s, 4),
        "same_commit_stat_s": round(same_commit_stat_s, 4),
        "same_commit_stats": len(same_commit[:tasks]),
        "tree_bytes_behind_pins": tree_bytes,
        "total_s": round(best, 4),
        "target_s": PLAN_TARGET_S,
        "meets_target": best < PLAN_TARGET_S,
        "baseline_read_manifests_s": round(baseline_s, 4),
        "baseline_manifest_bytes": manifest_bytes,
        "ratio_total_to_baseline": round(best / baseline_s, 2),
        "store_reads_per_load_and_plan": reads_per_pass,
        "data_object_reads_per_load_and_plan": data_reads_per_pass,
    }


# -- (b) verify -------------------------------------------------------------------------------------


def placeholder_object(store: LocalStore, label: str, size: int) -> StagedObject:
    """A sparse file of ``size`` zero bytes filed under a hash it does not match (never read)."""
    content_hash = hash_bytes(label.encode())
    path = store.object_path(content_hash)
    path.parent.mkdir(exist_ok=True)
    with open(path, "wb") as out:
        out.truncate(size)
    os.chmod(path, 0o444)
    return StagedObject(content_hash, size)


def real_object(store: LocalStore, repository: str, label: str, size: int) -> StagedObject:
    data = (label.encode() + b"\n") * (size // (len(label) + 1) + 1)
    return store.stage_bytes(repository, data[:size])


def commit_task(
    store: LocalStore, repository: str, run_id: str, index: int, outputs: dict[str, StagedObject], replay_of: str | None
) -> None:
    """The commit TaskRecorder.finish makes: outputs + manifest, with the recorder's metadata."""
    task_id = f"task_{index:03d}"
    branch = run_branch_name(DAG, run_id)
    ident = AirflowIdentity(dag_id=DAG, run_id=run_id, task_id=task_id, try_number=1)
    manifest = TaskManifest(
        identity=ident,
        code=CodeVersion(source_hash=SOURCE, bundle_version="bench-v1"),
        environment=fingerprint_pin(),
        outputs=[DataOutput(path=p, content_hash=s.content_hash, size=s.size) for p, s in outputs.items()],
        output_repository=repository,
        output_branch=branch,
        parameters=Parameters(seed=index),
        hardware=hardware(),
        versions=versions("bench"),
        timing=Timing(started_at=f"2025-01-01T00:00:{index // 1000:02d}.{index % 1000:03d}Z"),
        replay=(
            ReplayInfo(of_run_id=replay_of, mode="pinned", plan_digest="sha256:" + "0" * 64) if replay_of else None
        ),
    )
    mpath = manifest_path(task_id, -1)
    changes = {**outputs, mpath: store.stage_bytes(repository, manifest.canonical_json())}
    store.commit(
        repository,
        branch,
        changes,
        message=f"{DAG}.{task_id}: outputs of {run_id} (try 1)",
        metadata={
            keys.TASK_KEY: task_key(ident),
            keys.TRY_NUMBER: "1",
            keys.MANIFEST_DIGEST: manifest.digest,
            keys.MANIFEST_PATH: mpath,
            keys.ENV_PIN: manifest.environment.digest,
            keys.OUTPUTS_DIGEST: _outputs_digest(manifest.outputs),
            keys.LAKEFS_AIRFLOW_DAG_ID: DAG,
            keys.LAKEFS_AIRFLOW_RUN_ID: run_id,
            keys.AIRFLOW_TASK_ID: task_id,
        },
    )


def build_verify_runs(store: LocalStore, repository: str, n: int, size: int, tasks: int) -> tuple[str, str]:
    store.create_repository(repository)
    original = f"manual__{repository}"  # run ids are unique across repositories, as in Airflow
    replay = replay_run_id(original)
    per_task = n // tasks
    objects = [
        (
            real_object(store, repository, f"{repository}/obj-{k}", size)
            if size <= 64 * KIB
            else placeholder_object(store, f"{repository}/obj-{k}", size)
        )
        for k in range(n)
    ]
    for run_id, replay_of in ((original, None), (replay, original)):
        store.create_branch(repository, run_branch_name(DAG, run_id), "main")
        for i in range(tasks):
            outputs = {f"out/{i:03d}/part-{j:05d}.bin": objects[i * per_task + j] for j in range(per_task)}
            commit_task(store, repository, run_id, i, outputs, replay_of)
        close_run(store, DAG, run_id, "success")
    return original, replay


def counter_self_check(store_root: Path, repository: str, run: StoredRun) -> int:
    """The counters see real reads: one open_object + one materialize of an output count as 2."""
    store = LocalStore(store_root)
    path = run.tasks[0].manifest.outputs[0].path
    with counting_reads() as counts:
        with store.open_object(repository, run.ref, path) as handle:
            handle.read()
        store.materialize(repository, run.ref, path, store_root.parent / "materialized.bin")
    assert data_reads(counts) == 2, counts
    return data_reads(counts)


def load_both(store_root: Path, original_id: str, replay_id: str) -> tuple[StoredRun, StoredRun]:
    store = LocalStore(store_root)  # fresh in-process caches each time
    return load_run(store, DAG, original_id), load_run(store, DAG, replay_id)


def bench_verify(root: Path, tasks: int, repeats: int) -> list[dict[str, Any]]:
    """Build every configuration first, then time them round-robin: a burst of load from another
    process then spoils one repetition of several configurations, not every repetition of one."""
    store_root = root / "store"
    configs = []
    for size, size_label in VERIFY_SIZES:
        for n in VERIFY_NS:
            repository = f"verify-{size // KIB}k-{n}"
            started = time.perf_counter()
            with fsync_off():
                original_id, replay_id = build_verify_runs(LocalStore(store_root), repository, n, size, tasks)
            original, replay = load_both(store_root, original_id, replay_id)
            verify_replay(original, replay)  # warm-up, untimed
            configs.append(
                {
                    "n": n,
                    "size": size,
                    "size_label": size_label,
                    "repository": repository,
                    "ids": (original_id, replay_id),
                    "runs": (original, replay),
                    "setup_s": time.perf_counter() - started,
                    "load": [],
                    "verify": [],
                }
            )

    load_rounds, verify_rounds = max(repeats, 5), max(repeats, 10)
    for c in configs:
        c["load_counts"], c["verify_counts"] = Counter(), Counter()
    for _ in range(load_rounds):
        for c in configs:
            with counting_reads() as counts:
                started = time.perf_counter()
                load_both(store_root, *c["ids"])
                c["load"].append(time.perf_counter() - started)
            c["load_counts"].update(counts)
    for _ in range(verify_rounds):
        for c in configs:
            with counting_reads() as counts:
                started = time.perf_counter()
                c["report"] = verify_replay(*c["runs"])
                c["verify"].append(time.perf_counter() - started)
            c["verify_counts"].update(counts)

    rows = []
    for c in configs:
        report = c["report"]
        compared = sum(t.objects_compared for t in report.tasks)
        assert report.verdict == "identical" and compared == c["n"], (report.verdict, compared)
        rows.append(
            {
                "n": c["n"],
                "size": c["size"],
                "size_label": c["size_label"],
                "tasks": tasks,
                "objects_compared": compared,
                "verdict": report.verdict,
                "verify_replay_s": round(min(c["verify"]), 5),
                "load_both_runs_s": round(min(c["load"]), 4),
                "setup_s": round(c["setup_s"], 2),
                "store_reads_in_verify": sum(c["verify_counts"].values()) // verify_rounds,
                "object_reads_in_load": data_reads(c["load_counts"]) // load_rounds,
                "manifest_reads_in_load": c["load_counts"]["open_object(manifest)"] // load_rounds,
            }
        )
    first = configs[0]
    rows[0]["counter_self_check"] = counter_self_check(store_root, first["repository"], first["runs"][0])
    return rows


# -- report -----------------------------------------------------------------------------------------


def ratio(rows: list[dict[str, Any]], key: str, a: tuple[int, int], b: tuple[int, int]) -> float:
    pick = {(r["n"], r["size"]): r[key] for r in rows}
    return round(pick[a] / pick[b], 2)


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares ``y = a + b x``: (a, b, r^2)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    b = sxy / sxx
    a = my - b * mx
    ss_res = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys, strict=True))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return a, b, 1 - ss_res / ss_tot if ss_tot else 1.0


def print_plan(plan: dict[str, Any], repeats: int) -> None:
    print(
        f"(a) replay plan of a {plan['tasks']}-task run, each task 1 input pinned to a commit "
        f"({plan['distinct_input_commits']} distinct commits), best of {repeats}, fresh LocalStore each"
    )
    print(f"    setup (TaskRecorder, {plan['tasks']} commits, fsync off): {plan['setup_s']:.1f} s")
    print(
        f"    load_run      {plan['load_run_s'] * 1e3:9.1f} ms   (of which log walk of {plan['commits_walked']} "
        f"commits: {plan['log_walk_s'] * 1e3:.1f} ms)"
    )
    print(f"    plan_replay   {plan['plan_replay_s'] * 1e3:9.1f} ms   (drift check of every pin, no drift found)")
    print(
        f"    (not used: stat_object of the {plan['tasks']} pinned inputs at their own commits "
        f"{plan['input_stat_s'] * 1e3:.1f} ms, {plan['tree_bytes_behind_pins'] / MIB:.0f} MiB of tree JSON; "
        f"{plan['same_commit_stats']} stats at one commit {plan['same_commit_stat_s'] * 1e3:.1f} ms)"
    )
    print(
        f"    total         {plan['total_s'] * 1e3:9.1f} ms   target < {PLAN_TARGET_S * 1e3:.0f} ms: "
        f"{'met' if plan['meets_target'] else 'MISSED'}"
    )
    print(
        f"    baseline      {plan['baseline_read_manifests_s'] * 1e3:9.1f} ms   (list + read the {plan['tasks']} "
        f"manifests, {plan['baseline_manifest_bytes'] / MIB:.1f} MiB)  ->  total/baseline = "
        f"{plan['ratio_total_to_baseline']:.2f}x"
    )
    print(f"    store reads per load_run + plan_replay: {plan['store_reads_per_load_and_plan']}")
    print(
        f"    data objects read: {plan['data_object_reads_per_load_and_plan']} "
        "(plan_replay only stats each pinned input)"
    )
    print()


def print_verify(rows: list[dict[str, Any]], tasks: int, repeats: int) -> dict[str, Any]:
    print(
        f"(b) verify_replay of a replay against its original, {tasks} tasks per run, best of "
        f"{max(repeats, 10)} rounds (load: {max(repeats, 5)}), configurations timed round-robin; object bytes are never read (1 MiB objects are placeholders that would fail "
        "their hash check if read)"
    )
    print(
        f"    {'N objects':>9} {'size':>6} {'verify_replay':>14} {'per object':>11} {'load both runs':>15} "
        f"{'reads in verify':>16} {'object reads in load':>21} {'manifests read':>15}"
    )
    for r in rows:
        print(
            f"    {r['n']:>9,} {r['size_label']:>6} {r['verify_replay_s'] * 1e3:>11.2f} ms "
            f"{r['verify_replay_s'] / r['n'] * 1e6:>8.2f} us {r['load_both_runs_s'] * 1e3:>12.1f} ms "
            f"{r['store_reads_in_verify']:>16} {r['object_reads_in_load']:>21} {r['manifest_reads_in_load']:>15}"
        )
    checks = [r["counter_self_check"] for r in rows if "counter_self_check" in r]
    print(f"    counter self-check: reading 1 output with open_object and materializing it counted {checks} data reads")
    ratios = {
        "verify_10k_over_1k_1KiB": ratio(rows, "verify_replay_s", (10_000, KIB), (1_000, KIB)),
        "verify_10k_over_1k_1MiB": ratio(rows, "verify_replay_s", (10_000, MIB), (1_000, MIB)),
        "verify_1MiB_over_1KiB_at_10k": ratio(rows, "verify_replay_s", (10_000, MIB), (10_000, KIB)),
        "load_10k_over_1k_1KiB": ratio(rows, "load_both_runs_s", (10_000, KIB), (1_000, KIB)),
        "load_1MiB_over_1KiB_at_10k": ratio(rows, "load_both_runs_s", (10_000, MIB), (10_000, KIB)),
    }
    print(
        f"    t(N=10k)/t(N=1k): verify {ratios['verify_10k_over_1k_1KiB']:.2f}x (1 KiB), "
        f"{ratios['verify_10k_over_1k_1MiB']:.2f}x (1 MiB); load both runs {ratios['load_10k_over_1k_1KiB']:.2f}x"
    )
    print(
        f"    t(1 MiB)/t(1 KiB) at N=10k: verify {ratios['verify_1MiB_over_1KiB_at_10k']:.2f}x; "
        f"load both runs {ratios['load_1MiB_over_1KiB_at_10k']:.2f}x"
    )
    for size, label in VERIFY_SIZES:
        pts = [r for r in rows if r["size"] == size]
        a, b, r2 = linear_fit([r["n"] for r in pts], [r["verify_replay_s"] for r in pts])
        ratios[f"verify_fit_{label.replace(' ', '')}"] = {
            "fixed_ms": round(a * 1e3, 2),
            "per_object_us": round(b * 1e6, 3),
            "r2": round(r2, 4),
        }
        print(f"    linear fit ({label}): verify_replay = {a * 1e3:.1f} ms + {b * 1e6:.2f} us x N   (r^2 {r2:.3f})")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1000, help="tasks of the run planned in (a)")
    parser.add_argument("--verify-tasks", type=int, default=100, help="tasks per run in (b); N is split over them")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=("plan", "verify"), help="run one part only")
    args = parser.parse_args()
    began = time.perf_counter()
    fingerprint_pin(), hardware()  # warm the interpreter-wide caches the recorder uses

    plan: dict[str, Any] | None = None
    rows: list[dict[str, Any]] | None = None
    ratios: dict[str, Any] | None = None
    if args.only != "verify":
        with tempfile.TemporaryDirectory(prefix="bench-replay-plan-") as tmp:
            plan = bench_plan(Path(tmp), args.tasks, args.repeats)
        print_plan(plan, args.repeats)
    if args.only != "plan":
        with tempfile.TemporaryDirectory(prefix="bench-replay-verify-") as tmp:
            rows = bench_verify(Path(tmp), args.verify_tasks, args.repeats)
        ratios = print_verify(rows, args.verify_tasks, args.repeats)
    total_s = time.perf_counter() - began
    load = os.getloadavg()
    print(
        f"benchmark wall time {total_s:.0f} s on {os.cpu_count()} CPUs; load average at the end "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min: other processes share the CPUs)"
    )
    print(
        json.dumps(
            {
                "bench": "replay",
                "plan": plan,
                "verify": rows,
                "ratios": ratios,
                "wall_s": round(total_s, 1),
                "cpus": os.cpu_count(),
                "loadavg": [round(x, 2) for x in load],
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
