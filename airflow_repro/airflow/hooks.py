"""Airflow connections for lakeFS and MLflow: the Airflow way to configure the production backends.

Two connection types, registered through the provider metadata (``provider_info.py``):

* ``lakefs``: host = the lakeFS endpoint (``http://lakefs:8000``), login = access key id,
  password = secret access key. :class:`LakeFSHook` turns it into the lakeFS store.
* ``mlflow``: host (+ port, schema ``http``/``https``) = the MLflow tracking server.
  :class:`MlflowHook` turns it into a tracking URI.

The hooks translate; they decide nothing. Secrets stay in the connection: only the connection id is
ever written to settings, and the store's ``repr`` and commits never carry a credential.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from airflow.sdk import BaseHook

from airflow_repro.errors import ConfigError

if TYPE_CHECKING:
    from airflow_repro.adapters.lakefs_store import LakeFSConnection


def endpoint_url(host: str | None, port: int | None, schema: str | None, *, what: str, conn_id: str) -> str:
    """``http(s)://host:port`` from a connection's fields; ``host`` may already be a full URL.

    A host carrying ``user:password@`` is refused (without repeating it): the URL is logged, shown
    in errors and, for MLflow, recorded in manifests and passed to pods.
    """
    host = (host or "").strip()
    if not host:
        raise ConfigError(
            f"Airflow connection {conn_id!r} ({what}) has no host: set it to the server's address, "
            "e.g. http://lakefs:8000 (airflow connections add/edit, or AIRFLOW_CONN_<ID> as JSON/URI)"
        )
    authority = host.split("://", 1)[1] if "://" in host else host
    if "@" in authority.split("/", 1)[0]:
        where = (
            "set the access key id and secret access key as the connection's login and password"
            if what == "lakeFS"
            else "the tracking server must be reachable without credentials in its URL"
        )
        raise ConfigError(
            f"Airflow connection {conn_id!r} ({what}): the host contains credentials (user:password@), which would "
            f"be logged and recorded; remove them from the host and {where}"
        )
    if "://" in host:
        parsed = urlparse(host)
        if parsed.scheme not in ("http", "https"):
            raise ConfigError(f"Airflow connection {conn_id!r} ({what}): host {host!r} must be an http(s) URL")
        netloc = parsed.netloc
        if port and not parsed.port:
            netloc = f"{netloc}:{port}"
        return f"{parsed.scheme}://{netloc}{parsed.path}".rstrip("/")
    scheme = schema if schema in ("http", "https") else "http"
    return f"{scheme}://{host}" + (f":{port}" if port else "")


class LakeFSHook(BaseHook):
    """The ``lakefs`` connection type: endpoint and credentials of a lakeFS server."""

    conn_name_attr = "lakefs_conn_id"
    default_conn_name = "lakefs_default"
    conn_type = "lakefs"
    hook_name = "lakeFS"

    def __init__(self, lakefs_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lakefs_conn_id = lakefs_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "port", "extra"],
            "relabeling": {"host": "lakeFS endpoint", "login": "Access key ID", "password": "Secret access key"},
            "placeholders": {"host": "http://lakefs:8000", "login": "AKIA...", "password": "secret access key"},
        }

    def get_conn(self) -> LakeFSConnection:
        """The endpoint and credentials (a value object whose ``repr`` hides the secret)."""
        from airflow_repro.adapters.lakefs_store import LakeFSConnection

        conn = self.get_connection(self.lakefs_conn_id)
        endpoint = endpoint_url(conn.host, conn.port, conn.schema, what="lakeFS", conn_id=self.lakefs_conn_id)
        if not conn.login or not conn.password:
            raise ConfigError(
                f"Airflow connection {self.lakefs_conn_id!r} (lakeFS at {endpoint}) has no credentials: set login to "
                "the access key id and password to the secret access key"
            )
        return LakeFSConnection(endpoint, conn.login, conn.password)

    def test_connection(self) -> tuple[bool, str]:
        """The UI's "Test" button: list repositories with the given credentials."""
        from airflow_repro.errors import ReproError

        try:
            conn = self.get_conn()
            from airflow_repro.adapters.lakefs_store import translate_errors

            client = conn.client()
            with translate_errors("testing the connection", endpoint=conn.endpoint):
                client.sdk_client.repositories_api.list_repositories(amount=1)
        except ReproError as exc:
            return False, str(exc)
        return True, f"lakeFS at {conn.endpoint} accepted the credentials"


class MlflowHook(BaseHook):
    """The ``mlflow`` connection type: where the MLflow tracking server is."""

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow tracking server"

    def __init__(self, mlflow_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        # The trackers talk to an unauthenticated tracking server (behind the network's own access
        # control), so login/password are hidden rather than accepted and silently ignored.
        return {
            "hidden_fields": ["login", "password", "extra"],
            "relabeling": {"host": "Tracking server host or URL", "schema": "Scheme (http or https)"},
            "placeholders": {"host": "mlflow", "port": "5000", "schema": "http"},
        }

    def get_tracking_uri(self) -> str:
        conn = self.get_connection(self.mlflow_conn_id)
        return endpoint_url(conn.host, conn.port, conn.schema, what="MLflow", conn_id=self.mlflow_conn_id)

    def get_conn(self) -> str:
        return self.get_tracking_uri()


def get_connection_or_none(conn_id: str) -> Any | None:
    """The Airflow connection ``conn_id``, or ``None`` when no secrets backend knows it."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


class AirflowConnections:
    """Connection ids resolved through Airflow: the :class:`airflow_repro.backends.Connections`
    the composition root uses (secrets backends, ``AIRFLOW_CONN_*``, the metadata DB)."""

    def lakefs(self, conn_id: str) -> LakeFSConnection | None:
        if get_connection_or_none(conn_id) is None:
            return None
        return LakeFSHook(conn_id).get_conn()

    def mlflow_tracking_uri(self, conn_id: str) -> str | None:
        if get_connection_or_none(conn_id) is None:
            return None
        return MlflowHook(conn_id).get_tracking_uri()


__all__ = ["AirflowConnections", "LakeFSHook", "MlflowHook", "endpoint_url", "get_connection_or_none"]
