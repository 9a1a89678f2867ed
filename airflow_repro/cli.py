"""The ``airflow-repro`` command line.

Exit codes scripts can rely on: 0 success (for ``verify`` and ``diff``: identical; for ``fsck``:
no damage), 1 differs (``verify``, ``diff``, or a replay run that failed) or, for ``fsck``, damage
found, 2 a usage or input error (the message says what to fix), 3 an infrastructure fault (worth
retrying). No command prints a traceback (set ``AIRFLOW_REPRO_DEBUG=1`` to see one).

Every command reads its settings the same way: Airflow's ``[repro]`` config (``airflow.cfg``, or
``AIRFLOW__REPRO__*`` variables), as the workers and the API server read it; ``--home``, where a
command has it, overrides ``[repro] home`` (and what is computed from it).
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import traceback
from pathlib import Path
from typing import Any

import click

from airflow_repro.cli_params import Duration, Seconds
from airflow_repro.errors import ReproError, ReproUserError

EXIT_IDENTICAL = 0
EXIT_DIFFERS = 1
EXIT_DAMAGE_FOUND = 1
EXIT_USER_ERROR = 2
EXIT_INFRA_ERROR = 3
EXIT_INTERRUPTED = 130
DEBUG_ENV = "AIRFLOW_REPRO_DEBUG"


def _settings(home: str | None = None) -> Any:
    """The settings every command reads: Airflow's ``[repro]`` config (``airflow.cfg``,
    ``AIRFLOW__REPRO__*``), as the workers and the API server read it, with ``--home`` over it."""
    from airflow_repro.config import ReproSettings

    return ReproSettings.from_airflow_conf({"home": home})


def _check_home(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--home`` as an absolute path, or a usage error (not a traceback) for one no OS accepts."""
    if value is None:
        return None
    if not value.strip() or "\x00" in value:
        raise click.BadParameter(f"{value!r} is not a folder path", ctx, param)
    try:
        return str(Path(value).expanduser().absolute())
    except (RuntimeError, OSError, ValueError) as exc:  # ~unknown-user, unreadable working folder
        raise click.BadParameter(f"{value!r}: {exc}", ctx, param) from exc


_home_option = click.option(
    "--home", envvar="AIRFLOW__REPRO__HOME", callback=_check_home, help="airflow-repro home ([repro] home)."
)


def _read_store(home: str | None) -> Any:
    """The configured store, for commands that only read: a missing one is not created."""
    from airflow_repro.backends import Backends

    return Backends.from_settings(_settings(home), create=False).store


class _ReproGroup(click.Group):
    """Turns errors into one clear line and a stable exit code: never a traceback, never exit 1
    (which means "differs") for an error."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise  # click prints these itself (usage errors exit 2)
        except ReproUserError as exc:
            _fail(exc, f"error: {exc}", EXIT_USER_ERROR)
        except ReproError as exc:
            _fail(exc, f"error ({type(exc).__name__}, retry may help): {exc}", EXIT_INFRA_ERROR)
        except KeyboardInterrupt as exc:
            _fail(exc, "interrupted", EXIT_INTERRUPTED)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            _fail(exc, f"error (OSError, retry may help): {exc.strerror or exc}{where}", EXIT_INFRA_ERROR)
        except Exception as exc:  # noqa: BLE001 - the last resort: one line and exit 3, never a traceback
            _fail(
                exc,
                f"error (unexpected {type(exc).__name__}: {exc}); set {DEBUG_ENV}=1 for details and please report it",
                EXIT_INFRA_ERROR,
            )


def _fail(exc: BaseException, message: str, code: int) -> None:
    if os.environ.get(DEBUG_ENV):
        traceback.print_exception(exc, file=sys.stderr)
    click.echo(message, err=True)
    sys.exit(code)


@click.group(cls=_ReproGroup)
@click.version_option(package_name="airflow-repro")
def main() -> None:
    """Reproducible Airflow runs: inspect what was recorded."""


@main.command()
@click.argument("dag_id")
@click.argument("run_id")
@_home_option
@click.option("--json", "as_json", is_flag=True, help="Print the manifests as JSON.")
def show(dag_id: str, run_id: str, home: str | None, as_json: bool) -> None:
    """Show the recorded manifests of a DAG run (as recorded: 'fsck' or 'verify --deep' re-read the data)."""
    from airflow_repro.core.runs import load_run, run_document

    store = _read_store(home)
    run = load_run(store, dag_id, run_id)
    if as_json:
        click.echo(run_document(store, run).model_dump_json(indent=2))
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


def _read_secrets(sources: tuple[str, ...]) -> dict[str, str]:
    """``KEY=env:VAR`` / ``KEY=variable:NAME``: where each secret lives now (values never on the
    command line, where other users of the machine could read them)."""
    values: dict[str, str] = {}
    for source in sources:
        key, _, where = source.partition("=")
        kind, _, name = where.partition(":")
        if not key or not name or kind not in ("env", "variable"):
            # The text is not repeated: it may be the very secret, typed where it should not be.
            shown = key if "=" in source and key else "?"
            raise ReproUserError(f"--secret {shown}=...: give KEY=env:ENV_VAR or KEY=variable:AIRFLOW_VARIABLE")
        if kind == "env":
            if name not in os.environ:
                raise ReproUserError(f"--secret {key}: the environment variable {name!r} is not set")
            values[key] = os.environ[name]
        else:
            values[key] = _airflow_variable(key, name)
    return values


def _airflow_variable(key: str, name: str) -> str:
    from airflow.models import Variable

    try:
        return str(Variable.get(name))
    except KeyError:
        raise ReproUserError(f"--secret {key}: Airflow has no Variable {name!r}") from None


def _backends() -> Any:
    """Settings, store and tracker for the commands that work with Airflow (``replay``, ``verify``)."""
    from airflow_repro.backends import Backends

    return Backends.from_settings(_settings())


@main.command()
@click.argument("dag_id")
@click.argument("run_id")
@click.option(
    "--mode",
    type=click.Choice(["pinned", "latest-code"]),
    default="pinned",
    show_default=True,
    help="pinned: restore the recorded code and environment where they drifted, refuse what cannot be "
    "restored. latest-code: current code and environment, pinned data/params/seed.",
)
@click.option(
    "--dry-run", is_flag=True, help="Plan only: print the drift report (and what is restored); trigger nothing."
)
@click.option("--wait", is_flag=True, help="Wait for the replay run to finish.")
@click.option("--verify", "then_verify", is_flag=True, help="Wait, then verify the replay against the original.")
@click.option(
    "--timeout",
    type=Seconds(),
    default=3600,
    show_default=True,
    help="Seconds to wait at most (above 0, at most a week).",
)
@click.option(
    "--secret",
    "secret_sources",
    multiple=True,
    metavar="KEY=env:VAR|variable:NAME",
    help="Value of a redacted DAG-run conf entry (dotted KEY), read from an environment variable "
    "or an Airflow Variable; never from the command line. Repeat for each.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan (and report) as JSON.")
def replay(
    dag_id: str,
    run_id: str,
    mode: str,
    dry_run: bool,
    wait: bool,
    then_verify: bool,
    timeout: float,
    secret_sources: tuple[str, ...],
    as_json: bool,
) -> None:
    """Replay a recorded DAG run with its exact pins (a new run of the same DAG).

    Exit 0: triggered (with --verify: identical); 1: differs; 2: refused or a user error."""
    from airflow_repro.airflow import replay as service

    secrets = _read_secrets(secret_sources)
    backends = _backends()
    plan = service.plan(backends, dag_id, run_id, mode, secrets=secrets)  # type: ignore[arg-type]
    _print_drift(plan)
    if dry_run:
        if as_json:
            click.echo(plan.model_dump_json(indent=2))
        if plan.blocking_drift:
            click.echo(plan.refusal_message(), err=True)
            sys.exit(EXIT_USER_ERROR)
        click.echo(f"replay of {run_id} (mode {mode}) can run: {_restore_summary(plan)}", err=as_json)
        return
    new_run = service.trigger(backends, plan, triggered_by="CLI", user=_user(), secrets=secrets)
    click.echo(f"triggered replay {new_run} of {run_id} (mode {mode})", err=as_json)
    if not (wait or then_verify):
        if as_json:
            click.echo(plan.model_dump_json(indent=2))
        return
    state = _wait_with_progress(service, dag_id, new_run, timeout)
    if state != "success":
        click.echo(f"replay {new_run} ended {state}; see its task logs in Airflow", err=True)
        sys.exit(EXIT_DIFFERS)
    if then_verify:
        report = service.verify(backends, dag_id, new_run)
        _print_report(report, as_json)
        sys.exit(EXIT_IDENTICAL if report.verdict == "identical" else EXIT_DIFFERS)


@main.command()
@click.argument("dag_id")
@click.argument("replay_run_id")
@click.option("--abs-tol", type=float, default=0.0, show_default=True, help="Absolute tolerance for metrics.")
@click.option("--rel-tol", type=float, default=0.0, show_default=True, help="Relative tolerance for metrics.")
@click.option("--stored", is_flag=True, help="Print the report stored by an earlier verification; compute nothing.")
@click.option(
    "--deep",
    is_flag=True,
    help="Also re-read both runs' outputs from the store and re-hash them: a damaged object makes the verdict differ.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(
    dag_id: str, replay_run_id: str, abs_tol: float, rel_tol: float, stored: bool, deep: bool, as_json: bool
) -> None:
    """Prove whether a replay reproduced the original, output by output. Exit 0 identical, 1 differs."""
    from airflow_repro.airflow import replay as service
    from airflow_repro.core.verify import Tolerance

    try:
        tolerance = Tolerance(abs=abs_tol, rel=rel_tol)
    except ValueError as exc:
        raise click.BadParameter(f"tolerances must be numbers >= 0: {exc}") from exc
    if stored:
        report = service.stored_report(_backends(), dag_id, replay_run_id, deep=deep)
    else:
        report = service.verify(_backends(), dag_id, replay_run_id, tolerance, deep=deep)
    _print_report(report, as_json)
    sys.exit(EXIT_IDENTICAL if report.verdict == "identical" else EXIT_DIFFERS)


@main.command()
@click.argument("dag_id")
@click.argument("run_a")
@click.argument("run_b")
@_home_option
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
def diff(dag_id: str, run_a: str, run_b: str, home: str | None, as_json: bool) -> None:
    """What differs between two recorded runs: pins and outputs. Exit 0 identical, 1 differs."""
    from airflow_repro.core.runs import load_run
    from airflow_repro.core.verify import diff_runs

    store = _read_store(home)
    result = diff_runs(load_run(store, dag_id, run_a), load_run(store, dag_id, run_b))
    if as_json:
        click.echo(result.model_dump_json(indent=2))
    else:
        _print_diff(result)
    sys.exit(EXIT_IDENTICAL if result.identical else EXIT_DIFFERS)


def _user() -> str | None:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def _wait_with_progress(service: Any, dag_id: str, run_id: str, timeout: float) -> str:
    from rich.console import Console

    console = Console(stderr=True)
    with console.status(f"waiting for {run_id} ...") as status:

        def show(state: str | None) -> None:
            status.update(f"waiting for {run_id}: {state or 'queued'}")

        return str(service.wait(dag_id, run_id, timeout=timeout, on_poll=show))


def _print_drift(plan: Any) -> None:
    """Each drift item on stderr: what changed, whether it is restored, accepted or refused, and
    each distinct code diff once (every task of a DAG file shares it)."""
    diffs_shown: set[str] = set()
    for drift in plan.drift:
        if drift.blocks(plan.mode):
            level = "refused"
        elif plan.mode == "pinned" and drift.restorable:
            level = "restored"
        else:
            level = "accepted"
        click.echo(f"drift ({level}): [{drift.kind}] {drift.task_id}: {drift.detail}", err=True)
        if drift.restore_note and level != "accepted":
            click.echo(f"    {drift.restore_note}", err=True)
        for change in (drift.changes or [])[:50]:
            click.echo(f"    {change}", err=True)
        if drift.diff and drift.diff not in diffs_shown:
            diffs_shown.add(drift.diff)
            click.echo(textwrap.indent(drift.diff.rstrip("\n"), "    "), err=True)


def _restore_summary(plan: Any) -> str:
    restored = sorted({d.task_id for d in plan.drift if plan.mode == "pinned" and d.restorable})
    if restored:
        return f"code or environment restored for {', '.join(restored)}"
    return "no drift" if not plan.drift else "drift accepted"


def _print_report(report: Any, as_json: bool) -> None:
    if as_json:
        click.echo(report.model_dump_json(indent=2))
        return
    from rich.console import Console
    from rich.markup import escape

    console = Console(width=200)
    console.print(
        f"verify {escape(report.replay_run_id)} against {escape(report.original_run_id)}: "
        f"[bold]{report.verdict.upper()}[/]  {report.summary()}"
    )
    for task in report.tasks:
        console.print(f"  {escape(task.task_id)}: {task.status} ({task.objects_compared} objects compared)")
        for obj in task.objects:
            before = f"{obj.original.content_hash} {obj.original.size} B" if obj.original else "-"
            after = f"{obj.replay.content_hash} {obj.replay.size} B" if obj.replay else "-"
            console.print(f"    {obj.change}: {escape(obj.path)}\n      original {before}\n      replay   {after}")
            if obj.detail:
                console.print(f"      {escape(obj.detail)}")
        for metric in task.metrics:
            console.print(f"    metric {escape(metric.name)}: {metric.original} -> {metric.replay}")


def _print_diff(result: Any) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(width=200)
    if result.identical:
        console.print(f"{escape(result.run_a)} and {escape(result.run_b)}: same pins, same outputs")
        return
    for task_id in result.only_in_a:
        console.print(f"{escape(task_id)}: only in {escape(result.run_a)}")
    for task_id in result.only_in_b:
        console.print(f"{escape(task_id)}: only in {escape(result.run_b)}")
    for field in result.fields:
        console.print(
            f"{escape(field.task_id)}: {field.field}\n  a: {escape(str(field.a))}\n  b: {escape(str(field.b))}"
        )
    for task_id, objects in result.objects.items():
        for obj in objects:
            console.print(f"{escape(task_id)}: output {escape(obj.path)} {obj.change}")


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
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, body in schemas.items():
            (folder / f"{name}.schema.json").write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
            click.echo(folder / f"{name}.schema.json")
    except OSError as exc:
        raise ReproUserError(
            f"cannot write the schemas to {out}: {exc.strerror or exc}"
            f"{f' ({exc.filename})' if exc.filename else ''}; choose a folder you can write"
        ) from exc


@main.command()
@_home_option
@click.option(
    "--repository",
    "repositories",
    multiple=True,
    metavar="NAME",
    help="Check only this repository (repeat for more); default: all of them.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def fsck(home: str | None, repositories: tuple[str, ...], as_json: bool) -> None:
    """Check the store: re-hash every object a ref reaches, parse refs and manifests. Reads only.
    Exit 0 no damage, 1 damage found."""
    from airflow_repro.core.integrity import check_store

    report = check_store(_read_store(home), repositories or None)
    if as_json:
        click.echo(json.dumps(_as_dict(report, clean=report.clean), indent=2, sort_keys=True))
    else:
        _print_fsck(report)
    sys.exit(EXIT_IDENTICAL if report.clean else EXIT_DAMAGE_FOUND)


def _as_dict(value: Any, **extra: Any) -> dict[str, Any]:
    import dataclasses

    return {**dataclasses.asdict(value), **extra}


def _print_fsck(report: Any) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(width=200, highlight=False)
    for problem in report.problems:
        where = [f"repository {problem.repository}"] + [
            f"{label} {value}"
            for label, value in (("ref", problem.ref), ("commit", problem.commit_id), ("path", problem.path))
            if value
        ]
        console.print(f"[bold red]damaged {problem.kind}[/]: {escape(', '.join(where))}\n  {escape(problem.detail)}")
    state = "no damage found" if report.clean else f"[bold red]{len(report.problems)} problem(s) found[/]"
    console.print(
        f"checked {len(report.repositories)} repositories, {report.refs} refs, {report.commits} commits, "
        f"{report.objects} objects ({report.bytes} bytes), {report.manifests} manifests: {state}"
    )


@main.command()
@_home_option
@click.option(
    "--grace",
    type=Duration(),
    default="1h",
    show_default=True,
    help="Keep unreferenced data changed more recently than this (90s, 30m, 1h, 2d): what running "
    "tasks staged but have not committed yet. 0 also removes that.",
)
@click.option("--delete", is_flag=True, help="Delete what is found; without it, only report (a dry run).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def gc(home: str | None, grace: float, delete: bool, as_json: bool) -> None:
    """Find, and with --delete remove, what no ref reaches: objects, temp files, orphan commits."""
    from airflow_repro.core.ports import CollectsGarbage

    store = _read_store(home)
    if not isinstance(store, CollectsGarbage):
        raise ReproUserError(
            f"{type(store).__name__} collects its garbage itself: configure lakeFS garbage "
            "collection rules on the server (and keep the commits that replays need)"
        )
    report = store.collect_garbage(grace_s=grace, delete=delete)
    if as_json:
        click.echo(json.dumps(_as_dict(report, freed_bytes=report.freed_bytes), indent=2, sort_keys=True))
        return
    verb = "freed" if report.deleted else "would free (dry run; --delete to act)"
    click.echo(
        f"{verb} {report.freed_bytes} bytes: {report.objects} unreferenced objects ({report.object_bytes} B), "
        f"{report.temp_entries} temp files ({report.temp_bytes} B), {report.metadata_files} orphan commit/tree "
        f"files ({report.metadata_bytes} B); kept {report.recent_unreferenced_objects} unreferenced objects "
        f"younger than {grace:g}s; referenced: {report.referenced_objects} objects ({report.referenced_bytes} B)"
    )


def _register_lineage_commands() -> None:
    from airflow_repro.lineage_cli import lineage

    main.add_command(lineage)


_register_lineage_commands()

if __name__ == "__main__":
    main()
