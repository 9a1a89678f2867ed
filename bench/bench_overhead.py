"""Benchmark: overhead of the repro layer per task, through Airflow's real executor path.

Run:  .venv/bin/python bench/bench_overhead.py [--rounds 3]

One embedded stack (api-server, scheduler with LocalExecutor, dag-processor; MLflow server) runs
two 10-task DAGs that do the same small real work (read the previous task's output, write 4 MiB):
``bench_plain`` with plain ``@task`` tasks and ``bench_repro`` with ``@repro_task`` tasks (inputs
pinned, outputs + manifest committed, one MLflow run per task). Each task runs in its own process.
After one warm-up run of each, the DAGs alternate for ``--rounds`` rounds. Reported: median wall
time per DAG run (trigger to success, as the client sees it, and start to end as Airflow records
it), the ratio repro/plain (target <= 1.10), the added seconds per task of DAG wall time, and the
added seconds inside each task process (mean task-instance duration as Airflow records it; the
scheduler's polling hides part of it from the DAG wall time).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from airflow_repro.embedded import EmbeddedStack  # noqa: E402

TASKS = 10


def run_once(stack: EmbeddedStack, dag_id: str) -> tuple[float, float, float]:
    started = time.monotonic()
    run_id = stack.trigger(dag_id)
    run = stack.wait_for_run(dag_id, run_id)
    wall = time.monotonic() - started
    if run["state"] != "success":
        states = {ti["task_id"]: ti["state"] for ti in stack.task_instances(dag_id, run_id)}
        raise SystemExit(f"{dag_id} run {run_id} ended {run['state']}: {states}; logs in {stack.home}")
    airflow_s = (datetime.fromisoformat(run["end_date"]) - datetime.fromisoformat(run["start_date"])).total_seconds()
    task_s = statistics.mean(ti["duration"] for ti in stack.task_instances(dag_id, run_id))
    return wall, airflow_s, task_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--home", default=str(REPO_ROOT / ".bench" / "overhead"))
    args = parser.parse_args()
    home = Path(args.home).resolve()
    shutil.rmtree(home, ignore_errors=True)
    (home / "data").mkdir(parents=True)
    stack = EmbeddedStack(
        home=home, dags_folder=REPO_ROOT / "bench" / "dags", extra_env={"REPRO_BENCH_DATA": str(home / "data")}
    )
    results: dict[str, list[tuple[float, float, float]]] = {"bench_plain": [], "bench_repro": []}
    with stack:
        for dag_id in results:
            stack.wait_for_dag(dag_id)
            run_once(stack, dag_id)  # warm-up: first parse, MLflow experiment creation
        for round_no in range(args.rounds):
            for dag_id in results:
                results[dag_id].append(run_once(stack, dag_id))
                wall, airflow_s, task_s = results[dag_id][-1]
                print(
                    f"round {round_no + 1} {dag_id:12s} wall {wall:6.2f} s   airflow {airflow_s:6.2f} s   "
                    f"mean task {task_s:5.2f} s",
                    flush=True,
                )

    def median(dag_id: str, column: int) -> float:
        return statistics.median(row[column] for row in results[dag_id])

    plain_wall, repro_wall = median("bench_plain", 0), median("bench_repro", 0)
    plain_af, repro_af = median("bench_plain", 1), median("bench_repro", 1)
    plain_task, repro_task = median("bench_plain", 2), median("bench_repro", 2)
    summary = {
        "tasks": TASKS,
        "rounds": args.rounds,
        "plain_wall_s": round(plain_wall, 2),
        "repro_wall_s": round(repro_wall, 2),
        "ratio_wall": round(repro_wall / plain_wall, 3),
        "added_s_per_task_wall": round((repro_wall - plain_wall) / TASKS, 3),
        "plain_airflow_s": round(plain_af, 2),
        "repro_airflow_s": round(repro_af, 2),
        "ratio_airflow": round(repro_af / plain_af, 3),
        "added_s_per_task_airflow": round((repro_af - plain_af) / TASKS, 3),
        "plain_mean_task_s": round(plain_task, 3),
        "repro_mean_task_s": round(repro_task, 3),
        "added_s_per_task_in_process": round(repro_task - plain_task, 3),
    }
    print(f"\nmedian of {args.rounds} rounds, {TASKS} tasks each, one process per task (LocalExecutor):")
    print(f"  plain : {plain_wall:6.2f} s wall ({plain_af:6.2f} s by Airflow's clock)")
    print(f"  repro : {repro_wall:6.2f} s wall ({repro_af:6.2f} s by Airflow's clock)")
    print(
        f"  ratio : {summary['ratio_wall']:.3f} (target <= 1.10); added per task "
        f"{summary['added_s_per_task_wall']:+.3f} s of DAG wall time"
    )
    print(
        f"  task  : {plain_task:.3f} s plain vs {repro_task:.3f} s repro per task instance (Airflow's duration): "
        f"{summary['added_s_per_task_in_process']:+.3f} s inside each task process"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
