"""Benchmark baseline: 10 chained plain Airflow tasks, each reading its input and writing a few MB."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from airflow.sdk import dag, task

TASKS = 10
SIZE = 4 * 1024 * 1024


def work(data: bytes, step: int) -> bytes:
    """The same small real work in both DAGs: derive SIZE new bytes from the input."""
    seed = hashlib.sha256(data + step.to_bytes(4, "little")).digest()
    block = hashlib.sha512(seed).digest() * (SIZE // 64)
    return block[:SIZE]


@dag(dag_id="bench_plain", schedule=None, catchup=False)
def bench_plain():
    def make(step: int):
        @task(task_id=f"step_{step}")
        def step_task(run_id=None):
            folder = Path(os.environ["REPRO_BENCH_DATA"]) / run_id.replace(":", "_").replace("+", "_")
            folder.mkdir(parents=True, exist_ok=True)
            data = (folder / f"step_{step - 1}.bin").read_bytes() if step else b"start"
            (folder / f"step_{step}.bin").write_bytes(work(data, step))

        return step_task()

    previous = None
    for step in range(TASKS):
        current = make(step)
        if previous is not None:
            previous >> current
        previous = current


bench_plain()
