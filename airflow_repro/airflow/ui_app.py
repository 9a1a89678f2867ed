"""The "Reproducibility" tab of the Airflow UI: its static page and what the page asks the server.

The plugin's ``external_views`` entry (:mod:`airflow_repro.airflow.plugin`) adds the tab on every
DAG-run page; Airflow renders it as a sandboxed, same-origin iframe of ``repro/ui/run.html``. The
page is plain HTML, ES modules and CSS from the package (``airflow_repro/airflow/ui``), with no
build step and no inline script, so a strict Content-Security-Policy serves it as it is. It calls
the REST API (:mod:`airflow_repro.airflow.api`) with the UI's own session cookie.

:func:`mount_ui` adds to the REST API app:

==========================================  =====  ======================================  ============
path (under ``/repro``)                     verb   what                                    access
==========================================  =====  ======================================  ============
``/ui/context/dags/{dag_id}``               GET    who the user is, whether they may       DAG run GET
                                                   replay and verify runs of the DAG, and
                                                   the browser links for commits and MLflow
``/ui/{file}``                              GET    the page's static files                 none
==========================================  =====  ======================================  ============

The answer of ``context`` only enables or disables the page's buttons: the API refuses a replay
or a verification to a user without the permission anyway.
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from airflow_repro.airflow.api_guards import READ_RUN, user_name
from airflow_repro.config import ReproSettings
from airflow_repro.errors import ConfigError

UI_PATH = "/ui"
#: The page inside the package: ``airflow_repro/airflow/ui``.
UI_PACKAGE = ("airflow_repro.airflow", "ui")


class BrowserLinks(BaseModel):
    lakefs_ui_url: str | None = Field(description="The lakeFS UI for commit links; null when the store is not lakeFS.")
    mlflow_ui_url: str | None = Field(description="The MLflow UI for run links; null when a browser cannot open it.")


class UiContext(BaseModel):
    dag_id: str
    user: str | None
    can_replay: bool = Field(description="Whether the user may create runs of the DAG (replay, verify).")
    store: str = Field(description="'local' (embedded store) or 'lakefs'.")
    links: BrowserLinks


router = APIRouter(prefix=UI_PATH, tags=["airflow-repro UI"])


@router.get(
    "/context/dags/{dag_id}",
    dependencies=[READ_RUN],
    response_model=UiContext,
    summary="What the Reproducibility tab shows and enables for this user and DAG",
)
def get_ui_context(dag_id: str, user: GetUserDep) -> dict[str, Any]:
    settings = _settings()
    return {
        "dag_id": dag_id,
        "user": user_name(user),
        "can_replay": may_create_runs(user, dag_id),
        "store": settings.store_kind if settings else "local",
        "links": {
            "lakefs_ui_url": settings.lakefs_ui_url if settings and settings.store_kind == "lakefs" else None,
            "mlflow_ui_url": settings.mlflow_ui_url if settings else None,
        },
    }


def may_create_runs(user: Any, dag_id: str) -> bool:
    """Whether Airflow's auth manager lets ``user`` create runs of ``dag_id`` (what a replay is)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.models.dag import DagModel

    details = DagDetails(id=dag_id, team_name=DagModel.get_team_name(dag_id))
    return bool(
        get_auth_manager().is_authorized_dag(
            method="POST", access_entity=DagAccessEntity.RUN, details=details, user=user
        )
    )


def _settings() -> ReproSettings | None:
    try:
        return ReproSettings.from_airflow_conf()
    except ConfigError:  # the API answers 503 with the reason; the page shows no links meanwhile
        return None


class _PageFiles(StaticFiles):
    """The tab's files, which only pages of this origin may frame: a sibling site (another port or
    subdomain, which the Lax session cookie still reaches) cannot overlay the Replay buttons."""

    async def get_response(self, path: str, scope: Any) -> Any:
        response = await super().get_response(path, scope)
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        response.headers.setdefault("Content-Security-Policy", "frame-ancestors 'self'")
        return response


def mount_ui(app: FastAPI) -> None:
    """Add the tab's context endpoint and static page to the REST API app (mounted at ``/repro``)."""
    app.include_router(router)  # before the static mount, which would otherwise answer its paths
    app.mount(UI_PATH, _PageFiles(packages=[UI_PACKAGE]), name="airflow-repro-ui")
