"""The core imports no outside system, and the public API is explicit."""

from __future__ import annotations

import subprocess
import sys

import airflow_repro

HEAVY = ("airflow", "mlflow", "lakefs", "lakefs_sdk", "kubernetes", "openlineage")


def _imported_after(statement: str) -> list[str]:
    code = (
        f"import sys; {statement}; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
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


def test_public_api() -> None:
    assert airflow_repro.__all__ == [
        "DagRunManifest", "Input", "LocalStore", "ReproError", "ReproKubernetesPodOperator", "ReproPythonOperator",
        "ReproSettings",
        "Resources", "TaskManifest", "__version__", "repro_task", "runtime",
    ]
    for name in airflow_repro.__all__:
        assert getattr(airflow_repro, name) is not None
