"""The Airflow plugin: the DAG-run listener, the REST API and the "Reproducibility" tab. Cheap to
import (loaded in every process).

The REST API (:mod:`airflow_repro.airflow.api`) imports FastAPI and Airflow's API-server security
helpers, which only the API server needs; the plugin therefore holds a :class:`LazyASGIApp` that
builds it on its first request, and this module imports neither. The same app serves the tab's
page (:mod:`airflow_repro.airflow.ui_app`).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_repro.airflow import listener
from airflow_repro.airflow.lazy_app import LazyASGIApp

API_URL_PREFIX = "/repro"
#: The tab's route in the UI: ``dags/<dag>/runs/<run>/plugin/airflow-repro`` (unique among plugins).
UI_URL_ROUTE = "airflow-repro"
#: Relative to the UI's ``<base href>``, so an ``[api] base_url`` sub-path holds; Airflow URL-encodes the ids.
RUN_PAGE_HREF = "repro/ui/run.html?dag_id={DAG_ID}&run_id={RUN_ID}"


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
    external_views = [
        {
            "name": "Reproducibility",
            "href": RUN_PAGE_HREF,
            "destination": "dag_run",
            "url_route": UI_URL_ROUTE,
            "category": "airflow-repro",
        },
    ]
