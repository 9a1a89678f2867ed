"""The demo behind ``make demo``: a real pipeline recorded, replayed and verified through a real,
local Airflow.

From nothing, it creates one folder (default ``.repro-demo``) holding Airflow's home and SQLite
metadata DB, the embedded data store and an MLflow SQLite DB; starts Airflow (api-server,
scheduler with LocalExecutor, dag-processor) and an MLflow server; runs ``example_ml_pipeline``;
prints what was recorded per task; replays the run with its exact pins using the
``airflow-repro replay --verify`` command and prints the verdict; stops the services and leaves
the folder for inspection.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.core.runs import load_run
from airflow_repro.embedded import EmbeddedStack

REPO_ROOT = Path(__file__).resolve().parents[1]
DAG_ID = "example_ml_pipeline"
console = Console(width=160)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=str(REPO_ROOT / ".repro-demo"), help="folder for everything (recreated)")
    home = Path(parser.parse_args().home).resolve()
    if home.exists():
        console.print(f"[dim]removing the previous demo folder {home}[/]")
        shutil.rmtree(home)
    stack = EmbeddedStack(home=home, dags_folder=REPO_ROOT / "dags")

    started = time.monotonic()
    console.rule("airflow-repro demo: record")
    console.print(f"starting Airflow 3 (api-server, scheduler, dag-processor) and MLflow in {home} ...")
    with stack:
        console.print(
            f"  Airflow API {stack.api_url}   MLflow {stack.mlflow_url}   "
            f"[dim](ready after {time.monotonic() - started:.0f} s)[/]"
        )
        stack.wait_for_dag(DAG_ID)
        run_id = stack.trigger(DAG_ID)
        console.print(f"triggered {DAG_ID} run [bold]{run_id}[/]; waiting for it to finish ...")
        t0 = time.monotonic()
        run = stack.wait_for_run(DAG_ID, run_id)
        console.print(f"run finished: [bold]{run['state']}[/] in {time.monotonic() - t0:.0f} s")
        if run["state"] != "success":
            for ti in stack.task_instances(DAG_ID, run_id):
                console.print(f"  {ti['task_id']}: {ti['state']}")
            console.print(f"[red]the run failed; task logs are under {stack.airflow_home / 'logs'}[/]")
            return 1
        recorded = load_run(LocalStore(stack.repro_home / "store"), DAG_ID, run_id)
        print_record(recorded)

        console.rule("airflow-repro demo: replay and verify")
        command = [str(Path(sys.executable).parent / "airflow-repro"), "replay", DAG_ID, run_id, "--verify"]
        console.print("$ airflow-repro replay " + f"{DAG_ID} '{run_id}' --verify")
        verdict = subprocess.run(command, env=stack.env(), check=False)
        if verdict.returncode not in (0, 1):
            console.print(f"[red]replay failed (exit {verdict.returncode}); logs under {stack.home / 'logs'}[/]")
            return verdict.returncode
    replays = replay_ids(stack, run_id)
    print_next_steps(stack, run_id, replays[-1] if replays else None)
    console.print(f"[dim]demo finished in {time.monotonic() - started:.0f} s[/]")
    return verdict.returncode


def replay_ids(stack: EmbeddedStack, run_id: str) -> list[str]:
    from airflow_repro.core.replay import list_replays

    store = LocalStore(stack.repro_home / "store")
    return [p.replay_run_id for p in list_replays(store, "repro", DAG_ID, run_id)]


def print_record(recorded) -> None:
    console.rule(f"recorded: {recorded.dag_id} / {recorded.run_id}")
    for task in recorded.tasks:
        m = task.manifest
        table = Table.grid(padding=(0, 2))
        table.add_row("  commit id", task.commit_id)
        table.add_row("  MLflow run id", m.tracking.mlflow_run_id or "-")
        table.add_row("  environment pin", f"{m.environment.digest} ({m.environment.kind})")
        table.add_row("  manifest digest", m.digest)
        table.add_row("  outputs", ", ".join(o.path for o in m.outputs))
        console.print(f"[bold]{m.identity.task_id}[/] (try {m.identity.try_number})")
        console.print(table)
    state = f"tag [bold]{recorded.ref}[/]" if recorded.closed else f"branch {recorded.branch} (not closed)"
    console.print(f"repository [bold]{recorded.repository}[/], run closed as {state} -> {recorded.head_commit}")


def print_next_steps(stack: EmbeddedStack, run_id: str, replay_id: str | None) -> None:
    repro_home = stack.repro_home
    venv_bin = Path(sys.executable).parent
    env = f"AIRFLOW_HOME={stack.airflow_home} AIRFLOW__REPRO__HOME={repro_home}"
    console.rule("look further")
    console.print(
        f"""\
  manifests as a table : AIRFLOW__REPRO__HOME={repro_home} {venv_bin}/airflow-repro show {DAG_ID} '{run_id}'
  ... as JSON          : AIRFLOW__REPRO__HOME={repro_home} {venv_bin}/airflow-repro show {DAG_ID} '{run_id}' --json
  original vs replay   : AIRFLOW__REPRO__HOME={repro_home} {venv_bin}/airflow-repro diff {DAG_ID} '{run_id}' '{replay_id}'
  the stored verdict   : {env} {venv_bin}/airflow-repro verify {DAG_ID} '{replay_id}' --stored""",
        soft_wrap=True,
    )
    console.print(
        f"""\
  MLflow UI            : {venv_bin}/mlflow server --backend-store-uri sqlite:///{repro_home}/mlflow.db \\
                           --artifacts-destination {repro_home}/mlartifacts --port 5000   (then open http://127.0.0.1:5000)
  Airflow task logs    : {stack.airflow_home}/logs
  data store on disk   : {repro_home}/store
  OpenLineage events   : {stack.openlineage_events}
  who wrote the model  : {venv_bin}/airflow-repro lineage produced-by {stack.openlineage_events} repro/models/model.json""",
        soft_wrap=True,
    )


if __name__ == "__main__":
    sys.exit(main())
