"""airflow-repro: reproducible AI/ML pipelines on Apache Airflow 3.

Every task attempt is pinned on code, environment, data, parameters and hardware, and recorded in
a versioned data store together with its manifest; any DAG run can then be found, replayed and
verified. Names are imported lazily: ``import airflow_repro`` costs nothing, and the task-side
:mod:`airflow_repro.runtime` needs only the standard library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "repro_task": "airflow_repro.airflow.operators",
    "ReproPythonOperator": "airflow_repro.airflow.operators",
    "ReproKubernetesPodOperator": "airflow_repro.airflow.kubernetes",
    "Input": "airflow_repro.core.spec",
    "Output": "airflow_repro.core.spec",
    "Resources": "airflow_repro.core.manifest",
    "TaskManifest": "airflow_repro.core.manifest",
    "DagRunManifest": "airflow_repro.core.manifest",
    "ReproSettings": "airflow_repro.config",
    "LocalStore": "airflow_repro.adapters.local_store",
    "ReproError": "airflow_repro.errors",
    "runtime": "airflow_repro.runtime",
}

__all__ = [
    "DagRunManifest",
    "Input",
    "LocalStore",
    "Output",
    "ReproError",
    "ReproKubernetesPodOperator",
    "ReproPythonOperator",
    "ReproSettings",
    "Resources",
    "TaskManifest",
    "__version__",
    "repro_task",
    "runtime",
]

if TYPE_CHECKING:
    from airflow_repro import runtime
    from airflow_repro.adapters.local_store import LocalStore
    from airflow_repro.airflow.kubernetes import ReproKubernetesPodOperator
    from airflow_repro.airflow.operators import ReproPythonOperator, repro_task
    from airflow_repro.config import ReproSettings
    from airflow_repro.core.manifest import DagRunManifest, Resources, TaskManifest
    from airflow_repro.core.spec import Input, Output
    from airflow_repro.errors import ReproError


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'airflow_repro' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    value = module if name == "runtime" else getattr(module, name)
    globals()[name] = value
    return value
