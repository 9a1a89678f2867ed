"""Benchmark subject: the same 10 chained tasks as bench_plain, written as recorded repro tasks."""

from __future__ import annotations

from airflow.sdk import dag
from bench_plain import TASKS, work  # the same work, byte for byte

from airflow_repro import Input, repro_task, runtime


@dag(dag_id="bench_repro", schedule=None, catchup=False)
def bench_repro():
    def make(step: int):
        inputs = {"previous": Input(f"bench/step_{step - 1}.bin")} if step else {}

        @repro_task(task_id=f"step_{step}", inputs=inputs, outputs=[f"bench/step_{step}.bin"], seed=step)
        def step_task():
            ctx = runtime.current()
            data = ctx.input_path("previous").read_bytes() if step else b"start"
            ctx.output_path(f"bench/step_{step}.bin").write_bytes(work(data, step))

        return step_task()

    previous = None
    for step in range(TASKS):
        current = make(step)
        if previous is not None:
            previous >> current
        previous = current


bench_repro()
