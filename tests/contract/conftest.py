"""Stores for the port contract: the embedded store, lakeFS (the spec-validated double), live lakeFS.

``store`` is parametrized over the three; ``live`` runs only when ``LAKEFS_ENDPOINT``,
``LAKEFS_ACCESS_KEY_ID`` and ``LAKEFS_SECRET_ACCESS_KEY`` are set, and skips saying so otherwise.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_repro.adapters.lakefs_store import LakeFSConnection, LakeFSStore
from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.core.ports import VersionedDataStore
from tests.support.stores import LIVE_ENV, Backend, double_store


@pytest.fixture(params=["local", "lakefs-double", pytest.param("lakefs-live", marks=pytest.mark.live)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    repo = f"ct-{uuid.uuid4().hex[:10]}"  # unique: a live server keeps repositories between runs
    if request.param == "local":
        local = LocalStore(tmp_path / "store")

        def gone_local(ref: str, path: str) -> None:
            target = local.object_path(local.stat_object(repo, ref, path).content_hash)
            target.chmod(0o644)
            target.unlink()

        yield Backend("local", local, repo, gone_local)
        return
    if request.param == "lakefs-double":
        double = request.getfixturevalue("lakefs_double")
        store = double_store(double)
        yield Backend("lakefs-double", store, repo, lambda ref, path: double.collect_garbage(repo, ref, path))
        store.close()
        return
    missing = [name for name in LIVE_ENV if not os.environ.get(name)]
    if missing:
        pytest.skip(f"live lakeFS contract run needs {', '.join(missing)} (set them to run it against a real server)")
    connection = LakeFSConnection(*(os.environ[name] for name in LIVE_ENV))
    namespace = os.environ.get("LAKEFS_STORAGE_NAMESPACE", "local://repro-contract")
    live = LakeFSStore.from_connection(connection, storage_namespace=f"{namespace}/{uuid.uuid4().hex[:8]}")
    yield Backend("lakefs-live", live, repo, None)
    with contextlib.suppress(Exception):  # best effort: the test may not have created it
        live.client.sdk_client.repositories_api.delete_repository(repo)
    live.close()


@pytest.fixture
def store(backend: Backend) -> VersionedDataStore:
    return backend.store
