"""Choosing the MLflow adapter for a tracking URI.

Two adapters implement :class:`~airflow_repro.core.ports.ExperimentTracker`:

* ``mlflow_rest.MlflowRestTracker`` for ``http(s)://`` tracking servers, speaking MLflow's REST
  API with httpx. Task processes are short-lived and ``import mlflow`` costs seconds, so this is
  the adapter for the task side, and it never imports mlflow.
* ``mlflow_sdk.MlflowSdkTracker`` for local stores (``sqlite:////abs/mlflow.db``, a ``file:``
  directory), through ``mlflow.MlflowClient``, imported only when first used.

:func:`make_tracker` picks one from the tracking URI. The rules both share live in
``mlflow_common``, which imports neither adapter nor this module: the adapters import it, and only
this factory imports the adapters, so there is no import cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_repro.adapters.mlflow_common import tracker_kind

if TYPE_CHECKING:
    from airflow_repro.core.ports import ExperimentTracker


def make_tracker(tracking_uri: str) -> ExperimentTracker:
    """The adapter for ``tracking_uri``: REST for ``http(s)://``, the MLflow SDK otherwise.

    Making a REST tracker imports no mlflow module; making an SDK tracker imports mlflow only
    when it is first used.
    """
    uri = tracking_uri.strip() if isinstance(tracking_uri, str) else tracking_uri
    if tracker_kind(uri) == "rest":
        from airflow_repro.adapters.mlflow_rest import MlflowRestTracker

        return MlflowRestTracker(uri)
    from airflow_repro.adapters.mlflow_sdk import MlflowSdkTracker

    return MlflowSdkTracker(uri)


__all__ = ["make_tracker"]
