"""Stores for the port contract: the embedded store, lakeFS (the spec-validated double), live lakeFS.

``store`` is parametrized over the three; ``live`` runs only when ``LAKEFS_ENDPOINT``,
``LAKEFS_ACCESS_KEY_ID`` and ``LAKEFS_SECRET_ACCESS_KEY`` are set, and skips saying so otherwise.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from airflow_repro.adapters.lakefs_store import LakeFSConnection, LakeFSStore
from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.core.ports import VersionedDataStore
from tests.doubles.lakefs_double import ACCESS_KEY_ID, SECRET_ACCESS_KEY, LakeFSDouble, find_spec

REPO_ROOT = Path(__file__).resolve().parents[2]
LIVE_ENV = ("LAKEFS_ENDPOINT", "LAKEFS_ACCESS_KEY_ID", "LAKEFS_SECRET_ACCESS_KEY")


@pytest.fixture(scope="session")
def lakefs_server() -> Iterator[LakeFSDouble]:
    """One double per session (state is reset per test). Spec validation needs ../shared."""
    double = LakeFSDouble(find_spec(REPO_ROOT))
    double.serve()
    yield double
    double.stop()


@pytest.fixture
def lakefs_double(lakefs_server: LakeFSDouble) -> Iterator[LakeFSDouble]:
    """The double, empty; the test fails if any request or response broke lakeFS's OpenAPI spec."""
    if lakefs_server._openapi is None:
        import warnings

        warnings.warn(
            "lakeFS double runs WITHOUT OpenAPI validation: ../shared/specs/lakefs/swagger.yml is absent "
            f"(looked beside {REPO_ROOT})",
            stacklevel=1,
        )
    lakefs_server.reset()
    yield lakefs_server
    assert lakefs_server.violations == [], "requests/responses that break lakeFS's swagger.yml"


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
