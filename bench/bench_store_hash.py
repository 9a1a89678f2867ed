"""Benchmark: LocalStore stage+commit throughput against raw BLAKE3, and memory as files grow.

Run:  .venv/bin/python bench/bench_store_hash.py [--size-mib 1024]

1. raw:    plain ``blake3(max_threads=AUTO)`` over the file, read in 8 MiB chunks (best of N).
2. store:  ``LocalStore.stage_file(move=True)`` + ``commit`` of a copy of that file (best of N).
           Every copy starts with different bytes, so each run stores a new object (no dedup
           shortcut). Copies are written and synced to disk before timing, so neither figure
           includes flushing the benchmark's own writes.
3. memory: peak RSS growth while staging + committing files of 64 MiB, 256 MiB and 1 GiB, each
           in a fresh subprocess (``ru_maxrss`` is a per-process maximum), with move=True
           (rename in) and move=False (copy in). Growth = peak ``ru_maxrss`` after staging minus
           the RSS just before it; on Linux the peak is reset first (``/proc/self/clear_refs``)
           so a higher start-up peak cannot hide growth.

All files live in one temp directory next to the store, so ``move=True`` is a rename. Both timings
read the file from the page cache (it was just written), which is the case after a task writes
its output. Prints a table, then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import blake3

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.core.hashing import DEFAULT_CHUNK_SIZE

MIB = 1024 * 1024
REPO = "bench"
RSS_SIZES_MIB = (64, 256, 1024)
PATTERN_BLOCK = 4 * MIB


def make_file(path: Path, size: int, salt: int) -> None:
    """Random-looking data: one random block repeated, with a unique first block per salt."""
    block = os.urandom(PATTERN_BLOCK)
    with open(path, "wb", buffering=0) as out:
        written = 0
        while written < size:
            chunk = block[: min(PATTERN_BLOCK, size - written)]
            if written == 0:
                chunk = salt.to_bytes(16, "big") + chunk[16:]
            out.write(chunk)
            written += len(chunk)
        os.fsync(out.fileno())


def raw_hash_seconds(path: Path) -> float:
    buffer = bytearray(DEFAULT_CHUNK_SIZE)
    view = memoryview(buffer)
    start = time.perf_counter()
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    with open(path, "rb", buffering=0) as stream:
        while n := stream.readinto(view):
            hasher.update(view[:n])
    hasher.hexdigest()
    return time.perf_counter() - start


def stage_and_commit(store: LocalStore, path: Path, *, move: bool, name: str) -> None:
    staged = store.stage_file(REPO, path, move=move)
    store.commit(REPO, "main", {f"data/{name}": staged}, message=f"bench {name}")


def store_seconds(store: LocalStore, path: Path, name: str) -> float:
    start = time.perf_counter()
    stage_and_commit(store, path, move=True, name=name)
    return time.perf_counter() - start


def measure_throughput(workdir: Path, size: int, runs: int) -> dict:
    reference = workdir / "reference.bin"
    make_file(reference, size, salt=0)
    raw_best = min(raw_hash_seconds(reference) for _ in range(runs))

    store = LocalStore(workdir / "store")
    store.create_repository(REPO, exist_ok=True)
    copies = [workdir / f"copy-{i}.bin" for i in range(runs)]
    for i, copy in enumerate(copies, start=1):
        make_file(copy, size, salt=i)
    os.sync()
    store_best = min(store_seconds(store, copy, copy.name) for copy in copies)
    reference.unlink()

    raw_mib_s = size / MIB / raw_best
    store_mib_s = size / MIB / store_best
    return {
        "size_mib": size // MIB,
        "runs": runs,
        "raw_hash_s": round(raw_best, 4),
        "raw_hash_mib_s": round(raw_mib_s, 1),
        "stage_commit_s": round(store_best, 4),
        "stage_commit_mib_s": round(store_mib_s, 1),
        "ratio_commit_over_raw": round(store_mib_s / raw_mib_s, 3),
    }


def current_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # no /proc: the peak so far


def reset_peak_rss() -> None:
    """Start the peak-RSS count afresh (Linux >= 4.0), so start-up peaks cannot hide growth."""
    with contextlib.suppress(OSError):  # elsewhere the growth reads as a lower bound
        Path("/proc/self/clear_refs").write_text("5")


def rss_child(file: str, root: str, move: bool) -> None:
    """Subprocess body: stage + commit one file; print RSS before and the peak after (KiB)."""
    store = LocalStore(root)
    store.create_repository(REPO, exist_ok=True)
    reset_peak_rss()
    before = current_rss_kib()
    stage_and_commit(store, Path(file), move=move, name=Path(file).name)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kib": before, "peak_kib": peak}))


def measure_rss(workdir: Path, sizes_mib: tuple[int, ...]) -> list[dict]:
    rows = []
    for size_mib in sizes_mib:
        for move in (True, False):
            path = workdir / f"rss-{size_mib}-{'move' if move else 'copy'}.bin"
            make_file(path, size_mib * MIB, salt=1000 + size_mib * 2 + move)
            command = [
                sys.executable,
                __file__,
                "--rss-child",
                str(path),
                "--root",
                str(workdir / "store"),
            ]
            if move:
                command.append("--move")
            result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            path.unlink(missing_ok=True)
            rows.append(
                {
                    "size_mib": size_mib,
                    "mode": "move" if move else "copy",
                    "rss_before_mib": round(result["before_kib"] / 1024, 1),
                    "peak_rss_mib": round(result["peak_kib"] / 1024, 1),
                    "peak_rss_growth_mib": round((result["peak_kib"] - result["before_kib"]) / 1024, 1),
                }
            )
    return rows


def print_report(throughput: dict, rss_rows: list[dict]) -> None:
    t = throughput
    print(f"file size: {t['size_mib']} MiB, best of {t['runs']}, {os.cpu_count()} CPUs")
    print(f"{'measure':<28}{'seconds':>10}{'MiB/s':>10}")
    for label, key in (
        ("raw blake3 (AUTO threads)", "raw_hash"),
        ("stage_file(move) + commit", "stage_commit"),
    ):
        print(f"{label:<28}{t[key + '_s']:>10.3f}{t[key + '_mib_s']:>10.1f}")
    print(f"ratio commit/raw: {t['ratio_commit_over_raw']:.3f} (target >= 0.80)")
    print()
    print(f"{'file MiB':>9}{'mode':>6}{'RSS before':>12}{'peak RSS':>10}{'growth':>8}  (MiB)")
    for row in rss_rows:
        print(
            f"{row['size_mib']:>9}{row['mode']:>6}{row['rss_before_mib']:>12.1f}"
            f"{row['peak_rss_mib']:>10.1f}{row['peak_rss_growth_mib']:>8.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to put temp files and the store")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--move", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.root, args.move)
        return

    workdir = Path(tempfile.mkdtemp(prefix="bench-store-hash-", dir=args.dir))
    try:
        throughput = measure_throughput(workdir, args.size_mib * MIB, args.runs)
        rss_rows = [] if args.skip_rss else measure_rss(workdir, RSS_SIZES_MIB)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_report(throughput, rss_rows)
    growths = [row["peak_rss_growth_mib"] for row in rss_rows]
    summary = {
        "throughput": throughput,
        "rss": rss_rows,
        "rss_growth_spread_mib": round(max(growths) - min(growths), 1) if growths else None,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
