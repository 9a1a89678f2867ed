"""The ``airflow-repro`` command line.

Exit codes scripts can rely on: 0 success (for ``verify``: identical, or equivalent unless
``--strict``; for ``diff``: identical; for ``fsck``: no damage), 1 differs (``verify``, ``diff``, or a replay run that failed) or, for ``fsck``, damage
found, 2 a usage or input error (the message says what to fix), 3 an infrastructure fault (worth
retrying). No command prints a traceback (set ``AIRFLOW_REPRO_DEBUG=1`` to see one).

Every command reads its settings the same way: Airflow's ``[repro]`` config (``airflow.cfg``, or
``AIRFLOW__REPRO__*`` variables), as the workers and the API server read it; ``--home``, where a
command has it, overrides ``[repro] home`` (and what is computed from it). Where ``AIRFLOW_HOME``
is not set, the settings of an ``airflow-repro standalone`` stack are read first (the rule is in
:func:`airflow_repro.config.find_stack_settings`); a variable that is set is never overridden.

Stdout carries a command's result alone (with ``--json``: one JSON document). While a command
runs, whatever else would reach stdout (Airflow's and OpenLineage's log lines, prints of DAG files,
child processes) goes to stderr; see :func:`_stdout_for_results_only`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import textwrap
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

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


# -- output: results on stdout, everything else on stderr -----------------------------------------
#: While a command runs: the real stdout, where its result goes (``None``: no command running).
_results: TextIO | None = None


def _out() -> TextIO:
    """Where a command prints its result (a table, a report, JSON): stdout, and nothing else there."""
    return _results if _results is not None else sys.stdout


def _echo(message: str, *, err: bool = False) -> None:
    click.echo(message, file=sys.stderr if err else _out())


def _console(**options: Any) -> Any:
    """A rich console printing to the result stream (its width detected from it unless given)."""
    from rich.console import Console

    return Console(file=_out(), **options)


def _fd_of(stream: Any) -> int | None:
    try:
        return int(stream.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None  # not a file (click's test runner, pytest's capture): Python-level only


@contextlib.contextmanager
def _stdout_for_results_only() -> Iterator[None]:
    """Run a command with stdout kept for its result: ``sys.stdout`` and, in a real process, file
    descriptor 1 point to stderr meanwhile, so log handlers (Airflow configures its logging on the
    stdout of the moment it is imported), structlog, ``print``, C code and child processes all
    write to stderr. The result goes to the real stdout through :func:`_out`."""
    global _results
    original, previous = sys.stdout, _results
    out_fd, err_fd = _fd_of(original), _fd_of(sys.stderr)
    saved_fd: int | None = None
    results: TextIO = original
    if out_fd is not None and err_fd is not None:
        original.flush()
        saved_fd = os.dup(out_fd)
        results = os.fdopen(
            saved_fd,
            "w",
            encoding=getattr(original, "encoding", None) or "utf-8",
            errors=getattr(original, "errors", None) or "strict",
            closefd=False,
        )
        os.dup2(err_fd, out_fd)
    _results, sys.stdout = results, sys.stderr
    try:
        yield
    finally:
        sys.stdout, _results = original, previous
        with contextlib.suppress(OSError, ValueError):
            results.flush()
            original.flush()  # what handlers holding it wrote meanwhile: to stderr still
        if saved_fd is not None and out_fd is not None:
            os.dup2(saved_fd, out_fd)
            results.close()
            os.close(saved_fd)


@contextlib.contextmanager
def _stack_settings(command: str) -> Iterator[None]:
    """The variables of a standalone stack's settings file, set for this command where unset
    (not for ``standalone`` itself, which starts a stack of its own)."""
    from airflow_repro.config import apply_stack_settings

    before = set(os.environ)
    if command != "standalone":
        apply_stack_settings()
    added = {name: os.environ[name] for name in set(os.environ) - before}
    try:
        yield
    finally:
        for name, value in added.items():  # an in-process caller gets its environment back
            if os.environ.get(name) == value:
                del os.environ[name]


class _ReproCommand(click.Command):
    """A command whose result alone reaches stdout, run with the stack settings that apply."""

    def invoke(self, ctx: click.Context) -> Any:
        with _stack_settings(self.name or ""), _stdout_for_results_only():
            return super().invoke(ctx)


class _ReproGroup(click.Group):
    """Turns errors into one clear line and a stable exit code: never a traceback, never exit 1
    (which means "differs") for an error."""

    command_class = _ReproCommand

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
    document = run_document(store, run)
    if as_json:
        _echo(document.model_dump_json(indent=2))
        return
    _print_run_table(run)
    unrecorded = document.dag_run_manifest.unrecorded_tasks if document.dag_run_manifest else None
    if unrecorded:
        names = ", ".join(
            f"{t.task_id}{f'[{t.map_index}]' if t.map_index >= 0 else ''} ({t.state})" for t in unrecorded
        )
        click.echo(f"not recorded (a replay re-runs them with whatever they read then): {names}")


#: The columns of ``show``'s table, and those that never fold (short, fixed-width cells).
RUN_TABLE_COLUMNS = (
    "task",
    "try",
    "commit",
    "inputs",
    "seed",
    "replay",
    "mlflow run",
    "environment",
    "manifest",
    "outputs",
)
_FIXED_COLUMNS = ("try", "commit", "seed", "manifest")
#: A terminal at least this wide gets the table even where long cells must fold; a narrower one gets
#: it where it fits unfolded, else one block of lines per task.
_TABLE_MIN_WIDTH = 160


def _print_run_table(run: Any) -> None:
    """The run's tasks as a table as wide as the terminal (rich detects it; ``COLUMNS`` where it
    cannot): long cells fold; on a terminal too narrow for it, one block of lines per task."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    status = f"closed as tag {run.ref}" if run.closed else f"open on branch {run.branch}"
    title = escape(f"{run.dag_id} / {run.run_id}  [{run.repository}, {status}]")
    rows = [[escape(cell) for cell in _run_table_row(task)] for task in run.tasks]
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1))
    for column in RUN_TABLE_COLUMNS:
        table.add_column(column, overflow="fold", no_wrap=column in _FIXED_COLUMNS)
    for row in rows:
        table.add_row(*row)
    unfolded = console.measure(table, options=console.options.update_width(10_000)).maximum
    if console.width >= _TABLE_MIN_WIDTH or unfolded <= console.width:
        console.print(table)
        return
    console.print(title, overflow="fold")
    for row in rows:
        block = Table.grid(padding=(0, 2))
        block.add_column(no_wrap=True)
        block.add_column(overflow="fold")
        for label, cell in zip(RUN_TABLE_COLUMNS[1:], row[1:], strict=True):
            block.add_row(f"  {label}", cell)
        console.print(f"[bold]{row[0]}[/]")
        console.print(block)


def _run_table_row(task: Any) -> tuple[str, ...]:
    m = task.manifest
    return (
        m.identity.task_id + (f"[{m.identity.map_index}]" if m.identity.map_index >= 0 else ""),
        str(m.identity.try_number),
        task.commit_id[:12],
        "\n".join(f"{i.name}@{i.commit_id[:12]}" for i in m.inputs) or "-",
        "-" if m.parameters.seed is None else str(m.parameters.seed),
        _replay_cell(m.replay),
        m.tracking.mlflow_run_id or "-",
        f"{m.environment.kind} {m.environment.digest[7:19]}",
        m.digest[7:19],
        "\n".join(o.path for o in m.outputs) or "-",
    )


def _replay_cell(replay: Any) -> str:
    """``of <run> / <mode>``, and what the replayed task ran where the manifest says (restored or current)."""
    if replay is None:
        return "-"
    ran = [f"{what} {how}" for what, how in (("code", replay.code), ("env", replay.environment)) if how]
    return "\n".join([f"of {replay.of_run_id} / {replay.mode}", *ran])


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
@click.option(
    "--from-task",
    metavar="TASK",
    help="Replay this task and everything downstream of it; the other recorded tasks do not run, "
    "their recorded outputs are reused at their commit ids.",
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
    from_task: str | None,
    as_json: bool,
) -> None:
    """Replay a recorded DAG run with its exact pins (a new run of the same DAG).

    Exit 0: triggered (with --verify: identical); 1: differs; 2: refused or a user error."""
    from airflow_repro.airflow import replay as service

    secrets = _read_secrets(secret_sources)
    backends = _backends()
    plan = service.plan(backends, dag_id, run_id, mode, secrets=secrets, from_task=from_task)  # type: ignore[arg-type]
    _print_drift(plan)
    _print_scope(plan)
    if dry_run:
        if as_json:
            _echo(plan.model_dump_json(indent=2))
        if plan.blocking_drift:
            click.echo(plan.refusal_message(), err=True)
            sys.exit(EXIT_USER_ERROR)
        _echo(f"replay of {run_id} (mode {mode}) can run: {_restore_summary(plan)}", err=as_json)
        return
    new_run = service.trigger(backends, plan, triggered_by="CLI", user=_user(), secrets=secrets)
    _echo(f"triggered replay {new_run} of {run_id} (mode {mode})", err=as_json)
    if not (wait or then_verify):
        if as_json:
            _echo(plan.model_dump_json(indent=2))
        return
    state = _wait_with_progress(service, dag_id, new_run, timeout)
    if state != "success":
        click.echo(f"replay {new_run} ended {state}; see its task logs in Airflow", err=True)
        sys.exit(EXIT_DIFFERS)
    if then_verify:
        report = service.verify(backends, dag_id, new_run)
        _print_report(report, as_json)
        sys.exit(verdict_exit_code(report.verdict))
    _echo(f"replay {new_run} ended {state}", err=as_json)
    if as_json:  # --wait: the plan of the replay that succeeded (--verify prints the report)
        _echo(plan.model_dump_json(indent=2))


@main.command()
@click.argument("dag_id")
@click.argument("replay_run_id")
@click.option(
    "--abs-tol",
    type=float,
    default=None,
    help="Absolute tolerance for metrics and every output (overrides the outputs' declared tolerances). "
    "Without it and --rel-tol: metrics exact, outputs within what their task declared (Output(abs_tol=...)).",
)
@click.option(
    "--rel-tol", type=float, default=None, help="Relative tolerance, as --abs-tol (|b - a| <= abs + rel*|a|)."
)
@click.option("--strict", is_flag=True, help="Exit 1 for an equivalent verdict too (only identical exits 0).")
@click.option(
    "--repeat",
    type=click.IntRange(1, 20),
    default=None,
    help="Where the replay is not identical: replay the run N more times on the same pins and say whether the "
    "replays agree with each other (intrinsic nondeterminism) or only not with the original (drift).",
)
@click.option(
    "--timeout", type=Seconds(), default=3600, show_default=True, help="Seconds to wait for each --repeat replay."
)
@click.option(
    "--secret",
    "secret_sources",
    multiple=True,
    metavar="KEY=env:VAR|variable:NAME",
    help="With --repeat: the value of a redacted DAG-run conf entry, as for 'replay --secret'.",
)
@click.option("--stored", is_flag=True, help="Print the report stored by an earlier verification; compute nothing.")
@click.option(
    "--deep",
    is_flag=True,
    help="Also re-read both runs' outputs from the store and re-hash them: a damaged object makes the verdict differ.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(
    dag_id: str,
    replay_run_id: str,
    abs_tol: float | None,
    rel_tol: float | None,
    strict: bool,
    repeat: int | None,
    timeout: float,
    secret_sources: tuple[str, ...],
    stored: bool,
    deep: bool,
    as_json: bool,
) -> None:
    """Prove whether a replay reproduced the original, output by output.

    Each output is identical (same bytes, decided by hash), equivalent (different bytes, equal
    within its tolerance) or differs; the run's verdict is the weakest of its tasks'. Exit 0
    identical or equivalent (1 for equivalent with --strict), 1 differs."""
    from airflow_repro.airflow import replay as service

    tolerance = _tolerance_option(abs_tol, rel_tol)
    if stored and repeat:
        raise click.UsageError("--stored prints a stored report; --repeat replays again: give one of them")
    backends = _backends()
    if stored:
        report = service.stored_report(backends, dag_id, replay_run_id, deep=deep)
    else:
        report = service.verify(backends, dag_id, replay_run_id, tolerance, deep=deep)
    if repeat:
        secrets = _read_secrets(secret_sources)
        runner = service.trigger_and_wait(backends, triggered_by="CLI", user=_user(), timeout=timeout, secrets=secrets)
        report = service.repeat(backends, report, repeat, runner, secrets=secrets)
        if report.repeats is None:
            click.echo("every task verified identical: nothing to repeat", err=True)
    _print_report(report, as_json)
    sys.exit(verdict_exit_code(report.verdict, strict=strict))


def verdict_exit_code(verdict: str, *, strict: bool = False) -> int:
    """0 identical, 0 equivalent (1 with ``strict``), 1 differs."""
    if verdict == "identical" or (verdict == "equivalent" and not strict):
        return EXIT_IDENTICAL
    return EXIT_DIFFERS


def _tolerance_option(abs_tol: float | None, rel_tol: float | None) -> Any:
    """The override given on the command line (None: metrics exact, outputs as declared)."""
    if abs_tol is None and rel_tol is None:
        return None
    from airflow_repro.core.spec import check_tolerance
    from airflow_repro.core.verify import Tolerance

    try:
        a = check_tolerance(abs_tol or 0.0, "abs_tol", where="--abs-tol")
        r = check_tolerance(rel_tol or 0.0, "rel_tol", where="--rel-tol")
    except ReproUserError as exc:
        raise click.BadParameter(str(exc).replace("abs_tol=", "--abs-tol ").replace("rel_tol=", "--rel-tol ")) from None
    return Tolerance(abs=a, rel=r)


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
        _echo(result.model_dump_json(indent=2))
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
        if drift.reused:
            level = "reused, not run"
        elif drift.blocks(plan.mode):
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
    if plan.unrecorded_tasks:
        click.echo(
            f"not recorded (re-run on replay with whatever they read then): {', '.join(plan.unrecorded_tasks)}",
            err=True,
        )


def _print_scope(plan: Any) -> None:
    """Which recorded tasks run again and which are reused (a replay from a task)."""
    if plan.from_task is None:
        return
    click.echo(f"replay from task {plan.from_task}: replayed {', '.join(plan.replayed_task_ids)}", err=True)
    reused = [
        f"{t.task_id}{f'[{t.map_index}]' if t.map_index >= 0 else ''} at {t.commit_id[:12]}"
        for t in plan.reused_tasks or ()
    ]
    click.echo(f"reused (recorded outputs, not run): {', '.join(reused) or 'none'}", err=True)


def _restore_summary(plan: Any) -> str:
    restored = sorted({d.task_id for d in plan.drift if plan.mode == "pinned" and d.restorable})
    if restored:
        return f"code or environment restored for {', '.join(restored)}"
    return "no drift" if not plan.drift else "drift accepted"


def _print_report(report: Any, as_json: bool) -> None:
    if as_json:
        _echo(report.model_dump_json(indent=2))
        return
    from rich.markup import escape

    console = _console(width=200)
    counts = ", ".join(f"{n} {status}" for status, n in report.summary().items() if n)
    console.print(
        f"verify {escape(report.replay_run_id)} against {escape(report.original_run_id)}: "
        f"[bold]{report.verdict.upper()}[/]  ({counts or 'no task'})"
    )
    for task in report.tasks:
        _print_task(console, task)
    if report.note:
        console.print(f"note: {escape(report.note)}")
    if report.repeats is not None:
        _print_repeats(console, report.repeats)


def _print_task(console: Any, task: Any) -> None:
    from rich.markup import escape

    reused = ", reused: not run" if task.reused else ""  # a replay from a later task
    console.print(f"  {escape(task.task_id)}: {task.status} ({task.objects_compared} objects compared{reused})")
    for obj in task.objects:
        _print_object(console, obj)
    for metric in task.metrics:
        within = " (within tolerance)" if metric.within_tolerance else ""
        console.print(f"    metric {escape(metric.name)}: {metric.original} -> {metric.replay}{within}")
    for cause in task.likely_causes:
        console.print(f"    likely cause {escape(f'[{cause.kind}]')}: {escape(cause.detail)}")


def _print_object(console: Any, obj: Any) -> None:
    from rich.markup import escape

    before = f"{obj.original.content_hash} {obj.original.size} B" if obj.original else "-"
    after = f"{obj.replay.content_hash} {obj.replay.size} B" if obj.replay else "-"
    comparison = obj.comparison
    label = f"{comparison.verdict} ({comparison.format})" if comparison is not None else obj.change
    console.print(f"    {label}: {escape(obj.path)}\n      original {before}\n      replay   {after}")
    if comparison is not None:
        console.print(f"      {escape(comparison.summary)}")
        console.print(f"      tolerance: {comparison.tolerance.describe()} ({obj.tolerance_source})")
        for line in _detail_lines(comparison.details):
            console.print(f"      {escape(line)}")
        if comparison.note:
            console.print(f"      note: {escape(comparison.note)}")
    if obj.detail:
        console.print(f"      {escape(obj.detail)}")


#: At most this many lines of an object's details in the table (--json has them all).
DETAIL_LINES = 12


def _detail_lines(details: dict[str, Any]) -> list[str]:
    lines = []
    for key, value in details.items():
        if _says_nothing(value):
            continue
        text = json.dumps(value, ensure_ascii=False, default=str)
        lines.append(f"{key}: {text if len(text) <= 160 else text[:159] + '…'}")
    if len(lines) > DETAIL_LINES:
        lines = [*lines[:DETAIL_LINES], f"... {len(lines) - DETAIL_LINES} more (see --json)"]
    return lines


def _says_nothing(value: Any) -> bool:
    """An empty, zero or false detail (no schema change, no extra rows): left out of the table."""
    if isinstance(value, dict):
        return all(_says_nothing(v) for v in value.values())
    return not value and value is not None and not isinstance(value, float)


def _print_repeats(console: Any, repeats: Any) -> None:
    from rich.markup import escape

    console.print(f"repeats: {len(repeats.runs)} more replay(s) on the same pins")
    for task in repeats.tasks:
        console.print(f"  {escape(task.task_id)}: {task.conclusion}: {escape(task.detail)}")


def _print_diff(result: Any) -> None:
    from rich.markup import escape

    console = _console(width=200)
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
        _echo(json.dumps(schemas, indent=2, sort_keys=True))
        return
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, body in schemas.items():
            (folder / f"{name}.schema.json").write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
            _echo(str(folder / f"{name}.schema.json"))
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
        _echo(json.dumps(_as_dict(report, clean=report.clean), indent=2, sort_keys=True))
    else:
        _print_fsck(report)
    sys.exit(EXIT_IDENTICAL if report.clean else EXIT_DAMAGE_FOUND)


def _as_dict(value: Any, **extra: Any) -> dict[str, Any]:
    import dataclasses

    return {**dataclasses.asdict(value), **extra}


def _print_fsck(report: Any) -> None:
    from rich.markup import escape

    console = _console(width=200, highlight=False)
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
        _echo(json.dumps(_as_dict(report, freed_bytes=report.freed_bytes), indent=2, sort_keys=True))
        return
    verb = "freed" if report.deleted else "would free (dry run; --delete to act)"
    _echo(
        f"{verb} {report.freed_bytes} bytes: {report.objects} unreferenced objects ({report.object_bytes} B), "
        f"{report.temp_entries} temp files ({report.temp_bytes} B), {report.metadata_files} orphan commit/tree "
        f"files ({report.metadata_bytes} B); kept {report.recent_unreferenced_objects} unreferenced objects "
        f"younger than {grace:g}s; referenced: {report.referenced_objects} objects ({report.referenced_bytes} B)"
    )


@main.command()
@click.option(
    "--dags-folder",
    required=True,
    type=click.Path(exists=True, file_okay=False, resolve_path=True, path_type=Path),
    help="Your DAG files (the DAG processor's [core] dags_folder).",
)
@click.option(
    "--home",
    "stack_home",
    type=click.Path(file_okay=False, resolve_path=True, path_type=Path),
    default=None,
    help="Folder of the stack: Airflow home and metadata DB, data store, MLflow DB, logs, settings "
    "[default: ./.airflow-repro].",
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="Port of the Airflow UI and API."
)
@click.option(
    "--no-auth",
    is_flag=True,
    help="No login: every visitor is an admin (development only). Default: user admin, a generated password.",
)
def standalone(dags_folder: Path, stack_home: Path | None, port: int, no_auth: bool) -> None:
    """Run Airflow (api-server, scheduler, dag-processor), MLflow and the embedded store on your DAGs
    folder until Ctrl-C or SIGTERM, which stop every service. Prints the UI URL and the login.

    Writes the stack's settings to <home>/stack.json: airflow-repro commands run in the folder the
    home is in (default home) find them when AIRFLOW_HOME is not set; elsewhere set
    AIRFLOW_REPRO_STACK=<home>/stack.json. For airflow commands: source <home>/stack.env."""
    from airflow_repro import standalone as stack

    home = stack_home or stack.default_home()
    stack.run(dags_folder, home, port, auth=not no_auth, out=_out(), err=sys.stderr)


def _register_lineage_commands() -> None:
    from airflow_repro.lineage_cli import lineage

    main.add_command(lineage)


_register_lineage_commands()

if __name__ == "__main__":
    main()
