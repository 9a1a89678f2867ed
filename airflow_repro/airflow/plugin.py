"""The Airflow plugin: registers the DAG-run listener. Cheap to import (loaded in every process)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_repro.airflow import listener


class ReproPlugin(AirflowPlugin):
    name = "airflow_repro"
    listeners = [listener]
