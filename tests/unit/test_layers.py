"""The core imports no outside system, and the public API is explicit."""

from __future__ import annotations

import subprocess
import sys

import airflow_repro
from tests.support.import_graph import cycles, import_graph

HEAVY = ("airflow", "mlflow", "lakefs", "lakefs_sdk", "kubernetes", "openlineage")


def _imported_after(statement: str) -> list[str]:
    code = f"import sys; {statement}; print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return eval(out.stdout)  # noqa: S307 - our own printed list


def test_core_imports_no_outside_system() -> None:
    import pkgutil

    import airflow_repro.core

    modules = [f"airflow_repro.core.{m.name}" for m in pkgutil.iter_modules(airflow_repro.core.__path__)]
    assert len(modules) >= 10
    statement = "import " + ", ".join([*modules, "airflow_repro.config"])
    assert _imported_after(statement) == []


def test_package_import_and_local_store_are_light() -> None:
    assert _imported_after("import airflow_repro, airflow_repro.runtime, airflow_repro.adapters.local_store") == []


def test_the_composition_root_and_the_trackers_import_no_outside_system() -> None:
    assert (
        _imported_after(
            "import airflow_repro.backends, airflow_repro.adapters.mlflow_tracker, airflow_repro.adapters.mlflow_common"
        )
        == []
    )


def test_no_import_cycle_outside_the_airflow_shell_even_through_deferred_imports() -> None:
    """The MLflow factory imports its adapters, which import only the shared rules (never the factory)."""
    graph = import_graph(nested=True)
    assert "airflow_repro.adapters.mlflow_tracker" not in graph["airflow_repro.adapters.mlflow_rest"]
    assert "airflow_repro.adapters.mlflow_tracker" not in graph["airflow_repro.adapters.mlflow_sdk"]
    assert [c for c in cycles(graph) if any(not m.startswith("airflow_repro.airflow.") for m in c)] == []


def test_only_the_shell_and_the_composition_root_reach_the_shell() -> None:
    """core, adapters and config never import ``airflow_repro.airflow``; ``backends`` (the
    composition root) only inside a function, never at module level."""
    deferred, module_level = import_graph(nested=True), import_graph(nested=False)
    shell = {m for m in deferred if m.startswith("airflow_repro.airflow")}
    for name, imported in deferred.items():
        if name.startswith(("airflow_repro.core", "airflow_repro.adapters")) or name == "airflow_repro.config":
            assert not imported & shell, name
    assert not module_level["airflow_repro.backends"] & shell


def test_public_api() -> None:
    assert airflow_repro.__all__ == [
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
    for name in airflow_repro.__all__:
        assert getattr(airflow_repro, name) is not None
