"""Stores under test: the lakeFS store on the double, and what a contract test knows of a backend."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from airflow_repro.adapters.lakefs_store import LakeFSConnection, LakeFSStore
from airflow_repro.core.ports import VersionedDataStore
from tests.doubles.lakefs_double import ACCESS_KEY_ID, SECRET_ACCESS_KEY, LakeFSDouble

LIVE_ENV = ("LAKEFS_ENDPOINT", "LAKEFS_ACCESS_KEY_ID", "LAKEFS_SECRET_ACCESS_KEY")


def double_store(double: LakeFSDouble, **kwargs: object) -> LakeFSStore:
    connection = LakeFSConnection(double.url, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    return LakeFSStore.from_connection(connection, storage_namespace="local://repro", **kwargs)  # type: ignore[arg-type]


@dataclass
class Backend:
    """A store under test plus what only the test needs to know about its backend."""

    name: str
    store: VersionedDataStore
    repo: str
    make_gone: Callable[[str, str], None] | None  # (ref, path) -> delete its data like GC does
