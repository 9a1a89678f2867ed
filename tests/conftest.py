"""Shared pytest fixtures (their helpers live in ``tests/support``)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_repro.embedded import running_mlflow_server
from tests.doubles.lakefs_double import LakeFSDouble
from tests.postgres import PostgresServer, PostgresUnavailable, running_postgres
from tests.support import airflow_session, specs

TESTS = Path(__file__).resolve().parent
# The fast tier (``make test-fast``: ``pytest -m "not slow"``) leaves out what starts a real server.
SLOW_FOLDERS = {"api", "browser", "e2e"}
SLOW_FIXTURES = {"mlflow_server", "postgres_server", "api_server"}
# Modules whose tests reach a real server or store through a fixture they request by name at run time.
SLOW_MODULES = {("unit", "test_mlflow_trackers.py")}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``slow`` the tests of the api/e2e folders and every test that needs a real server."""
    for item in items:
        parts = item.path.resolve().relative_to(TESTS).parts
        needs_a_server = SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
        if parts[0] in SLOW_FOLDERS or parts[:2] in SLOW_MODULES or needs_a_server:
            item.add_marker(pytest.mark.slow)


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


# -- in-process Airflow (tests/airflow, api, kubernetes, openlineage: their conftests start the session) --
@pytest.fixture(scope="session")
def airflow_db() -> Iterator[Path]:
    airflow_session.start()
    from airflow.utils import db

    db.initdb()
    yield airflow_session.SESSION_HOME
    shutil.rmtree(airflow_session.SESSION_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def repro_env(airflow_db: Path, mlflow_server: str) -> Iterator[dict[str, str]]:
    """Repro settings for in-process runs: the session store and a real MLflow server."""
    os.environ["AIRFLOW__REPRO__MLFLOW_TRACKING_URI"] = mlflow_server
    yield {"home": str(airflow_session.REPRO_HOME), "mlflow": mlflow_server}


# -- the lakeFS double (tests/contract, tests/lakefs) -------------------------------------------------
@pytest.fixture(scope="session")
def lakefs_server() -> Iterator[LakeFSDouble]:
    """One double per session (state is reset per test). Spec validation needs ../shared (required under CI)."""
    spec = specs.lakefs_swagger()
    if spec is None:
        specs.spec_missing(
            f"../shared/specs/lakefs/swagger.yml (looked beside {specs.REPO_ROOT}): the lakeFS double "
            "cannot validate requests and responses against lakeFS's OpenAPI spec"
        )
    double = LakeFSDouble(spec)
    double.serve()
    yield double
    double.stop()


@pytest.fixture
def lakefs_double(lakefs_server: LakeFSDouble) -> Iterator[LakeFSDouble]:
    """The double, empty; the test fails if any request or response broke lakeFS's OpenAPI spec."""
    if lakefs_server._openapi is None:
        warnings.warn(
            "lakeFS double runs WITHOUT OpenAPI validation: ../shared/specs/lakefs/swagger.yml is absent "
            f"(looked beside {specs.REPO_ROOT})",
            stacklevel=1,
        )
    lakefs_server.reset()
    yield lakefs_server
    assert lakefs_server.violations == [], "requests/responses that break lakeFS's swagger.yml"
