"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_repro.embedded import running_mlflow_server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real ``mlflow server`` (sqlite store, proxied artifacts), one per session."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url
