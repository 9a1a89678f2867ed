"""Provider metadata: makes airflow-repro an Airflow provider package.

Registered by the ``apache_airflow_provider`` entry point, it gives Airflow the ``lakefs`` and
``mlflow`` connection types (with their UI field behaviour, from the hooks) and documents the
``[repro]`` config section, generated from :data:`airflow_repro.config.OPTIONS` (the one table
that also makes the settings object), so the two never drift apart. Importing this module must
stay cheap: Airflow reads it in every component.
"""

from __future__ import annotations

from typing import Any

from airflow_repro.config import OPTIONS, SECTION

PACKAGE = "airflow-repro"
VERSION_ADDED = "0.1.0"


def config_section() -> dict[str, Any]:
    """The ``[repro]`` section, from :data:`~airflow_repro.config.OPTIONS`.

    Only literal defaults are registered: Airflow loads provider defaults into its config, so a
    computed one (``<home>/work``, another section's option) is documented, never returned by
    ``conf.get``.
    """
    return {
        "description": "airflow-repro: reproducible runs (data store, experiment tracker, run branches).",
        "options": {
            name: {
                "description": f"{option.help} Default: {option.described_default}.",
                "version_added": VERSION_ADDED,
                "type": "string",
                "example": None,
                "default": option.default,
                **({"sensitive": True} if option.sensitive else {}),
            }
            for name, option in OPTIONS.items()
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
            {
                "hook-class-name": "airflow_repro.airflow.hooks.LakeFSHook",
                "connection-type": "lakefs",
                "hook-name": "lakeFS",
            },
            {
                "hook-class-name": "airflow_repro.airflow.hooks.MlflowHook",
                "connection-type": "mlflow",
                "hook-name": "MLflow tracking server",
            },
        ],
        "config": {SECTION: config_section()},
    }
