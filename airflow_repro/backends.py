"""The composition root: what the settings name, built and handed out as one :class:`Backends`.

The CLI, the REST API (through ``airflow.replay``), the operators and the listener all get their
settings, data store and experiment tracker here, the same way. Connection ids in the settings
resolve through a :class:`Connections` seam; Airflow's (``airflow.hooks.AirflowConnections``) is
imported only when a connection is first looked up, so importing this module imports nothing of
the Airflow shell, nor any SDK.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from airflow_repro.config import ReproSettings
from airflow_repro.core.ports import ExperimentTracker, VersionedDataStore
from airflow_repro.errors import ConfigError

if TYPE_CHECKING:
    from airflow_repro.adapters.lakefs_store import LakeFSConnection

#: Outside Airflow (CLI, tests against a real server) lakeFS can be given by these variables.
LAKEFS_ENV = ("LAKEFS_ENDPOINT", "LAKEFS_ACCESS_KEY_ID", "LAKEFS_SECRET_ACCESS_KEY")


class Connections(Protocol):
    """Where the connection ids of the settings resolve: Airflow's connections, or a fake."""

    def lakefs(self, conn_id: str) -> LakeFSConnection | None:
        """The lakeFS endpoint and credentials of ``conn_id``; ``None`` if there is no such connection."""

    def mlflow_tracking_uri(self, conn_id: str) -> str | None:
        """The tracking server of ``conn_id``; ``None`` if there is no such connection."""


def airflow_connections() -> Connections:
    """Airflow's connections (secrets backends, ``AIRFLOW_CONN_*``), imported on first use."""
    from airflow_repro.airflow.hooks import AirflowConnections

    return AirflowConnections()


#: Builds the experiment tracker of some settings (called only when a tracker is needed).
TrackerFactory = Callable[[ReproSettings], ExperimentTracker]


def build_store(
    settings: ReproSettings, *, create: bool = True, connections: Connections | None = None
) -> VersionedDataStore:
    """The configured store; ``create=False`` (commands that only read) never creates a local
    store's folders and raises ``StoreNotFound`` where there is none."""
    if settings.store_kind == "lakefs":
        return build_lakefs_store(settings, connections=connections)
    from airflow_repro.adapters.local_store import LocalStore

    return LocalStore(settings.store_root, create=create)


def build_lakefs_store(
    settings: ReproSettings, environ: Mapping[str, str] | None = None, *, connections: Connections | None = None
) -> VersionedDataStore:
    from airflow_repro.adapters.lakefs_store import LakeFSStore

    connection = lakefs_connection(settings, os.environ if environ is None else environ, connections=connections)
    return LakeFSStore.from_connection(
        connection, storage_namespace=settings.lakefs_storage_namespace, airflow_ui_url=settings.airflow_ui_url
    )


def lakefs_connection(
    settings: ReproSettings, environ: Mapping[str, str], *, connections: Connections | None = None
) -> LakeFSConnection:
    """The connection named by the settings; else the ``LAKEFS_*`` variables; else a clear error."""
    from airflow_repro.adapters.lakefs_store import LakeFSConnection

    conn_id = settings.store_conn_id
    found = (connections or airflow_connections()).lakefs(conn_id)
    if found is not None:
        return found
    if all(environ.get(name) for name in LAKEFS_ENV):
        return LakeFSConnection(*(environ[name] for name in LAKEFS_ENV))
    raise ConfigError(
        f"[repro] store_uri {settings.store_uri!r} selects lakeFS, but there is no Airflow connection {conn_id!r}: "
        f"add one of type lakefs (host = endpoint, login = access key id, password = secret), e.g. "
        f'AIRFLOW_CONN_{conn_id.upper()}=\'{{"conn_type": "lakefs", "host": "http://lakefs:8000", '
        f'"login": "...", "password": "..."}}\', or set {", ".join(LAKEFS_ENV)}'
    )


def build_tracker(settings: ReproSettings, *, connections: Connections | None = None) -> ExperimentTracker:
    from airflow_repro.adapters.mlflow_tracker import make_tracker

    return make_tracker(tracking_uri(settings, connections=connections))


def tracking_uri(settings: ReproSettings, *, connections: Connections | None = None) -> str:
    """``[repro] mlflow_conn_id``'s server when set, else ``[repro] mlflow_tracking_uri``."""
    if not settings.mlflow_conn_id:
        return settings.mlflow_tracking_uri
    uri = (connections or airflow_connections()).mlflow_tracking_uri(settings.mlflow_conn_id)
    if uri is None:
        raise ConfigError(
            f"[repro] mlflow_conn_id {settings.mlflow_conn_id!r} names no Airflow connection: add one of type mlflow "
            "(host = tracking server, e.g. http://mlflow:5000), or unset mlflow_conn_id and set mlflow_tracking_uri"
        )
    return uri


@dataclass(frozen=True)
class Backends:
    """What a command, an API request or a task attempt works with: the settings, the data store
    they name (built at once: a bad store fails early) and the tracker (built on demand: it may
    be down, and only some paths need it)."""

    settings: ReproSettings
    store: VersionedDataStore
    tracker_factory: TrackerFactory = field(default=build_tracker, repr=False)

    @classmethod
    def from_settings(
        cls, settings: ReproSettings, *, create: bool = True, connections: Connections | None = None
    ) -> Backends:
        """``create=False``: for commands that only read (a missing local store is not created)."""
        tracker_factory = (
            build_tracker if connections is None else functools.partial(build_tracker, connections=connections)
        )
        return cls(settings, build_store(settings, create=create, connections=connections), tracker_factory)

    @classmethod
    def from_airflow_conf(
        cls,
        overrides: Mapping[str, str | None] | None = None,
        *,
        create: bool = True,
        connections: Connections | None = None,
    ) -> Backends:
        """From Airflow's ``[repro]`` config (:meth:`ReproSettings.from_airflow_conf`), ``overrides`` first."""
        return cls.from_settings(ReproSettings.from_airflow_conf(overrides), create=create, connections=connections)

    def tracker(self) -> ExperimentTracker:
        return self.tracker_factory(self.settings)


__all__ = [
    "LAKEFS_ENV",
    "Backends",
    "Connections",
    "TrackerFactory",
    "airflow_connections",
    "build_lakefs_store",
    "build_store",
    "build_tracker",
    "lakefs_connection",
    "tracking_uri",
]
