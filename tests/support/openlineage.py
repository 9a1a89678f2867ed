"""OpenLineage tests' helpers: validation against the official specs, the provider switched on per
test, a lineage backend on loopback, and the small recorded DAGs these tests run.

The official OpenLineage JSON Schemas are read from ``../shared/specs/openlineage`` (never copied
into the project, never fetched); our facets' schemas from the package. Every schema is registered
under its ``$id``, so a ``_schemaURL`` resolves to the file it names without any network access.

OpenLineage is off in the rest of the test session (no transport is configured). The provider's
plugin reads that at import and registers no listener; :func:`openlineage_enabled` sets a
transport, registers the provider's listener with Airflow's listener managers for the test, and
takes everything back afterwards, so the other tests of the same process are unaffected.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.support.airflow_session import DAGS_FOLDER
from tests.support.specs import SHARED, require_spec

OL_SPECS = SHARED / "specs" / "openlineage"
RUN_EVENT = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
OL_ENV = (
    "AIRFLOW__OPENLINEAGE__TRANSPORT",
    "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD",
    "AIRFLOW__OPENLINEAGE__EXECUTION_TIMEOUT",
    "AIRFLOW__OPENLINEAGE__NAMESPACE",
)


def require_specs(specs: Path = OL_SPECS) -> Path:
    """The folder of the official schemas; skipped where it is absent (a failure when ``CI`` is set)."""
    require_spec(
        specs / "OpenLineage.json",
        f"the official OpenLineage JSON Schemas are not at {specs} (the shared folder next to the "
        "repository); events cannot be validated against them here",
    )
    return specs


# -- validation ----------------------------------------------------------------------------------
def _is_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if any(c.isspace() for c in value):
        return False
    parts = urlsplit(value)
    return bool(parts.scheme) and bool(parts.netloc or parts.path)


def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return "T" in value.upper() and parsed.tzinfo is not None


class OpenLineageValidator:
    """Draft 2020-12 validation of events (``RunEvent``) and of each facet against its ``_schemaURL``."""

    def __init__(self, specs: Path) -> None:
        from jsonschema import Draft202012Validator, FormatChecker
        from referencing import Registry, Resource

        from airflow_repro.core.lineage_query import shipped_schemas

        self.schemas: dict[str, dict[str, Any]] = {}
        for file in sorted([specs / "OpenLineage.json", *(specs / "facets").glob("*.json")]):
            schema = json.loads(file.read_text())
            self.schemas[schema["$id"]] = schema
        self.shipped = shipped_schemas()
        self.schemas.update(self.shipped)
        self.registry = Registry().with_resources(
            (uri, Resource.from_contents(schema)) for uri, schema in self.schemas.items()
        )
        checker = FormatChecker()  # jsonschema has no uri / date-time checks without extra packages
        checker.checks("uri")(_is_uri)
        checker.checks("date-time")(_is_date_time)
        self.format_checker = checker
        self._validator_class = Draft202012Validator

    def errors(self, instance: Any, schema_url: str) -> list[str]:
        validator = self._validator_class(
            {"$ref": schema_url}, registry=self.registry, format_checker=self.format_checker
        )
        return [
            f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(instance)
        ]

    def event_errors(self, event: Mapping[str, Any]) -> list[str]:
        """The event against ``RunEvent``, then every facet in it against its own ``_schemaURL``."""
        errors = [f"event: {e}" for e in self.errors(event, event.get("schemaURL") or RUN_EVENT)]
        for where, facet in iter_facets(event):
            url = facet.get("_schemaURL")
            if not isinstance(url, str) or url.split("#")[0] not in self.schemas:
                errors.append(f"{where}: _schemaURL {url!r} names no known schema")
                continue
            errors.extend(f"{where}: {e}" for e in self.errors(facet, url))
        return errors


def iter_facets(event: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for key, facet in ((event.get("run") or {}).get("facets") or {}).items():
        yield f"run.facets.{key}", facet
    for key, facet in ((event.get("job") or {}).get("facets") or {}).items():
        yield f"job.facets.{key}", facet
    for side in ("inputs", "outputs"):
        for i, dataset in enumerate(event.get(side) or []):
            for group in ("facets", "inputFacets", "outputFacets"):
                for key, facet in (dataset.get(group) or {}).items():
                    yield f"{side}[{i}].{group}.{key}", facet


# -- switching the provider on -------------------------------------------------------------------
def clear_openlineage_conf_caches() -> None:
    """The provider's conf getters are ``functools.cache``d outside pytest (not under it: the
    provider turns caching off when PYTEST_VERSION is set); clear whatever is cached."""
    from airflow.providers.openlineage import conf

    for name in dir(conf):
        getter = getattr(conf, name)
        if callable(getattr(getter, "cache_clear", None)):
            getter.cache_clear()


@contextlib.contextmanager
def openlineage_enabled(transport: Mapping[str, Any], **options: str) -> Iterator[Any]:
    """OpenLineage on, with ``transport``, for the block; off again afterwards.

    Task events are emitted from a thread the task runner joins (``execute_in_thread``) rather
    than a forked child, so a test sees them as soon as the task returns. DAG-run events go
    through the listener's process pool, which is shut down (and so drained) on exit.
    """
    from airflow.listeners.listener import get_listener_manager as core_listeners
    from airflow.providers.openlineage.plugins.listener import get_openlineage_listener
    from airflow.sdk.listener import get_listener_manager as task_listeners

    managers = [core_listeners(), task_listeners()]  # plugins load now, with OpenLineage still off
    saved = {name: os.environ.get(name) for name in OL_ENV}
    os.environ["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps(dict(transport))
    os.environ["AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD"] = "True"
    for name, value in options.items():
        os.environ[f"AIRFLOW__OPENLINEAGE__{name.upper()}"] = value
    clear_openlineage_conf_caches()
    listener = get_openlineage_listener()
    listener.adapter._client = None  # a client for this transport, not a previous test's
    added = [m for m in managers if not m.pm.is_registered(listener)]
    for manager in added:
        manager.add_listener(listener)
    try:
        yield listener
    finally:
        listener.before_stopping(None)  # drains and shuts down the DAG-event process pool
        for manager in added:
            manager.pm.unregister(listener)
        client, listener.adapter._client = listener.adapter._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        clear_openlineage_conf_caches()


def read_events(path: Path, *, expect: int | None = None, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Events of a JSON Lines file; with ``expect``, wait until at least that many arrived."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        events = [json.loads(line) for line in lines if line.strip()]
        if expect is None or len(events) >= expect or time.monotonic() > deadline:
            return events
        time.sleep(0.1)


# -- an OpenLineage HTTP backend on loopback -----------------------------------------------------
class LineageReceiver:
    """A stdlib HTTP server on 127.0.0.1 (random port) that stands in for Marquez: it accepts
    ``POST /api/v1/lineage`` (one event per request, as the HTTP transport sends them) and serves
    what it received at ``GET /api/v1/events/lineage`` (``{"events": [...], "totalCount": n}``,
    ``limit``/``offset`` paging, newest last)."""

    def __init__(self, page_size: int = 4) -> None:
        import gzip
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs

        self.events: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.page_size = page_size
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output quiet
                pass

            def _reply(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.requests.append(("POST", self.path, dict(self.headers)))
                if self.path != "/api/v1/lineage":
                    self._reply(404, {"error": f"no route {self.path}"})
                    return
                try:
                    event = json.loads(body)
                except ValueError:
                    self._reply(400, {"error": "not JSON"})
                    return
                with lock:
                    receiver.events.append(event)
                self._reply(201, {})

            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                receiver.requests.append(("GET", self.path, dict(self.headers)))
                if path != "/api/v1/events/lineage":
                    self._reply(404, {"error": f"no route {path}"})
                    return
                args = parse_qs(query)
                offset = int(args.get("offset", ["0"])[0])
                limit = int(args.get("limit", [str(receiver.page_size)])[0])
                with lock:
                    page = receiver.events[offset : offset + limit]
                    total = len(receiver.events)
                self._reply(200, {"events": page, "totalCount": total})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="lineage-receiver", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> LineageReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def wait_for(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.events)


# -- small recorded DAGs for these tests ----------------------------------------------------------
LINEAGE_DAGS_FILE = DAGS_FOLDER / "repro_lineage_dags.py"
LINEAGE_DAGS_SOURCE = '''"""Small recorded DAGs for the OpenLineage tests."""
from airflow.sdk import dag

from airflow_repro import Input, repro_task, runtime


@dag(dag_id="repro_ol_small", schedule=None, params={"factor": 3})
def repro_ol_small():
    @repro_task(outputs=["data/a.txt"], seed=5, resources={"cpu": 0.5, "memory": "256Mi", "gpu": 0},
                secret_names=["MY_TOKEN"])
    def write(params=None):
        runtime.current().output_path("data/a.txt").write_text(str(params["factor"]))

    @repro_task(inputs={"a": Input("data/a.txt")}, outputs=["data/b.txt"], seed=5)
    def double():
        ctx = runtime.current()
        ctx.output_path("data/b.txt").write_text(ctx.input_path("a").read_text() * 2)

    write() >> double()


repro_ol_small()


@dag(dag_id="repro_ol_fails_after_reading", schedule=None)
def repro_ol_fails_after_reading():
    @repro_task(outputs=["data/in.txt"], seed=1)
    def produce():
        runtime.current().output_path("data/in.txt").write_text("input")

    @repro_task(inputs={"src": Input("data/in.txt")}, outputs=["data/out.txt"], seed=1)
    def read_then_fail():
        ctx = runtime.current()
        ctx.output_path("data/out.txt").write_text(ctx.input_path("src").read_text())
        raise RuntimeError("boom after reading")

    produce() >> read_then_fail()


repro_ol_fails_after_reading()
'''


def write_lineage_dags() -> Path:
    """Write the small DAGs into the session's DAGs folder (the OpenLineage conftest does, when loaded)."""
    LINEAGE_DAGS_FILE.write_text(LINEAGE_DAGS_SOURCE)
    return LINEAGE_DAGS_FILE
