"""Provider metadata: makes airflow-repro an Airflow provider package.

Registered by the ``apache_airflow_provider`` entry point, it gives Airflow the ``lakefs`` and
``mlflow`` connection types (with their UI field behaviour, from the hooks) and documents the
``[repro]`` config section, generated from :data:`airflow_repro.config.OPTIONS` so the two never
drift apart. Importing this module must stay cheap: Airflow reads it in every component.
"""

from __future__ import annotations

from typing import Any

from airflow_repro.config import OPTIONS, SECTION, SENSITIVE_OPTIONS

PACKAGE = "airflow-repro"
VERSION_ADDED = "0.1.0"


def _default(described: str) -> str | None:
    """The literal default, or ``None`` where the default is computed (from home, or another section).

    Airflow loads provider defaults into its config, so a description such as ``<home>/work`` must
    not become the value ``conf.get`` returns.
    """
    computed = not described or any(marker in described for marker in ("<", "$", "["))
    return None if computed else described


def config_section() -> dict[str, Any]:
    return {
        "description": "airflow-repro: reproducible runs (data store, experiment tracker, run branches).",
        "options": {
            name: {
                "description": f"{help_text} Default: {described or 'unset'}.",
                "version_added": VERSION_ADDED,
                "type": "string",
                "example": None,
                "default": _default(described),
                **({"sensitive": True} if name in SENSITIVE_OPTIONS else {}),
            }
            for name, (described, help_text) in OPTIONS.items()
        },
    }


def get_provider_info() -> dict[str, Any]:
    from airflow_repro import __version__

    return {
        "package-name": PACKAGE,
        "name": "airflow-repro",
        "description": "Reproducible ML pipelines on Airflow: pinned, recorded, replayable and verifiable runs "
        "on lakeFS, MLflow and OpenLineage.",
        "versions": [__version__],
        "connection-types": [
            {"hook-class-name": "airflow_repro.airflow.hooks.LakeFSHook", "connection-type": "lakefs",
             "hook-name": "lakeFS"},
            {"hook-class-name": "airflow_repro.airflow.hooks.MlflowHook", "connection-type": "mlflow",
             "hook-name": "MLflow tracking server"},
        ],
        "config": {SECTION: config_section()},
    }
