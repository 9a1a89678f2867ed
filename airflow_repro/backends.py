"""Build the adapters a setting names: the data store and the experiment tracker."""

from __future__ import annotations

from airflow_repro.config import ReproSettings
from airflow_repro.core.ports import ExperimentTracker, VersionedDataStore


def build_store(settings: ReproSettings) -> VersionedDataStore:
    from airflow_repro.adapters.local_store import LocalStore

    return LocalStore(settings.store_root)


def build_tracker(settings: ReproSettings) -> ExperimentTracker:
    from airflow_repro.adapters.mlflow_tracker import make_tracker

    return make_tracker(settings.mlflow_tracking_uri)
