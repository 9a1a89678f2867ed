"""The Reproducibility tab's plugin entry and its [repro] options (links a browser may open)."""

from __future__ import annotations

import pytest

from airflow_repro.config import ReproSettings
from airflow_repro.errors import ConfigError

BASE = {"AIRFLOW__REPRO__HOME": "/srv/repro"}


def settings(**options: str) -> ReproSettings:
    return ReproSettings.from_env({**BASE, **{f"AIRFLOW__REPRO__{k.upper()}": v for k, v in options.items()}})


def test_mlflow_links_follow_an_http_tracking_uri_without_its_credentials() -> None:
    assert settings(mlflow_tracking_uri="http://user:pw@mlflow.example:5000/").mlflow_ui_url == (
        "http://mlflow.example:5000"
    )
    assert settings().mlflow_ui_url is None  # sqlite: no UI to link to
    assert settings(mlflow_tracking_uri="http://mlflow.ml.svc:5000", mlflow_ui_url="none").mlflow_ui_url is None
    own = settings(mlflow_tracking_uri="http://mlflow.ml.svc:5000", mlflow_ui_url="https://mlflow.example.com/")
    assert own.mlflow_ui_url == "https://mlflow.example.com"


@pytest.mark.parametrize("option", ["mlflow_ui_url", "lakefs_ui_url"])
@pytest.mark.parametrize("value", ["mlflow.example.com", "ftp://host", "https://user:secret@host"])
def test_a_link_address_a_browser_cannot_open_is_refused_with_the_fix(option: str, value: str) -> None:
    with pytest.raises(ConfigError) as error:
        settings(**{option: value})
    message = str(error.value)
    assert f"[repro] {option}" in message and "http(s) address" in message
    assert "secret" not in message  # credentials are not repeated


def test_lakefs_links_are_off_unless_configured() -> None:
    assert settings().lakefs_ui_url is None
    assert settings(lakefs_ui_url="https://lakefs.example.com/").lakefs_ui_url == "https://lakefs.example.com"


def test_the_plugin_adds_the_tab_with_a_relative_address() -> None:
    from airflow_repro.airflow.plugin import ReproPlugin

    (view,) = ReproPlugin.external_views
    assert (view["name"], view["destination"], view["url_route"]) == ("Reproducibility", "dag_run", "airflow-repro")
    # relative (resolved against the UI's <base href>: base_url sub-paths hold); Airflow fills the ids in
    assert view["href"] == "repro/ui/run.html?dag_id={DAG_ID}&run_id={RUN_ID}"
