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


# ---- lakeFS and connections ------------------------------------------------------------------


def test_lakefs_store_uri_names_the_connection() -> None:
    settings = ReproSettings.from_env({"AIRFLOW_HOME": "/a", "AIRFLOW__REPRO__STORE_URI": "lakefs://"})
    assert settings.store_kind == "lakefs" and settings.store_conn_id == "lakefs_default"
    named = ReproSettings.from_env({"AIRFLOW_HOME": "/a", "AIRFLOW__REPRO__STORE_URI": "lakefs://prod_lakefs"})
    assert named.store_conn_id == "prod_lakefs"
    by_option = ReproSettings.from_env({
        "AIRFLOW_HOME": "/a", "AIRFLOW__REPRO__STORE_URI": "lakefs://", "AIRFLOW__REPRO__LAKEFS_CONN_ID": "lfs",
        "AIRFLOW__REPRO__LAKEFS_STORAGE_NAMESPACE": "s3://bucket/repro/", "AIRFLOW__REPRO__AIRFLOW_UI_URL":
        "http://airflow:8080/",
    })
    assert (by_option.store_conn_id, by_option.lakefs_storage_namespace) == ("lfs", "s3://bucket/repro")
    assert by_option.airflow_ui_url == "http://airflow:8080"
    assert ReproSettings.from_env({"AIRFLOW_HOME": "/a"}).store_kind == "local"


@pytest.mark.parametrize(("env", "message"), [
    ({"AIRFLOW__REPRO__STORE_URI": "s3://bucket"}, "lakefs://"),
    ({"AIRFLOW__REPRO__STORE_URI": "lakefs://key:secret@lakefs:8000"}, "never in the URI"),
    ({"AIRFLOW__REPRO__STORE_URI": "lakefs://conn/repo"}, "Airflow connection"),
    ({"AIRFLOW__REPRO__STORE_URI": "file://relative"}, "absolute"),
    ({"AIRFLOW__REPRO__LAKEFS_CONN_ID": "bad id!"}, "AIRFLOW__REPRO__LAKEFS_CONN_ID"),
    ({"AIRFLOW__REPRO__MLFLOW_CONN_ID": "a b"}, "AIRFLOW__REPRO__MLFLOW_CONN_ID"),
    ({"AIRFLOW__REPRO__LAKEFS_STORAGE_NAMESPACE": "/data"}, "AIRFLOW__REPRO__LAKEFS_STORAGE_NAMESPACE"),
    ({"AIRFLOW__REPRO__AIRFLOW_UI_URL": "localhost:8080"}, "AIRFLOW__REPRO__AIRFLOW_UI_URL"),
])
def test_invalid_store_settings_name_the_fix(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ReproSettings.from_env({"AIRFLOW_HOME": "/srv/airflow", **env})


def test_settings_hold_no_secret() -> None:
    settings = ReproSettings.from_env({
        "AIRFLOW_HOME": "/a", "AIRFLOW__REPRO__STORE_URI": "lakefs://", "LAKEFS_SECRET_ACCESS_KEY": "s3cr3t-value",
    })
    assert "s3cr3t-value" not in repr(settings)


@pytest.mark.parametrize("uri", [
    "lakefs://ak:s3cr3t-value@lakefs:8000", "lakefs://s3cr3t-value@lakefs_default",
    "s3://ak:s3cr3t-value@bucket", "file://ak:s3cr3t-value@host",
])
def test_a_store_uri_with_credentials_never_repeats_them(uri: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ReproSettings.from_env({"AIRFLOW_HOME": "/a", "AIRFLOW__REPRO__STORE_URI": uri})
    assert "s3cr3t-value" not in str(caught.value)


def test_a_lakefs_store_uri_with_credentials_says_where_they_go() -> None:
    with pytest.raises(ConfigError, match="login and password of that Airflow connection"):
        ReproSettings.from_env({"AIRFLOW_HOME": "/a", "AIRFLOW__REPRO__STORE_URI": "lakefs://ak:sk@lakefs"})


def test_an_unknown_tracking_uri_error_never_repeats_credentials() -> None:
    with pytest.raises(ConfigError) as caught:
        ReproSettings.from_env({"AIRFLOW_HOME": "/a", "AIRFLOW__REPRO__MLFLOW_TRACKING_URI": "ftp://u:s3cr3t-value@h"})
    assert "s3cr3t-value" not in str(caught.value) and "***@h" in str(caught.value)
