"""Shared pytest fixtures."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import pytest

from airflow_repro.embedded import running_mlflow_server
from tests.postgres import PostgresServer, PostgresUnavailable, running_postgres


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real ``mlflow server`` (sqlite store, proxied artifacts), one per session."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server (real ``postgres``), one per session; skipped where none is installed."""
    try:
        with running_postgres() as server:
            yield server
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    """SQLAlchemy URL (psycopg2) of a new, empty database on the session's PostgreSQL server."""
    name = re.sub(r"\W", "_", request.node.name).lower()[:50]
    return postgres_server.create_database(f"{name}_{secrets.token_hex(4)}")
