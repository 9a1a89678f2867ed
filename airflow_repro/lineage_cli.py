"""``airflow-repro lineage``: answer lineage questions from OpenLineage events.

EVENTS_SOURCE is what the file transport writes (a JSON Lines file, or a folder of event files),
or an ``http(s)://`` URL that returns events as JSON (an array, or ``{"events": [...]}`` as
Marquez's ``GET /api/v1/events/lineage`` does, followed page by page) or as JSON Lines.

Light at import (``airflow-repro --help`` loads it): HTTP and rich are imported in the commands.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click

from airflow_repro.cli_params import Seconds
from airflow_repro.errors import NotFoundError, ReproInfraError, ReproUserError

MAX_PAGES = 1000
#: RFC 9110 field names are tokens; values here printable ASCII (no CR/LF: no header injection).
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE_RE = re.compile(r"[\x20-\x7e]*")


@click.group()
def lineage() -> None:
    """Which commit, image and code produced a dataset version; which runs read it."""


_source = click.argument("events_source", metavar="EVENTS_SOURCE")
_dataset = click.argument("dataset_name", metavar="DATASET_NAME")
_namespace = click.option(
    "--namespace",
    help="Dataset namespace, e.g. lakefs://lakefs:8000 or repro+file://host/path/to/store (default: any).",
)
_header = click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="'NAME: VALUE'",
    help="HTTP header for an http(s) EVENTS_SOURCE (e.g. 'Authorization: Bearer ...').",
)
_timeout = click.option(
    "--timeout",
    type=Seconds(),
    default=30.0,
    show_default=True,
    help="HTTP timeout in seconds (above 0, at most a week).",
)
_json = click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")


@lineage.command("produced-by")
@_source
@_dataset
@_namespace
@click.option("--version", "version", help="Commit id (or a prefix of at least 7 characters); default: every version.")
@_header
@_timeout
@_json
def produced_by(
    events_source: str,
    dataset_name: str,
    namespace: str | None,
    version: str | None,
    headers: tuple[str, ...],
    timeout: float,
    as_json: bool,
) -> None:
    """Which run wrote DATASET_NAME (<repository>/<path>): its commit, the data commits it read,
    its environment (image) and its code."""
    from airflow_repro.core import lineage_query

    events = load_events(events_source, headers, timeout)
    answers = lineage_query.produced_by(events, dataset_name, namespace=namespace, version=version)
    if not answers:
        raise NotFoundError(
            _nothing_found(events, "no completed run in the events wrote", dataset_name, namespace, version)
        )
    if as_json:
        click.echo(json.dumps(answers, indent=2, sort_keys=True))
        return
    _print_productions(answers)


@lineage.command()
@_source
@_dataset
@click.option("--version", "version", required=True, help="Commit id (or a prefix of at least 7 characters).")
@_namespace
@_header
@_timeout
@_json
def readers(
    events_source: str,
    dataset_name: str,
    version: str,
    namespace: str | None,
    headers: tuple[str, ...],
    timeout: float,
    as_json: bool,
) -> None:
    """Which runs read DATASET_NAME at commit VERSION, and what they wrote."""
    from airflow_repro.core import lineage_query

    events = load_events(events_source, headers, timeout)
    answers = lineage_query.readers(events, dataset_name, version, namespace=namespace)
    if not answers:
        raise NotFoundError(_nothing_found(events, "no run in the events read", dataset_name, namespace, version))
    if as_json:
        click.echo(json.dumps(answers, indent=2, sort_keys=True))
        return
    _print_readers(answers)


@lineage.command()
@_source
@_header
@_timeout
@_json
def datasets(events_source: str, headers: tuple[str, ...], timeout: float, as_json: bool) -> None:
    """Every dataset version in the events, with how many runs wrote and read it."""
    from airflow_repro.core import lineage_query

    rows = lineage_query.dataset_versions(load_events(events_source, headers, timeout))
    if as_json:
        click.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in ("namespace", "name", "version", "written by", "read by"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["namespace"], row["name"], row["version"] or "-", str(row["writers"]), str(row["readers"]))
    Console(width=200).print(table)


# -- reading the source --------------------------------------------------------------------------
def load_events(source: str, headers: tuple[str, ...] = (), timeout: float = 30.0) -> list[dict[str, Any]]:
    """Events from a file or folder, or from an http(s) export endpoint."""
    from airflow_repro.core.lineage_query import load_event_files

    if source.startswith(("http://", "https://")):
        return fetch_events(source, _parse_headers(headers), timeout)
    try:
        path = Path(source).expanduser()
    except RuntimeError as exc:  # ~user that does not exist
        raise ReproUserError(f"EVENTS_SOURCE {source!r}: {exc}") from exc
    return load_event_files(path)


def fetch_events(url: str, headers: dict[str, str], timeout: float) -> list[dict[str, Any]]:
    """GET ``url``; a ``{"events": [...], "totalCount": n}`` answer is followed with ``offset``."""
    import httpx

    from airflow_repro.core.lineage_query import parse_events

    _check_url(url)
    events: list[dict[str, Any]] = []
    params: dict[str, Any] = {}
    try:
        with httpx.Client(headers=headers, timeout=timeout, follow_redirects=True) as client:
            for _ in range(MAX_PAGES):
                response = client.get(url, params=params or None)
                _check(url, response)
                page = parse_events(response.text, source=url)
                events.extend(page)
                total = _total_count(response)
                if total is None or not page or len(events) >= total:
                    return events
                params = {"offset": len(events)}
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:  # e.g. a redirect to ftp://
        raise ReproUserError(f"cannot read OpenLineage events from {url}: {exc}") from exc
    except httpx.HTTPError as exc:
        raise ReproInfraError(f"could not read OpenLineage events from {url}: {exc}") from exc
    raise ReproInfraError(f"{url} kept returning pages after {MAX_PAGES} requests; narrow the export")


def _check_url(url: str) -> None:
    """A URL httpx can request, or a user error saying what is wrong with it."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ReproUserError(f"EVENTS_SOURCE {url!r} is not a valid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ReproUserError(
            f"EVENTS_SOURCE {url!r} is not an http(s) URL with a host, e.g. http://marquez:5000/api/v1/events/lineage"
        )


def _check(url: str, response: Any) -> None:
    if response.status_code < 400:
        return
    detail = f"{url} answered HTTP {response.status_code}: {response.text[:200]}"
    if response.status_code >= 500 or response.status_code == 429:
        raise ReproInfraError(detail)
    raise ReproUserError(detail + " (check the URL of the events export, and --header for credentials)")


def _total_count(response: Any) -> int | None:
    try:
        body = response.json()
    except ValueError:
        return None
    total = body.get("totalCount") if isinstance(body, dict) else None
    return total if isinstance(total, int) else None


def _parse_headers(headers: tuple[str, ...]) -> dict[str, str]:
    parsed = {}
    for header in headers:
        name, sep, value = header.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not _HEADER_NAME_RE.fullmatch(name) or not _HEADER_VALUE_RE.fullmatch(value):
            raise click.BadParameter(
                f"{header!r} is not 'NAME: VALUE' (a token name, a printable ASCII value)", param_hint="--header"
            )
        parsed[name] = value
    return parsed


def _nothing_found(
    events: list[dict[str, Any]], what: str, name: str, namespace: str | None, version: str | None
) -> str:
    from airflow_repro.core.lineage_query import dataset_versions

    at = f" at {version}" if version else ""
    where = f" in namespace {namespace}" if namespace else ""
    known = [d for d in dataset_versions(events) if d["name"] == name]
    hint = (
        (
            "; versions the events know: "
            + ", ".join(f"{d['version'] or '(unversioned)'} in {d['namespace']}" for d in known[:10])
        )
        if known
        else (f"; the events ({len(events)}) never mention it (see 'airflow-repro lineage datasets')")
    )
    return f"{what} {name}{at}{where}{hint}"


# -- printing ------------------------------------------------------------------------------------
def _short(value: str | None, length: int = 12) -> str:
    return value[:length] if value else "-"


def _airflow(run: dict[str, Any]) -> str:
    task = run.get("airflow") or {}
    if not task:
        return ""
    return f" (Airflow {task.get('dagId')}/{task.get('runId')}/{task.get('taskId')}, try {task.get('tryNumber')})"


def _print_productions(answers: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=True)
    for answer in answers:
        dataset, run = answer["dataset"], answer["run"]
        same = "  (the same object, unchanged since)" if answer.get("matchedBy") == "content" else ""
        console.print(
            f"[bold]{escape(dataset['name'])}[/] @ {escape(str(dataset['version']))}  "
            f"[dim]{escape(dataset['namespace'])}[/]{same}"
        )
        console.print(
            f"  produced by  {escape(run['job']['name'])}  run {run['runId']}{escape(_airflow(run))}  "
            f"{run['state']} {run['endedAt'] or ''}"
        )
        commit = answer["commit"]
        console.print(
            f"  commit       {escape(str(commit['id']))}"
            + (f" on {escape(commit['repository'])}/{escape(commit['branch'])}" if commit["branch"] else "")
        )
        for read in answer["inputs"] or [{"name": "(no inputs)", "version": None, "namespace": ""}]:
            console.print(f"  read         {escape(read['name'])} @ {escape(str(read['version'] or '-'))}")
        env = answer["environment"] or {}
        if env:
            image = f"  image {env['image']}" if env.get("image") else ""
            console.print(f"  environment  {env.get('kind')} {escape(str(env.get('digest')))}{escape(image)}")
        code = answer["code"] or {}
        location = code.get("location") or {}
        console.print(
            f"  code         {escape(str(code.get('callable') or '-'))}  source {_short(code.get('sourceHash'), 19)}"
            + (
                f"  bundle {escape(str(code.get('bundleName')))}@{escape(str(code.get('bundleVersion')))}"
                if code.get("bundleVersion")
                else ""
            )
            + (f"\n               at {escape(location['url'])}" if location.get("url") else "")
        )
        mlflow = answer["mlflow"] or {}
        console.print(
            f"  seed {answer['seed']}  mlflow run {mlflow.get('runId') or '-'}  "
            f"manifest {escape(str(run.get('manifestDigest') or '-'))}"
        )
        replay = answer["replay"]
        if replay:
            verdict = f", verdict {replay['verdict']}" if replay.get("verdict") else ""
            console.print(f"  replay of    {escape(replay['ofRunId'])} ({replay['mode']}){verdict}")
        console.print()


def _print_readers(answers: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=True)
    first = answers[0]["dataset"]
    console.print(f"[bold]{escape(first['name'])}[/] @ {escape(str(first['version']))}: read by {len(answers)} run(s)")
    for answer in answers:
        run = answer["run"]
        console.print(
            f"  {escape(run['job']['name'])}  run {run['runId']}{escape(_airflow(run))}  {run['state']} "
            f"{run['startedAt'] or run['endedAt'] or ''}"
        )
        if answer.get("matchedBy") == "content":
            console.print(f"      read the same object at commit {escape(str(answer['dataset']['version']))}")
        for output in answer["outputs"]:
            console.print(f"      wrote {escape(output['name'])} @ {escape(str(output['version'] or '-'))}")
