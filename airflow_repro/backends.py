"""Build the adapters a setting names: the data store and the experiment tracker."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from airflow_repro.config import ReproSettings
from airflow_repro.core.ports import ExperimentTracker, VersionedDataStore
from airflow_repro.errors import ConfigError

if TYPE_CHECKING:
    from airflow_repro.adapters.lakefs_store import LakeFSConnection

#: Outside Airflow (CLI, tests against a real server) lakeFS can be given by these variables.
LAKEFS_ENV = ("LAKEFS_ENDPOINT", "LAKEFS_ACCESS_KEY_ID", "LAKEFS_SECRET_ACCESS_KEY")


def build_store(settings: ReproSettings, *, create: bool = True) -> VersionedDataStore:
    """The configured store; ``create=False`` (commands that only read) never creates a local
    store's folders and raises ``StoreNotFound`` where there is none."""
    if settings.store_kind == "lakefs":
        return build_lakefs_store(settings)
    from airflow_repro.adapters.local_store import LocalStore

    return LocalStore(settings.store_root, create=create)


def build_lakefs_store(settings: ReproSettings, environ: Mapping[str, str] | None = None) -> VersionedDataStore:
    from airflow_repro.adapters.lakefs_store import LakeFSStore

    connection = lakefs_connection(settings, os.environ if environ is None else environ)
    return LakeFSStore.from_connection(
        connection, storage_namespace=settings.lakefs_storage_namespace, airflow_ui_url=settings.airflow_ui_url
    )


def lakefs_connection(settings: ReproSettings, environ: Mapping[str, str]) -> LakeFSConnection:
    """The Airflow connection named by the settings; else the ``LAKEFS_*`` variables; else a clear error."""
    from airflow_repro.adapters.lakefs_store import LakeFSConnection
    from airflow_repro.airflow.hooks import LakeFSHook, get_connection_or_none

    conn_id = settings.store_conn_id
    if get_connection_or_none(conn_id) is not None:
        return LakeFSHook(conn_id).get_conn()
    if all(environ.get(name) for name in LAKEFS_ENV):
        return LakeFSConnection(*(environ[name] for name in LAKEFS_ENV))
    raise ConfigError(
        f"[repro] store_uri {settings.store_uri!r} selects lakeFS, but there is no Airflow connection {conn_id!r}: "
        f"add one of type lakefs (host = endpoint, login = access key id, password = secret), e.g. "
        f"AIRFLOW_CONN_{conn_id.upper()}='{{\"conn_type\": \"lakefs\", \"host\": \"http://lakefs:8000\", "
        f"\"login\": \"...\", \"password\": \"...\"}}', or set {', '.join(LAKEFS_ENV)}"
    )


def build_tracker(settings: ReproSettings) -> ExperimentTracker:
    from airflow_repro.adapters.mlflow_tracker import make_tracker

    return make_tracker(tracking_uri(settings))


def tracking_uri(settings: ReproSettings) -> str:
    """``[repro] mlflow_conn_id``'s server when set, else ``[repro] mlflow_tracking_uri``."""
    if not settings.mlflow_conn_id:
        return settings.mlflow_tracking_uri
    from airflow_repro.airflow.hooks import MlflowHook, get_connection_or_none

    if get_connection_or_none(settings.mlflow_conn_id) is None:
        raise ConfigError(
            f"[repro] mlflow_conn_id {settings.mlflow_conn_id!r} names no Airflow connection: add one of type mlflow "
            "(host = tracking server, e.g. http://mlflow:5000), or unset mlflow_conn_id and set mlflow_tracking_uri"
        )
    return MlflowHook(settings.mlflow_conn_id).get_tracking_uri()
