"""The Airflow plugin: the DAG-run listener and the REST API. Cheap to import (loaded in every process).

The REST API (:mod:`airflow_repro.airflow.api`) imports FastAPI and Airflow's API-server security
helpers, which only the API server needs; the plugin therefore holds a :class:`LazyASGIApp` that
builds it on its first request, and this module imports neither.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_repro.airflow import listener
from airflow_repro.airflow.lazy_app import LazyASGIApp

API_URL_PREFIX = "/repro"


class ReproPlugin(AirflowPlugin):
    name = "airflow_repro"
    listeners = [listener]
    fastapi_apps = [
        {
            "app": LazyASGIApp("airflow_repro.airflow.api:create_app"),
            "url_prefix": API_URL_PREFIX,
            "name": "airflow-repro API",
        },
    ]
