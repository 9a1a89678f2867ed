"""The ``airflow-repro`` command line.

Exit codes scripts can rely on: 0 success, 2 a usage or input error (the message says what to
fix), 3 an infrastructure fault (worth retrying).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from airflow_repro.errors import ReproError, ReproUserError

EXIT_USER_ERROR = 2
EXIT_INFRA_ERROR = 3


def _settings(home: str | None) -> Any:
    from airflow_repro.config import ReproSettings

    environ = dict(__import__("os").environ)
    if home:
        environ["AIRFLOW__REPRO__HOME"] = str(Path(home).resolve())
    return ReproSettings.from_env(environ)


class _ReproGroup(click.Group):
    """Turns project errors into one clear line and a stable exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ReproUserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USER_ERROR)
        except ReproError as exc:
            click.echo(f"error ({type(exc).__name__}, retry may help): {exc}", err=True)
            sys.exit(EXIT_INFRA_ERROR)


@click.group(cls=_ReproGroup)
@click.version_option(package_name="airflow-repro")
def main() -> None:
    """Reproducible Airflow runs: inspect what was recorded."""


@main.command()
@click.argument("dag_id")
@click.argument("run_id")
@click.option("--home", envvar="AIRFLOW__REPRO__HOME", help="airflow-repro home ([repro] home).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifests as JSON.")
def show(dag_id: str, run_id: str, home: str | None, as_json: bool) -> None:
    """Show the recorded manifests of a DAG run."""
    from airflow_repro.backends import build_store
    from airflow_repro.core.runs import load_run

    run = load_run(build_store(_settings(home)), dag_id, run_id)
    if as_json:
        click.echo(json.dumps({
            "dag_id": run.dag_id, "run_id": run.run_id, "repository": run.repository,
            "branch": run.branch, "ref": run.ref, "head_commit": run.head_commit, "closed": run.closed,
            "tasks": [
                {"commit_id": t.commit_id, "manifest_path": t.manifest_path, "manifest_digest": t.manifest.digest,
                 "manifest": t.manifest.model_dump(mode="json")}
                for t in run.tasks
            ],
        }, indent=2, sort_keys=True))
        return
    _print_run_table(run)


def _print_run_table(run: Any) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    status = f"closed as tag {run.ref}" if run.closed else f"open on branch {run.branch}"
    table = Table(title=escape(f"{run.dag_id} / {run.run_id}  [{run.repository}, {status}]"))
    for column in ("task", "try", "commit", "mlflow run", "environment", "manifest digest", "outputs"):
        table.add_column(column, overflow="fold")
    for task in run.tasks:
        m = task.manifest
        table.add_row(
            escape(m.identity.task_id + (f"[{m.identity.map_index}]" if m.identity.map_index >= 0 else "")),
            str(m.identity.try_number),
            task.commit_id[:12],
            m.tracking.mlflow_run_id or "-",
            f"{m.environment.kind} {m.environment.digest[7:19]}",
            m.digest[7:19],
            ", ".join(o.path for o in m.outputs) or "-",
        )
    Console(width=200).print(table)


@main.command()
@click.option("--out", type=click.Path(file_okay=False), help="Write the schemas into this folder.")
def schema(out: str | None) -> None:
    """Print (or write) the JSON Schemas of the task and DAG-run manifests."""
    from airflow_repro.core.manifest import json_schemas

    schemas = json_schemas()
    if out is None:
        click.echo(json.dumps(schemas, indent=2, sort_keys=True))
        return
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in schemas.items():
        (folder / f"{name}.schema.json").write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
        click.echo(folder / f"{name}.schema.json")
if __name__ == "__main__":
    main()
