"""Airflow connections for lakeFS and MLflow, provider metadata, and choosing the store by settings."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import airflow
import jsonschema
import pytest

from airflow_repro.adapters.lakefs_store import LakeFSConnection, LakeFSStore
from airflow_repro.airflow.hooks import AirflowConnections, LakeFSHook, MlflowHook
from airflow_repro.airflow.provider_info import get_provider_info
from airflow_repro.backends import Backends, build_store, tracking_uri
from airflow_repro.config import OPTIONS, ReproSettings
from airflow_repro.errors import ConfigError
from tests.doubles.lakefs_double import ACCESS_KEY_ID, SECRET_ACCESS_KEY, LakeFSDouble

AIRFLOW_DIR = Path(airflow.__file__).parent


def lakefs_conn(host: str, login: str = ACCESS_KEY_ID, password: str = SECRET_ACCESS_KEY) -> str:
    return json.dumps({"conn_type": "lakefs", "host": host, "login": login, "password": password})


@pytest.fixture(autouse=True)
def no_lakefs_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LAKEFS_ENDPOINT", "LAKEFS_ACCESS_KEY_ID", "LAKEFS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)


def test_provider_info_is_valid_for_airflow_and_exports_every_repro_option() -> None:
    info = get_provider_info()
    schema_file = AIRFLOW_DIR / "provider_info.schema.json"
    if not schema_file.exists():
        pytest.skip(f"the installed Airflow has no {schema_file.name} to validate against")
    jsonschema.validate(info, json.loads(schema_file.read_text()))
    assert {c["connection-type"] for c in info["connection-types"]} == {"lakefs", "mlflow"}
    options = info["config"]["repro"]["options"]
    assert set(options) == set(OPTIONS)
    assert options["repository"]["default"] == "repro"
    assert options["home"]["default"] is None  # computed from AIRFLOW_HOME: never a literal "<home>"


def test_the_provider_entry_point_is_installed() -> None:
    (entry,) = [e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("airflow_repro")]
    assert entry.load() is get_provider_info


def test_airflow_registers_both_connection_types() -> None:
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    hooks = ProvidersManagerTaskRuntime().hooks
    assert hooks["lakefs"].hook_class_name == "airflow_repro.airflow.hooks.LakeFSHook"  # type: ignore[union-attr]
    assert hooks["mlflow"].hook_class_name == "airflow_repro.airflow.hooks.MlflowHook"  # type: ignore[union-attr]


@pytest.mark.parametrize("hook", [LakeFSHook, MlflowHook])
def test_ui_field_behaviour_follows_airflows_schema(hook: type) -> None:
    schema = json.loads((AIRFLOW_DIR / "customized_form_field_behaviours.schema.json").read_text())
    behaviour = hook.get_ui_field_behaviour()
    jsonschema.validate(behaviour, schema)
    assert "extra" in behaviour["hidden_fields"]


def test_lakefs_connection_builds_the_store(monkeypatch: pytest.MonkeyPatch, lakefs_double: LakeFSDouble) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_LAKEFS_DEFAULT", lakefs_conn(lakefs_double.url))
    settings = ReproSettings.from_env({"AIRFLOW_HOME": "/a", "AIRFLOW__REPRO__STORE_URI": "lakefs://"})
    store = build_store(settings)
    assert isinstance(store, LakeFSStore) and store.endpoint == f"{lakefs_double.url}/api/v1"
    assert store.create_repository("from-conn").name == "from-conn"  # the credentials work
    assert LakeFSHook().test_connection()[0]


def test_lakefs_connection_host_and_port_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_LFS",
        json.dumps(
            {
                "conn_type": "lakefs",
                "host": "lakefs",
                "port": 8000,
                "login": ACCESS_KEY_ID,
                "password": SECRET_ACCESS_KEY,
            }
        ),
    )
    assert LakeFSHook("lfs").get_conn().endpoint == "http://lakefs:8000"


def test_lakefs_connection_without_credentials_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_LAKEFS_DEFAULT", lakefs_conn("http://lakefs:8000", login="", password=""))
    with pytest.raises(ConfigError, match="access key id"):
        LakeFSHook().get_conn()


def test_no_connection_and_no_environment_says_how_to_configure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NOWHERE", raising=False)
    settings = ReproSettings.from_env({"AIRFLOW_HOME": "/a", "AIRFLOW__REPRO__STORE_URI": "lakefs://nowhere"})
    with pytest.raises(ConfigError, match=r"no Airflow connection 'nowhere'.*AIRFLOW_CONN_NOWHERE.*LAKEFS_ENDPOINT"):
        build_store(settings)


def test_lakefs_environment_outside_airflow(monkeypatch: pytest.MonkeyPatch, lakefs_double: LakeFSDouble) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_LAKEFS_DEFAULT", raising=False)
    monkeypatch.setenv("LAKEFS_ENDPOINT", lakefs_double.url)
    monkeypatch.setenv("LAKEFS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("LAKEFS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    store = build_store(ReproSettings.from_env({"AIRFLOW_HOME": "/a", "AIRFLOW__REPRO__STORE_URI": "lakefs://"}))
    assert store.list_repositories() == []


def test_mlflow_connection_gives_the_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_PROD", json.dumps({"conn_type": "mlflow", "host": "mlflow", "port": 5000}))
    settings = ReproSettings.from_env({"AIRFLOW_HOME": "/a", "AIRFLOW__REPRO__MLFLOW_CONN_ID": "mlflow_prod"})
    assert tracking_uri(settings) == "http://mlflow:5000"
    assert MlflowHook("mlflow_prod").get_conn() == "http://mlflow:5000"
    missing = ReproSettings.from_env({"AIRFLOW_HOME": "/a", "AIRFLOW__REPRO__MLFLOW_CONN_ID": "mlflow_none"})
    with pytest.raises(ConfigError, match="mlflow_none"):
        tracking_uri(missing)


@pytest.mark.parametrize(
    ("host", "port"),
    [
        ("http://ak:s3cr3t-value@lakefs:8000", None),
        ("http://ak:s3cr3t-value@lakefs", 8000),
        ("ak:s3cr3t-value@lakefs", 8000),
        ("https://s3cr3t-value@lakefs/api", None),
    ],
)
def test_a_lakefs_host_with_credentials_is_refused_without_repeating_them(
    monkeypatch: pytest.MonkeyPatch, host: str, port: int | None
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_LFS_USERINFO",
        json.dumps(
            {
                "conn_type": "lakefs",
                "host": host,
                "port": port,
                "login": ACCESS_KEY_ID,
                "password": SECRET_ACCESS_KEY,
            }
        ),
    )
    with pytest.raises(ConfigError, match="login and password") as caught:
        LakeFSHook("lfs_userinfo").get_conn()
    assert "s3cr3t-value" not in str(caught.value)
    ok, message = LakeFSHook("lfs_userinfo").test_connection()
    assert not ok and "s3cr3t-value" not in message


@pytest.mark.parametrize(
    ("host", "port"), [("http://u:s3cr3t-value@mlflow:5000", None), ("http://u:s3cr3t-value@mlflow", 5000)]
)
def test_an_mlflow_host_with_credentials_is_refused(
    monkeypatch: pytest.MonkeyPatch, host: str, port: int | None
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_USERINFO", json.dumps({"conn_type": "mlflow", "host": host, "port": port}))
    with pytest.raises(ConfigError) as caught:
        MlflowHook("mlflow_userinfo").get_tracking_uri()
    assert "s3cr3t-value" not in str(caught.value) and "credentials" in str(caught.value)


def test_a_full_url_host_keeps_its_path_and_gets_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_PATH",
        json.dumps({"conn_type": "mlflow", "host": "https://Tracking.example/mlflow/", "port": 8443}),
    )
    assert MlflowHook("mlflow_path").get_tracking_uri() == "https://Tracking.example:8443/mlflow"


class FakeConnections:
    """The composition root's connection seam without Airflow: a dict of connection ids."""

    def __init__(self, lakefs: dict[str, LakeFSConnection] | None = None, mlflow: dict[str, str] | None = None):
        self.lakefs_conns, self.mlflow_uris = lakefs or {}, mlflow or {}
        self.asked: list[str] = []

    def lakefs(self, conn_id: str) -> LakeFSConnection | None:
        self.asked.append(conn_id)
        return self.lakefs_conns.get(conn_id)

    def mlflow_tracking_uri(self, conn_id: str) -> str | None:
        self.asked.append(conn_id)
        return self.mlflow_uris.get(conn_id)


def test_backends_resolve_connection_ids_through_the_seam(lakefs_double: LakeFSDouble) -> None:
    fake = FakeConnections(
        lakefs={"lfs": LakeFSConnection(lakefs_double.url, ACCESS_KEY_ID, SECRET_ACCESS_KEY)},
        mlflow={"ml": "http://mlflow.example:5000"},
    )
    settings = ReproSettings.from_env(
        {"AIRFLOW_HOME": "/a", "AIRFLOW__REPRO__STORE_URI": "lakefs://lfs", "AIRFLOW__REPRO__MLFLOW_CONN_ID": "ml"}
    )
    backends = Backends.from_settings(settings, connections=fake)
    assert isinstance(backends.store, LakeFSStore) and backends.store.endpoint == f"{lakefs_double.url}/api/v1"
    assert backends.store.create_repository("via-seam").name == "via-seam"
    assert type(backends.tracker()).__name__ == "MlflowRestTracker" and fake.asked == ["lfs", "ml"]
    with pytest.raises(ConfigError, match="no Airflow connection 'nowhere'"):
        build_store(
            ReproSettings.from_env({"AIRFLOW_HOME": "/a", "AIRFLOW__REPRO__STORE_URI": "lakefs://nowhere"}),
            connections=fake,
        )


def test_airflow_connections_are_the_default_seam(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_LFS_SEAM", lakefs_conn("http://lakefs:8000"))
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_SEAM", json.dumps({"conn_type": "mlflow", "host": "mlflow", "port": 5000}))
    monkeypatch.delenv("AIRFLOW_CONN_MISSING_SEAM", raising=False)
    connections = AirflowConnections()
    assert connections.lakefs("lfs_seam") == LakeFSConnection("http://lakefs:8000", ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    assert connections.mlflow_tracking_uri("mlflow_seam") == "http://mlflow:5000"
    assert connections.lakefs("missing_seam") is None and connections.mlflow_tracking_uri("missing_seam") is None
