"""Settings of airflow-repro: one typed object, resolved at call time, never at import.

Each option lives in Airflow's ``[repro]`` config section, so it can be set the Airflow way: in
``airflow.cfg`` or as ``AIRFLOW__REPRO__<OPTION>`` environment variables. Outside Airflow (the
``airflow-repro`` CLI, tests) the same environment variables are read directly.
"""

from __future__ import annotations

import os
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
    "store_uri": ("file://<home>/store", "Versioned data store: file://<folder> for the embedded store."),
    "repository": ("repro", "Repository that tasks write their outputs to unless they name one."),
    "default_branch": ("main", "Branch that run branches are created from."),
    "mlflow_tracking_uri": (
        "sqlite:///<home>/mlflow.db",
        "MLflow tracking URI: http(s)://host:port for a tracking server (fast: tasks never import "
        "mlflow), or sqlite:////abs/path.db (tasks import mlflow, a few seconds each).",
    ),
    "venv_cache": ("<home>/venvs", "Where virtualenvs built from task lockfiles are cached."),
    "work_dir": ("<home>/work", "Scratch space of running task attempts (inputs, staged outputs)."),
}


@dataclass(frozen=True)
class ReproSettings:
    home: Path
    store_uri: str
    repository: str
    default_branch: str
    mlflow_tracking_uri: str
    venv_cache: Path
    work_dir: Path

    @property
    def store_root(self) -> Path:
        """Root folder of the embedded store (``file://`` store URIs only)."""
        parsed = urlparse(self.store_uri)
        if parsed.scheme not in ("", "file"):
            raise ConfigError(
                f"[repro] store_uri {self.store_uri!r} is not an embedded store; "
                "use file:///absolute/folder (lakeFS support comes with the lakeFS adapter)"
            )
        return Path(parsed.path if parsed.scheme == "file" else self.store_uri)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ReproSettings:
        env = os.environ if environ is None else environ
        return cls.resolve(lambda option: env.get(f"AIRFLOW__REPRO__{option.upper()}"), env)

    @classmethod
    def from_airflow_conf(cls) -> ReproSettings:
        from airflow.configuration import conf

        def get(option: str) -> str | None:
            return conf.get(SECTION, option, fallback=None) or None

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
        return cls(
            home=home,
            store_uri=get("store_uri") or f"file://{home / 'store'}",
            repository=repository,
            default_branch=branch,
            mlflow_tracking_uri=tracking,
            venv_cache=_absolute("venv_cache", get("venv_cache") or str(home / "venvs")),
            work_dir=_absolute("work_dir", get("work_dir") or str(home / "work")),
        )


def _absolute(option: str, value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_absolute():
        raise ConfigError(
            f"[repro] {option} must be an absolute path, got {value!r} "
            f"(set AIRFLOW__REPRO__{option.upper()}=/absolute/path)"
        )
    return path


def _check_tracking_uri(uri: str) -> None:
    scheme = urlparse(uri).scheme
    if scheme not in ("http", "https", "sqlite", "file"):
        raise ConfigError(
            f"[repro] mlflow_tracking_uri {uri!r} is not a tracking URI MLflow accepts here: use "
            "http(s)://host:port or sqlite:////absolute/path.db "
            "(set AIRFLOW__REPRO__MLFLOW_TRACKING_URI)"
        )
