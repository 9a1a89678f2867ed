"""A lazily built ASGI app, so the plugin can declare its REST API without importing FastAPI.

Airflow imports plugins in every process (scheduler, DAG processor, each task process), but only
the API server serves ``fastapi_apps``. :class:`LazyASGIApp` stands in for the FastAPI app: it
holds only the import path of a factory and builds the real app on its first ASGI call.

Why a plain ASGI object works in Airflow 3.3.2 (``airflow/api_fastapi/app.py``):

* ``init_plugins`` passes ``fastapi_apps[i]["app"]`` unchanged to Starlette's ``app.mount``, which
  accepts any ASGI callable.
* The API server's lifespan only enters the lifespans of mounted apps that are ``FastAPI``
  instances, and Starlette never forwards lifespan events to mounts, so this wrapper gets no
  lifespan call there; the REST API needs no startup work. Served on its own by an ASGI server,
  the wrapper gets the lifespan events first and forwards them to the app it builds for them.
* ``GET /api/v2/plugins`` reports each app as ``qualname(app.__class__)``, a string
  (``airflow_repro.airflow.lazy_app.LazyASGIApp``), which fits ``FastAPIAppResponse.app: str``.

This module must stay light: it imports nothing beyond the standard library.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class LazyASGIApp:
    """An ASGI app built by ``factory`` (``"package.module:function"``) on its first call."""

    def __init__(self, factory: str) -> None:
        module, sep, attr = factory.partition(":")
        if not (module and sep and attr):
            raise ValueError(f"factory must be 'package.module:function', got {factory!r}")
        self.factory = factory
        self._app: ASGIApp | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._app is not None

    def load(self) -> ASGIApp:
        """Import the factory and build the app (once; later calls return the same app)."""
        if self._app is None:
            with self._lock:
                if self._app is None:
                    module, _, attr = self.factory.partition(":")
                    factory = getattr(importlib.import_module(module), attr)
                    self._app = factory()
                    log.info("airflow-repro: built the ASGI app from %s", self.factory)
        return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.load()(scope, receive, send)

    def __repr__(self) -> str:
        return f"LazyASGIApp({self.factory!r}, loaded={self.loaded})"
