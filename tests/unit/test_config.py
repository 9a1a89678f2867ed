"""Settings resolve from [repro] / AIRFLOW__REPRO__* and reject bad values with the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_repro.config import ReproSettings
from airflow_repro.errors import ConfigError


def test_defaults_live_under_airflow_home() -> None:
    settings = ReproSettings.from_env({"AIRFLOW_HOME": "/srv/airflow"})
    assert settings.home == Path("/srv/airflow/repro")
    assert settings.store_root == Path("/srv/airflow/repro/store")
    assert settings.mlflow_tracking_uri == "sqlite:////srv/airflow/repro/mlflow.db"
    assert settings.repository == "repro" and settings.default_branch == "main"


def test_overrides() -> None:
    settings = ReproSettings.from_env({
        "AIRFLOW__REPRO__HOME": "/data/r", "AIRFLOW__REPRO__REPOSITORY": "ml-data",
        "AIRFLOW__REPRO__MLFLOW_TRACKING_URI": "http://mlflow:5000",
    })
    assert settings.work_dir == Path("/data/r/work") and settings.repository == "ml-data"
    assert settings.mlflow_tracking_uri == "http://mlflow:5000"


@pytest.mark.parametrize(("env", "message"), [
    ({"AIRFLOW__REPRO__HOME": "relative/dir"}, "absolute path"),
    ({"AIRFLOW__REPRO__REPOSITORY": "Bad_Name"}, "repository name"),
    ({"AIRFLOW__REPRO__DEFAULT_BRANCH": "a/b"}, "branch name"),
    ({"AIRFLOW__REPRO__MLFLOW_TRACKING_URI": "ftp://x"}, "AIRFLOW__REPRO__MLFLOW_TRACKING_URI"),
])
def test_invalid_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ReproSettings.from_env({"AIRFLOW_HOME": "/srv/airflow", **env})


def test_non_file_store_uri_is_refused() -> None:
    settings = ReproSettings.from_env({"AIRFLOW_HOME": "/a", "AIRFLOW__REPRO__STORE_URI": "lakefs://x"})
    with pytest.raises(ConfigError, match="file:///"):
        _ = settings.store_root
