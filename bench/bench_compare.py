"""Benchmark: ``compare_objects`` on two large CSV files against a plain streaming read of both.

Run:  .venv/bin/python bench/bench_compare.py [--size-mib 1024] [--runs 3] [--noise]

1. Two CSV files of ``--size-mib`` each (6 columns: ids, floats, text) that differ in one cell,
   in the middle of the file. Both are written first and read once, so every timing reads from
   the page cache (the case right after a replay wrote its output, or after a store read).
2. read:    both files read to EOF in 8 MiB chunks (``readinto``, one reused buffer each).
3. compare: ``compare_files(original, replay, Tolerance(rel_tol=1e-6))`` with the built-in
            comparators (the CSV comparator's byte-level fast path, parsing only where the bytes
            differ).
4. verify:  the path ``airflow-repro verify`` takes: both files committed to a ``LocalStore``
            (outside the timing), then compared as verify compares a changed output
            (``core.verify.store_comparer``): streamed from the store at both commits through its
            verifying reader, which also re-hashes each object to EOF. Its baseline is
   store read: both objects read to EOF through the same verifying reader (the hash included).
   With ``--noise`` also a replay whose every other row carries a 1e-9 relative change (every
   window of rows is parsed and compared: the slow path).

Each measurement runs in a fresh subprocess (best of ``--runs`` for time); memory is the growth of
peak RSS over the RSS just before the measurement (the peak is reset first on Linux through
``/proc/self/clear_refs``, so start-up peaks cannot hide growth), plus the ``tracemalloc`` peak of
one more run (Python allocations only: pyarrow's own allocator is not traced, RSS covers it).
Prints a table, then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
READ_CHUNK = 8 * MIB
HEADER = b"id,epoch,loss,accuracy,split,lr\n"


def _rows(start: int, count: int, noise: float = 0.0) -> bytes:
    lines = []
    for i in range(start, start + count):
        loss = 1.0 / (1 + i % 977) * (1 + (noise if i % 2 else 0.0))
        lines.append(f"{i},{i % 50},{loss!r},{(i % 1000) / 1000!r},{'train' if i % 5 else 'test'},0.001\n")
    return "".join(lines).encode()


def make_files(directory: Path, size: int, noise: bool) -> dict[str, Path]:
    """original.csv, one_cell.csv (and noise.csv): ``size`` bytes each, block by block."""
    names = ["original", "one_cell"] + (["noise"] if noise else [])
    paths = {name: directory / f"{name}.csv" for name in names}
    outs = {name: open(path, "wb") for name, path in paths.items()}  # noqa: SIM115 - closed below
    try:
        for out in outs.values():
            out.write(HEADER)
        written, row, middle_done = len(HEADER), 0, False
        while written < size:
            block = _rows(row, 20_000)
            for name, out in outs.items():
                data = block
                if name == "one_cell" and not middle_done and written + len(block) > size // 2:
                    first = data.index(b"\n", len(data) // 2) + 1
                    line_end = data.index(b"\n", first)
                    cells = data[first:line_end].split(b",")
                    cells[2] = repr(float(cells[2]) * 1.5).encode()  # far beyond the tolerance
                    data = data[:first] + b",".join(cells) + data[line_end:]
                elif name == "noise":
                    data = _rows(row, 20_000, noise=1e-9)
                out.write(data)
            middle_done = middle_done or written + len(block) > size // 2
            written += len(block)
            row += 20_000
    finally:
        for out in outs.values():
            out.close()
    return paths


def current_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def reset_peak_rss() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def plain_read(a: Path, b: Path) -> None:
    buffers = bytearray(READ_CHUNK), bytearray(READ_CHUNK)
    views = memoryview(buffers[0]), memoryview(buffers[1])
    with open(a, "rb", buffering=0) as sa, open(b, "rb", buffering=0) as sb:
        while True:
            na, nb = sa.readinto(views[0]), sb.readinto(views[1])
            if not na and not nb:
                break


def child(kind: str, a: str, b: str, runs: int) -> None:
    """Subprocess body: the measurement ``kind`` on files ``a`` and ``b``; prints JSON."""
    from airflow_repro.adapters.comparators import builtin_registry
    from airflow_repro.core.comparison import Tolerance, compare_files

    registry, tolerance = builtin_registry(), Tolerance(rel_tol=1e-6)
    result: dict[str, object] = {}
    through_store = _committed(Path(a), Path(b), registry, tolerance, kind) if kind in STORE_KINDS else None

    def once() -> None:
        if kind == "read":
            plain_read(Path(a), Path(b))
        elif kind == "store-read" and through_store is not None:
            through_store()
        elif through_store is not None:
            report = through_store()
            result.update(verdict=report.verdict, summary=report.summary)
        else:
            report = compare_files(a, b, tolerance, registry=registry)
            result.update(verdict=report.verdict, summary=report.summary)

    with tempfile.TemporaryDirectory() as warm:  # imports and first-call costs, outside the figures
        Path(warm, "a.csv").write_bytes(b"a,b\n1,2\n")
        Path(warm, "b.csv").write_bytes(b"a,b\n1,3\n")
        compare_files(Path(warm, "a.csv"), Path(warm, "b.csv"), tolerance, registry=registry)
    reset_peak_rss()
    before = current_rss_kib()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    once()
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(json.dumps({"seconds": min(times), "rss_growth_kib": max(0, peak - before), "traced_peak": traced, **result}))


STORE_KINDS = ("verify", "store-read")


def _committed(a: Path, b: Path, registry: Any, tolerance: Any, kind: str) -> Callable[[], Any]:
    """Both files committed to a fresh LocalStore next to them; a call compares them as verify does
    (``verify``) or reads both through the store's verifying reader (``store-read``)."""
    from airflow_repro.adapters.local_store import LocalStore
    from airflow_repro.core.runs import StoredRun, StoredTaskManifest

    store = LocalStore(a.parent / f"store-{os.getpid()}")
    store.create_repository("bench", exist_ok=True)
    store.create_branch("bench", "replay", "main", exist_ok=True)
    commits = [
        store.commit("bench", branch, {"t.csv": store.stage_file("bench", path)}, message="bench").id
        for branch, path in (("main", a), ("replay", b))
    ]

    def side(commit: str) -> tuple[StoredRun, StoredTaskManifest]:
        task = StoredTaskManifest(manifest=None, commit_id=commit, manifest_path="")  # type: ignore[arg-type]
        return StoredRun("d", "r", "bench", "main", "main", commit, True, [task]), task

    (run_a, task_a), (run_b, task_b) = side(commits[0]), side(commits[1])
    from airflow_repro.core.verify import store_comparer

    if kind == "store-read":
        from airflow_repro.core.comparison import drain

        def read_both() -> None:
            for commit in commits:
                with store.open_object("bench", commit, "t.csv") as stream:
                    drain(stream)

        return read_both
    compare = store_comparer(store, run_a, run_b, registry)
    return lambda: compare(task_a, task_b, "t.csv", tolerance)


def measure(kind: str, a: Path, b: Path, runs: int) -> dict:
    command = [sys.executable, __file__, "--child", kind, str(a), str(b), "--runs", str(runs)]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="size of each CSV file (64 for a quick run)")
    parser.add_argument("--runs", type=int, default=3, help="best of N for the timings")
    parser.add_argument(
        "--noise", action="store_true", help="also a replay where every other row differs within tolerance"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where to write the files (a temp dir by default)")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "A", "B"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, a, b = args.child
        child(kind, a, b, args.runs)
        return
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-compare-") as directory:
        start = time.perf_counter()
        paths = make_files(Path(directory), args.size_mib * MIB, args.noise)
        generated = time.perf_counter() - start
        size = paths["original"].stat().st_size
        plain_read(paths["original"], paths["one_cell"])  # into the page cache
        rows = [("read both (8 MiB chunks)", measure("read", paths["original"], paths["one_cell"], args.runs))]
        rows.append(("compare_objects, one cell", measure("compare", paths["original"], paths["one_cell"], args.runs)))
        rows.append(
            ("store read both (verified)", measure("store-read", paths["original"], paths["one_cell"], args.runs))
        )
        rows.append(("verify from the store", measure("verify", paths["original"], paths["one_cell"], args.runs)))
        if args.noise:
            plain_read(paths["original"], paths["noise"])
            rows.append(("compare_objects, noise", measure("compare", paths["original"], paths["noise"], args.runs)))
    read_s = rows[0][1]["seconds"]
    print(f"two CSV files of {size / MIB:.0f} MiB each (generated in {generated:.1f} s), best of {args.runs}")
    print(f"{'':28} {'seconds':>9} {'MiB/s':>9} {'x read':>7} {'RSS growth':>11} {'traced peak':>12}")
    for label, row in rows:
        print(
            f"{label:28} {row['seconds']:9.3f} {2 * size / MIB / row['seconds']:9.0f} {row['seconds'] / read_s:7.2f} "
            f"{row['rss_growth_kib'] / 1024:8.1f} MiB {row['traced_peak'] / MIB:8.1f} MiB"
        )
    for label, row in rows[1:]:
        if "verdict" in row:
            print(f"{label}: {row['verdict']}: {row['summary']}")
    by_kind = dict(rows)
    store_read, through_store = by_kind["store read both (verified)"], by_kind["verify from the store"]
    print(f"verify from the store / store read both: {through_store['seconds'] / store_read['seconds']:.2f}x")
    figures = {label: row for label, row in rows}
    print(json.dumps({"size_mib": round(size / MIB), "runs": args.runs, "figures": figures}))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
