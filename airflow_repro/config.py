"""Settings of airflow-repro: one typed object, resolved at call time, never at import.

Each option lives in Airflow's ``[repro]`` config section, so it can be set the Airflow way: in
``airflow.cfg`` or as ``AIRFLOW__REPRO__<OPTION>`` environment variables. Outside Airflow (the
``airflow-repro`` CLI, tests) the same environment variables are read directly.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from airflow_repro.core.naming import validate_branch_name, validate_repository_name
from airflow_repro.errors import ConfigError, InvalidNameError

SECTION = "repro"

#: option -> (default description, help) ; also exported as provider metadata.
OPTIONS: dict[str, tuple[str, str]] = {
    "home": ("$AIRFLOW_HOME/repro", "Folder of the embedded store, MLflow DB and task workspaces."),
    "store_uri": (
        "file://<home>/store",
        "Versioned data store: file:///abs/folder for the embedded store; lakefs:// for lakeFS through the "
        "Airflow connection named by lakefs_conn_id, or lakefs://<conn_id> to name the connection here.",
    ),
    "lakefs_conn_id": (
        "lakefs_default",
        "Airflow connection (type lakefs) with the lakeFS endpoint as host, the access key id as login and "
        "the secret access key as password. Outside Airflow, LAKEFS_ENDPOINT, LAKEFS_ACCESS_KEY_ID and "
        "LAKEFS_SECRET_ACCESS_KEY are used when the connection does not exist.",
    ),
    "lakefs_storage_namespace": (
        "local://repro",
        "Where lakeFS repositories created by airflow-repro keep their data: <namespace>/<repository> "
        "(local://... for lakeFS's local blockstore, s3://bucket/prefix, gs://..., https://<account>.blob...).",
    ),
    "airflow_ui_url": (
        "[api] base_url",
        "Base URL of the Airflow UI, for the lakeFS UI button on each commit that links back to the Airflow run.",
    ),
    "mlflow_conn_id": (
        "",
        "Airflow connection (type mlflow) whose host/port give the MLflow tracking server; when set it "
        "replaces mlflow_tracking_uri.",
    ),
    "repository": ("repro", "Repository that tasks write their outputs to unless they name one."),
    "default_branch": ("main", "Branch that run branches are created from."),
    "mlflow_tracking_uri": (
        "sqlite:///<home>/mlflow.db",
        "MLflow tracking URI: http(s)://host:port for a tracking server (fast: tasks never import "
        "mlflow), or sqlite:////abs/path.db (tasks import mlflow, a few seconds each).",
    ),
    "execution": (
        "local",
        "Where @repro_task tasks run: local (a process on the worker, in a pinned environment) or "
        "kubernetes (a pod from the task's image pinned by digest). Read when the DAG is parsed.",
    ),
    "k8s_work_volume_claim": (
        "",
        "PersistentVolumeClaim (ReadWriteMany) mounted at work_dir on the workers and in task pods, "
        "through which pods hand their outputs to the worker that records them.",
    ),
    "secret_digest_key": (
        "[core] fernet_key, else a key file <home>/secret_digest.key",
        "Key of the HMAC that stands for each secret in what is recorded (params, conf), so a replay can "
        "check a secret is unchanged without storing it. Set the same value on every component "
        "(workers, API server, CLI); sensitive: use AIRFLOW__REPRO__SECRET_DIGEST_KEY_SECRET or _CMD.",
    ),
    "venv_cache": ("<home>/venvs", "Where virtualenvs built from task lockfiles are cached."),
    "work_dir": ("<home>/work", "Scratch space of running task attempts (inputs, staged outputs)."),
}

#: options whose values are secrets (Airflow then allows ``_cmd``/``_secret`` variants and hides them).
SENSITIVE_OPTIONS = frozenset({"secret_digest_key"})

STORE_SCHEMES = ("file", "lakefs")
NAMESPACE_SCHEMES = ("local", "s3", "gs", "azure", "https", "http", "mem")
#: Airflow's own rule for connection ids (letters, digits, '_', '-', '.', '~' ... kept simple here).
_CONN_ID_RE = re.compile(r"^[A-Za-z0-9_.~-]{1,250}\Z")


@dataclass(frozen=True)
class ReproSettings:
    """The ``[repro]`` settings. Names of credentials (connection ids) only: never a secret."""

    home: Path
    store_uri: str
    repository: str
    default_branch: str
    mlflow_tracking_uri: str
    venv_cache: Path
    work_dir: Path
    lakefs_conn_id: str = "lakefs_default"
    lakefs_storage_namespace: str = "local://repro"
    airflow_ui_url: str | None = None
    mlflow_conn_id: str | None = None

    @property
    def store_kind(self) -> str:
        """``"local"`` (embedded store) or ``"lakefs"``."""
        return "lakefs" if urlparse(self.store_uri).scheme == "lakefs" else "local"

    @property
    def store_root(self) -> Path:
        """Root folder of the embedded store (``file://`` store URIs only)."""
        parsed = urlparse(self.store_uri)
        if parsed.scheme not in ("", "file"):
            raise ConfigError(
                f"[repro] store_uri {self.store_uri!r} is not an embedded store, so it has no folder; "
                "use file:///absolute/folder for the embedded store"
            )
        return Path(parsed.path if parsed.scheme == "file" else self.store_uri)

    @property
    def store_conn_id(self) -> str:
        """The Airflow connection of the lakeFS store: ``lakefs://<conn_id>``, else ``lakefs_conn_id``."""
        return urlparse(self.store_uri).netloc or self.lakefs_conn_id

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ReproSettings:
        env = os.environ if environ is None else environ
        return cls.resolve(lambda option: env.get(f"AIRFLOW__REPRO__{option.upper()}"), env)

    @classmethod
    def from_airflow_conf(cls) -> ReproSettings:
        from airflow.configuration import conf

        def get(option: str) -> str | None:
            value = conf.get(SECTION, option, fallback=None) or None
            if option == "airflow_ui_url" and value is None:
                # Falls back to Airflow's own UI address, when that is a full URL (it may be a bare path).
                base = conf.get("api", "base_url", fallback=None) or ""
                value = base if urlparse(base).scheme in ("http", "https") else None
            return value

        return cls.resolve(get, os.environ)

    @classmethod
    def resolve(cls, get: Callable[[str], str | None], env: os._Environ[str] | dict[str, str]) -> ReproSettings:
        airflow_home = Path(env.get("AIRFLOW_HOME") or Path.home() / "airflow")
        home = _absolute("home", get("home") or str(airflow_home / "repro"))
        repository = get("repository") or "repro"
        branch = get("default_branch") or "main"
        try:
            validate_repository_name(repository)
            validate_branch_name(branch)
        except InvalidNameError as exc:
            raise ConfigError(f"[repro] setting is invalid: {exc}") from exc
        tracking = get("mlflow_tracking_uri") or f"sqlite:///{home / 'mlflow.db'}"
        _check_tracking_uri(tracking)
        store_uri = get("store_uri") or f"file://{home / 'store'}"
        _check_store_uri(store_uri)
        lakefs_conn_id = _conn_id("lakefs_conn_id", get("lakefs_conn_id") or "lakefs_default")
        mlflow_conn_id = get("mlflow_conn_id")
        return cls(
            home=home,
            store_uri=store_uri,
            repository=repository,
            default_branch=branch,
            mlflow_tracking_uri=tracking,
            venv_cache=_absolute("venv_cache", get("venv_cache") or str(home / "venvs")),
            work_dir=_absolute("work_dir", get("work_dir") or str(home / "work")),
            lakefs_conn_id=lakefs_conn_id,
            lakefs_storage_namespace=_storage_namespace(get("lakefs_storage_namespace") or "local://repro"),
            airflow_ui_url=_ui_url(get("airflow_ui_url")),
            mlflow_conn_id=_conn_id("mlflow_conn_id", mlflow_conn_id) if mlflow_conn_id else None,
        )


def _absolute(option: str, value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_absolute():
        raise ConfigError(
            f"[repro] {option} must be an absolute path, got {value!r} "
            f"(set AIRFLOW__REPRO__{option.upper()}=/absolute/path)"
        )
    return path


def _redacted(uri: str) -> str:
    """``uri`` for an error message: any ``user:password@`` replaced by ``***@``."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    return f"{scheme}://{authority}{slash}{tail}"


def _check_tracking_uri(uri: str) -> None:
    scheme = urlparse(uri).scheme
    if scheme not in ("http", "https", "sqlite", "file"):
        raise ConfigError(
            f"[repro] mlflow_tracking_uri {_redacted(uri)!r} is not a tracking URI MLflow accepts here: use "
            "http(s)://host:port or sqlite:////absolute/path.db "
            "(set AIRFLOW__REPRO__MLFLOW_TRACKING_URI)"
        )


def _check_store_uri(uri: str) -> None:
    parsed = urlparse(uri)
    if parsed.scheme == "" and Path(uri).is_absolute():
        return  # a bare absolute folder: the embedded store
    if parsed.scheme not in STORE_SCHEMES:
        raise ConfigError(
            f"[repro] store_uri {_redacted(uri)!r} names no store airflow-repro knows: use file:///absolute/folder for the "
            "embedded store or lakefs:// for lakeFS (set AIRFLOW__REPRO__STORE_URI)"
        )
    if parsed.scheme == "file" and not Path(parsed.path).is_absolute():
        raise ConfigError(f"[repro] store_uri {_redacted(uri)!r} must name an absolute folder: file:///absolute/folder")
    if parsed.scheme == "lakefs":
        if "@" in parsed.netloc:
            raise ConfigError(
                "[repro] store_uri contains credentials (user:password@): write lakefs:// (or "
                "lakefs://<airflow_conn_id>) and set the access key id and secret access key as login and password "
                "of that Airflow connection, never in the URI (set AIRFLOW__REPRO__STORE_URI)"
            )
        if parsed.path not in ("", "/") or parsed.query:
            raise ConfigError(
                f"[repro] store_uri {uri!r}: write lakefs:// (or lakefs://<airflow_conn_id>) and keep the endpoint "
                "and credentials in that Airflow connection, never in the URI"
            )
        if parsed.netloc:
            _conn_id("store_uri", parsed.netloc)


def _conn_id(option: str, value: str) -> str:
    if not _CONN_ID_RE.match(value):
        raise ConfigError(
            f"[repro] {option} {value!r} is not a valid Airflow connection id: use letters, digits, '_', '-' or '.' "
            f"(set AIRFLOW__REPRO__{option.upper()})"
        )
    return value


def _storage_namespace(value: str) -> str:
    scheme = urlparse(value).scheme
    if scheme not in NAMESPACE_SCHEMES or not urlparse(value).netloc and not urlparse(value).path.strip("/"):
        raise ConfigError(
            f"[repro] lakefs_storage_namespace {value!r} is not a lakeFS storage namespace: use local://<folder> "
            "(local blockstore), s3://bucket/prefix, gs://bucket/prefix or https://<account>.blob.core.windows.net/"
            "<container>/<prefix> (set AIRFLOW__REPRO__LAKEFS_STORAGE_NAMESPACE)"
        )
    return value.rstrip("/")


def _ui_url(value: str | None) -> str | None:
    if not value:
        return None
    if urlparse(value).scheme not in ("http", "https") or not urlparse(value).netloc:
        raise ConfigError(
            f"[repro] airflow_ui_url {value!r} must be the http(s) address of the Airflow UI, e.g. "
            "http://localhost:8080 (set AIRFLOW__REPRO__AIRFLOW_UI_URL)"
        )
    return value.rstrip("/")
