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
    settings = ReproSettings.from_env(
        {
            "AIRFLOW__REPRO__HOME": "/data/r",
            "AIRFLOW__REPRO__REPOSITORY": "ml-data",
            "AIRFLOW__REPRO__MLFLOW_TRACKING_URI": "http://mlflow:5000",
        }
    )
    assert settings.work_dir == Path("/data/r/work") and settings.repository == "ml-data"
    assert settings.mlflow_tracking_uri == "http://mlflow:5000"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AIRFLOW__REPRO__HOME": "relative/dir"}, "absolute path"),
        ({"AIRFLOW__REPRO__REPOSITORY": "Bad_Name"}, "repository name"),
        ({"AIRFLOW__REPRO__DEFAULT_BRANCH": "a/b"}, "branch name"),
        ({"AIRFLOW__REPRO__MLFLOW_TRACKING_URI": "ftp://x"}, "AIRFLOW__REPRO__MLFLOW_TRACKING_URI"),
    ],
)
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
    by_option = ReproSettings.from_env(
        {
            "AIRFLOW_HOME": "/a",
            "AIRFLOW__REPRO__STORE_URI": "lakefs://",
            "AIRFLOW__REPRO__LAKEFS_CONN_ID": "lfs",
            "AIRFLOW__REPRO__LAKEFS_STORAGE_NAMESPACE": "s3://bucket/repro/",
            "AIRFLOW__REPRO__AIRFLOW_UI_URL": "http://airflow:8080/",
        }
    )
    assert (by_option.store_conn_id, by_option.lakefs_storage_namespace) == ("lfs", "s3://bucket/repro")
    assert by_option.airflow_ui_url == "http://airflow:8080"
    assert ReproSettings.from_env({"AIRFLOW_HOME": "/a"}).store_kind == "local"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AIRFLOW__REPRO__STORE_URI": "s3://bucket"}, "lakefs://"),
        ({"AIRFLOW__REPRO__STORE_URI": "lakefs://key:secret@lakefs:8000"}, "never in the URI"),
        ({"AIRFLOW__REPRO__STORE_URI": "lakefs://conn/repo"}, "Airflow connection"),
        ({"AIRFLOW__REPRO__STORE_URI": "file://relative"}, "absolute"),
        ({"AIRFLOW__REPRO__LAKEFS_CONN_ID": "bad id!"}, "AIRFLOW__REPRO__LAKEFS_CONN_ID"),
        ({"AIRFLOW__REPRO__MLFLOW_CONN_ID": "a b"}, "AIRFLOW__REPRO__MLFLOW_CONN_ID"),
        ({"AIRFLOW__REPRO__LAKEFS_STORAGE_NAMESPACE": "/data"}, "AIRFLOW__REPRO__LAKEFS_STORAGE_NAMESPACE"),
        ({"AIRFLOW__REPRO__AIRFLOW_UI_URL": "localhost:8080"}, "AIRFLOW__REPRO__AIRFLOW_UI_URL"),
    ],
)
def test_invalid_store_settings_name_the_fix(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ReproSettings.from_env({"AIRFLOW_HOME": "/srv/airflow", **env})


def test_settings_hold_no_secret() -> None:
    settings = ReproSettings.from_env(
        {
            "AIRFLOW_HOME": "/a",
            "AIRFLOW__REPRO__STORE_URI": "lakefs://",
            "LAKEFS_SECRET_ACCESS_KEY": "s3cr3t-value",
        }
    )
    assert "s3cr3t-value" not in repr(settings)


@pytest.mark.parametrize(
    "uri",
    [
        "lakefs://ak:s3cr3t-value@lakefs:8000",
        "lakefs://s3cr3t-value@lakefs_default",
        "s3://ak:s3cr3t-value@bucket",
        "file://ak:s3cr3t-value@host",
    ],
)
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


# ---- one table of options ----------------------------------------------------------------------


def test_the_table_makes_the_settings_object_and_the_provider_section() -> None:
    from dataclasses import MISSING, fields

    from airflow_repro.airflow.provider_info import config_section
    from airflow_repro.config import OPTIONS, SENSITIVE_OPTIONS

    assert [f.name for f in fields(ReproSettings)] == [name for name in OPTIONS if name not in SENSITIVE_OPTIONS]
    for f in fields(ReproSettings):  # a literal default is written once: in the table
        if f.default is not MISSING:
            assert f.default == OPTIONS[f.name].default, f.name
    section = config_section()["options"]
    assert list(section) == list(OPTIONS)
    for name, option in OPTIONS.items():
        assert section[name]["default"] == option.default, name
        assert section[name].get("sensitive", False) is option.sensitive, name


def test_a_sensitive_option_is_in_the_table_but_never_in_the_settings() -> None:
    from dataclasses import fields

    from airflow_repro.airflow.provider_info import config_section
    from airflow_repro.config import OPTIONS, SENSITIVE_OPTIONS

    assert OPTIONS["secret_digest_key"].sensitive and set(SENSITIVE_OPTIONS) == {"secret_digest_key"}
    assert config_section()["options"]["secret_digest_key"]["sensitive"] is True
    assert "secret_digest_key" not in {f.name for f in fields(ReproSettings)}
    settings = ReproSettings.from_env({"AIRFLOW_HOME": "/a", "AIRFLOW__REPRO__SECRET_DIGEST_KEY": "s3cr3t-value"})
    assert "s3cr3t-value" not in repr(settings)
    with pytest.raises(ValueError, match="secret_digest_key"):
        ReproSettings.from_env({"AIRFLOW_HOME": "/a"}, overrides={"secret_digest_key": "s3cr3t-value"})


def test_execution_and_the_work_volume_claim_are_settings() -> None:
    defaults = ReproSettings.from_env({"AIRFLOW_HOME": "/a"})
    assert (defaults.execution, defaults.k8s_work_volume_claim) == ("local", None)
    set_ = ReproSettings.from_env(
        {
            "AIRFLOW_HOME": "/a",
            "AIRFLOW__REPRO__EXECUTION": " Kubernetes ",
            "AIRFLOW__REPRO__K8S_WORK_VOLUME_CLAIM": "repro-work",
        }
    )
    assert (set_.execution, set_.k8s_work_volume_claim) == ("kubernetes", "repro-work")
    with pytest.raises(ConfigError, match=r"'cluster' is not one of .*AIRFLOW__REPRO__EXECUTION"):
        ReproSettings.from_env({"AIRFLOW_HOME": "/a", "AIRFLOW__REPRO__EXECUTION": "cluster"})


def test_an_override_wins_and_what_is_computed_from_it_follows() -> None:
    env = {"AIRFLOW_HOME": "/a", "AIRFLOW__REPRO__HOME": "/from/env", "AIRFLOW__REPRO__WORK_DIR": "/scratch"}
    settings = ReproSettings.from_env(env, overrides={"home": "/over"})
    assert settings.home == Path("/over") and settings.store_root == Path("/over/store")
    assert settings.work_dir == Path("/scratch"), "an option set explicitly is not computed from home"
    assert ReproSettings.from_env(env, overrides={"home": None}).home == Path("/from/env")
    with pytest.raises(ValueError, match="no such"):
        ReproSettings.from_env(env, overrides={"hoem": "/x"})


def test_the_ui_url_falls_back_to_airflows_base_url() -> None:
    base = {"AIRFLOW_HOME": "/a", "AIRFLOW__API__BASE_URL": "http://airflow.example:8080/"}
    assert ReproSettings.from_env(base).airflow_ui_url == "http://airflow.example:8080"
    own = ReproSettings.from_env({**base, "AIRFLOW__REPRO__AIRFLOW_UI_URL": "https://ui.example"})
    assert own.airflow_ui_url == "https://ui.example"
    assert ReproSettings.from_env({**base, "AIRFLOW__API__BASE_URL": "/airflow"}).airflow_ui_url is None


def test_airflows_config_resolves_like_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Airflow's conf reads ``AIRFLOW__REPRO__*`` first; its ``[api] base_url`` is the UI fallback."""
    monkeypatch.setenv("AIRFLOW__REPRO__REPOSITORY", "ml-data")
    monkeypatch.setenv("AIRFLOW__REPRO__EXECUTION", "kubernetes")
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.example:8080")
    monkeypatch.delenv("AIRFLOW__REPRO__AIRFLOW_UI_URL", raising=False)
    monkeypatch.delenv("AIRFLOW__REPRO__STORE_URI", raising=False)
    settings = ReproSettings.from_airflow_conf({"home": str(tmp_path)})
    assert (settings.home, settings.store_root) == (tmp_path, tmp_path / "store")
    assert (settings.repository, settings.execution) == ("ml-data", "kubernetes")
    assert settings.airflow_ui_url == "http://airflow.example:8080"


def test_one_option_alone_from_airflows_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """``execution`` is read when a DAG is parsed: a problem in another option must not stop it."""
    from airflow_repro.config import airflow_option

    monkeypatch.setenv("AIRFLOW__REPRO__HOME", "relative/dir")  # would fail the whole settings
    monkeypatch.delenv("AIRFLOW__REPRO__EXECUTION", raising=False)
    monkeypatch.delenv("AIRFLOW__REPRO__K8S_WORK_VOLUME_CLAIM", raising=False)
    assert airflow_option("execution") == "local" and airflow_option("k8s_work_volume_claim") is None
    monkeypatch.setenv("AIRFLOW__REPRO__EXECUTION", "KUBERNETES")
    monkeypatch.setenv("AIRFLOW__REPRO__K8S_WORK_VOLUME_CLAIM", "repro-work")
    assert airflow_option("execution") == "kubernetes" and airflow_option("k8s_work_volume_claim") == "repro-work"
    monkeypatch.setenv("AIRFLOW__REPRO__EXECUTION", "cluster")
    with pytest.raises(ConfigError, match="AIRFLOW__REPRO__EXECUTION"):
        airflow_option("execution")
    with pytest.raises(ConfigError, match="absolute path"):
        airflow_option("work_dir")  # computed from home: resolved with it
    with pytest.raises(ValueError, match="sensitive"):
        airflow_option("secret_digest_key")
