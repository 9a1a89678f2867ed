"""The airflow-repro REST API, served by the Airflow API server under ``/repro``.

Endpoints (all under ``/repro/api/v1/dags/{dag_id}/runs/{run_id}``):

====================  =====  ============================================  ============
path                  verb   what                                          access
====================  =====  ============================================  ============
``/manifest``         GET    the recorded run and its task manifests       DAG run GET
``/replay``           POST   plan (``dry_run``) or trigger a replay        DAG run POST,
                                                                           DAG code GET
``/plan``             GET    the dry run of a replay (read-only; no         DAG run GET,
                             secrets can be given: their drift says so)    DAG code GET
``/replays``          GET    the replays of a run                          DAG run GET
``/verification``     GET    the stored verification report of a replay    DAG run GET
``/verification``     POST   verify a replay, store and return the report  DAG run POST
====================  =====  ============================================  ============

``/replay`` (body ``from_task``) and ``/plan`` (query ``from_task``, ``mode``) replay one task
and everything downstream of it, reusing the recorded outputs of the other tasks; the answer
lists ``replayed_tasks`` and ``reused_tasks``. An unknown run or task answers 404 (the message
lists the run's recorded tasks), a malformed task id 422, a replay refused for drift 409; a task
with nothing downstream is a valid start (the replay runs just it).

Authentication and authorization are Airflow's own (``requires_access_dag`` with the configured
auth manager): no credentials give 401, a user without the permission gets 403. The POST bodies
are required JSON objects (``{}`` for the defaults), and a POST authenticated by the UI's session
cookie must come from the server's own origin (:func:`refuse_cross_site`). Errors have the body
``{"detail": "<message>"}`` (422: a list of ``{"loc", "msg", ...}``); a refused replay adds
``drift``. No answer names a folder of the server: known folders are named instead. The guards
are in :mod:`airflow_repro.airflow.api_guards`. The service functions are the same as the CLI's
(:mod:`airflow_repro.airflow.replay`); they block, so every endpoint is a plain ``def`` and runs in
FastAPI's threadpool.

Built by :func:`create_app`, lazily (see :mod:`airflow_repro.airflow.lazy_app`): the plugin module
does not import this one, since Airflow imports plugins in every process.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, Literal

from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_repro.airflow import replay as service
from airflow_repro.airflow.api_guards import (
    CREATE_RUN,
    READ_CODE,
    READ_RUN,
    handle_invalid_request,
    public_text,
    refuse_cross_site,
    user_name,
)
from airflow_repro.core.replay import CODE_DRIFT, Drift, ReplayPlan
from airflow_repro.core.runs import RunDocument, load_run, run_document
from airflow_repro.core.verify import Tolerance, VerificationReport
from airflow_repro.errors import (
    ConfigError,
    NotFoundError,
    ObjectNotFound,
    ReplayRefused,
    ReproError,
    ReproInfraError,
    ReproUserError,
    RunNotFinished,
)

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
TASK_ID_PATTERN = r"^[\w.-]+$"  # Airflow's own rule for task ids (KEY_REGEX), at most 250 characters
FROM_TASK_DESCRIPTION = (
    "Replay this task and everything downstream of it; the other recorded tasks are not run, their "
    "recorded outputs are reused at their commit ids. Omitted: replay every task."
)


# -- request and response bodies -------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReplayRequest(_Body):
    mode: Literal["pinned", "latest-code"] = Field(
        "pinned",
        description="pinned: restore the recorded code and environment where they drifted, refuse what "
        "cannot be restored. latest-code: current code and environment; data, params and seeds stay pinned.",
    )
    dry_run: bool = Field(False, description="Plan only: report the drift, trigger nothing.")
    secrets: dict[str, Any] = Field(
        default_factory=dict,
        repr=False,
        description="Values of the recorded run's redacted DAG-run conf entries (dotted keys), given again: "
        "they go into the replay run's conf, never into the plan, the record or an answer.",
    )
    from_task: str | None = Field(
        None, min_length=1, max_length=250, pattern=TASK_ID_PATTERN, description=FROM_TASK_DESCRIPTION
    )


class VerificationRequest(_Body):
    """Neither tolerance given: metrics compare exactly and each output within the tolerance its
    task declared (``Output(rel_tol=...)``). Either given: the tolerance of the metrics and of
    every output, overriding the declared ones (``|replay - original| <= abs_tol + rel_tol * |original|``)."""

    abs_tol: float | None = Field(
        None, ge=0, allow_inf_nan=False, strict=True, description="Absolute tolerance (a JSON number >= 0)."
    )
    rel_tol: float | None = Field(
        None, ge=0, allow_inf_nan=False, strict=True, description="Relative tolerance (a JSON number >= 0)."
    )

    def tolerance(self) -> Tolerance | None:
        if self.abs_tol is None and self.rel_tol is None:
            return None
        return Tolerance(abs=self.abs_tol or 0.0, rel=self.rel_tol or 0.0)


class DriftItem(BaseModel):
    kind: str
    task_id: str
    detail: str
    recorded: str | None = None
    current: str | None = None
    blocking: bool = Field(description="Whether this drift refuses the replay in the requested mode.")
    restorable: bool | None = Field(
        None, description="Whether a pinned replay restores it from the archive (code, environment)."
    )
    restore_note: str | None = Field(None, description="How it is restored, or why not, and where that was checked.")
    changes: list[str] | None = Field(None, description="What changed, one line each ('numpy 2.4.6 -> 2.5.0').")
    diff: str | None = Field(None, description="Unified diff of the archived and the current code (truncated).")
    reused: bool | None = Field(
        None, description="The task is reused (not run) by a replay from a later task: its drift blocks nothing."
    )


class ReusedTaskItem(BaseModel):
    task_id: str
    map_index: int = -1
    commit_id: str = Field(description="The original run's commit whose outputs the replay reuses.")


class ReplayResponse(BaseModel):
    dag_id: str
    original_run_id: str
    replay_run_id: str = Field(description="The new run's id (with dry_run: the id it would have had).")
    mode: Literal["pinned", "latest-code"]
    dry_run: bool
    triggered: bool
    blocked: bool = Field(description="Whether blocking drift refuses this replay (only false when triggered).")
    plan_digest: str
    drift: list[DriftItem]
    from_task: str | None = Field(description="The task the replay starts from (null: every task is replayed).")
    replayed_tasks: list[str] = Field(description="The recorded tasks that run again.")
    reused_tasks: list[ReusedTaskItem] = Field(
        description="The recorded task instances that do not run: their recorded outputs are reused."
    )


class ReplaySummary(BaseModel):
    replay_run_id: str
    mode: Literal["pinned", "latest-code"]
    created_at: str
    drift_count: int
    state: str | None = Field(description="The replay run's state in Airflow (null if Airflow no longer has it).")
    plan_digest: str


class ReplaysResponse(BaseModel):
    dag_id: str
    run_id: str
    replays: list[ReplaySummary]
    total_entries: int


# -- helpers -----------------------------------------------------------------------------------------
def _backends() -> service.Backends:
    try:
        return service.Backends.from_airflow_conf()
    except ConfigError as exc:  # the server's settings, not the request, are wrong
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"airflow-repro is not configured correctly on this API server: {exc}"
        ) from exc


def _missing_in_airflow(dag_id: str, run_id: str | None) -> str | None:
    """Why Airflow does not know the DAG or the run, or ``None`` if it knows both."""
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        if session.scalar(select(DagModel.dag_id).where(DagModel.dag_id == dag_id)) is None:
            return f"DAG {dag_id!r} is not known to Airflow; check the dag_id (GET /api/v2/dags lists them)"
        if (
            run_id is not None
            and session.scalar(select(DagRun.id).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)) is None
        ):
            return f"DAG {dag_id!r} has no run {run_id!r}; list its runs with GET /api/v2/dags/{dag_id}/dagRuns"
    return None


@contextlib.contextmanager
def _explain_not_found(dag_id: str, run_id: str) -> Iterator[None]:
    """Turn a store's "not found" into the clearer reason when Airflow lacks the DAG or the run."""
    try:
        yield
    except NotFoundError as exc:
        reason = _missing_in_airflow(dag_id, run_id)
        if reason is None:
            raise
        raise NotFoundError(reason) from exc


def _drift_items(drift: list[Drift], mode: str) -> list[dict[str, Any]]:
    items = [{**d.model_dump(mode="json"), "blocking": d.blocks(mode)} for d in drift]  # type: ignore[arg-type]
    return [{k: _public(v) for k, v in item.items()} for item in items]


def _public(value: Any) -> Any:
    if isinstance(value, str):
        return public_text(value)
    if isinstance(value, list):
        return [public_text(v) if isinstance(v, str) else v for v in value]
    return value


def _refusal_message(plan: ReplayPlan) -> str:
    blocking = plan.blocking_drift
    lines = "; ".join(f"[{d.kind}] {d.task_id}: {d.detail}" for d in blocking)
    message = (
        f"cannot replay run {plan.original_run_id!r} of {plan.dag_id!r} in mode {plan.mode}: "
        f"{len(blocking)} pin(s) no longer hold, nothing was triggered: {lines}."
    )
    if plan.mode == "pinned" and all(d.kind in CODE_DRIFT for d in blocking):
        message += (
            ' Send {"mode": "latest-code"} to replay with the current code and environment '
            "(data, params and seeds stay pinned)."
        )
    else:
        message += " No mode can replay it: data or parameters it was recorded with are gone or changed."
    return message


# -- error mapping -----------------------------------------------------------------------------------
def _error_response(exc: ReproError) -> JSONResponse:
    if isinstance(exc, ReplayRefused):
        return JSONResponse(
            status_code=status.HTTP_409_CONFLICT,
            content={
                "detail": public_text(_refusal_message(exc.plan)),
                "mode": exc.plan.mode,
                "drift": _drift_items(exc.plan.drift, exc.plan.mode),
            },
        )
    if isinstance(exc, RunNotFinished):
        code = status.HTTP_409_CONFLICT
    elif isinstance(exc, NotFoundError):
        code = status.HTTP_404_NOT_FOUND
    elif isinstance(exc, ReproUserError):
        code = status.HTTP_400_BAD_REQUEST
    elif isinstance(exc, ReproInfraError):
        log.warning("airflow-repro API: infrastructure fault: %s", exc)
        headers = {"Retry-After": "5"} if exc.retryable else None
        return JSONResponse(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            content={"detail": public_text(str(exc)), "retryable": exc.retryable},
            headers=headers,
        )
    else:
        log.error("airflow-repro API: unexpected error", exc_info=exc)
        code = status.HTTP_500_INTERNAL_SERVER_ERROR
    return JSONResponse(status_code=code, content={"detail": public_text(str(exc))})


async def _handle_repro_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ReproError)
    return _error_response(exc)


async def _handle_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = public_text(exc.detail) if isinstance(exc.detail, str) else exc.detail
    return JSONResponse(status_code=exc.status_code, content={"detail": detail}, headers=exc.headers)


async def _handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("airflow-repro API: unexpected error", exc_info=exc)
    return JSONResponse(
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
        content={"detail": "internal error in airflow-repro; the API server's log has the details"},
    )


# -- endpoints ---------------------------------------------------------------------------------------
SAME_ORIGIN = Depends(refuse_cross_site)
# refuse_cross_site runs before the endpoints' own dependencies, authentication included.
router = APIRouter(prefix=API_PREFIX + "/dags/{dag_id}/runs", tags=["airflow-repro"], dependencies=[SAME_ORIGIN])


@router.get(
    "/{run_id}/manifest",
    dependencies=[READ_RUN],
    response_model=RunDocument,
    summary="The recorded run and its task manifests",
)
def get_manifest(dag_id: str, run_id: str) -> RunDocument:
    backends = _backends()
    with _explain_not_found(dag_id, run_id):
        return run_document(backends.store, load_run(backends.store, dag_id, run_id))


@router.post(
    "/{run_id}/replay",
    dependencies=[CREATE_RUN, READ_CODE],
    response_model=ReplayResponse,
    summary="Replay a recorded run with its pins (a new run of the same DAG)",
    responses={409: {"description": "Blocking drift (body has 'drift'), or the run has not finished"}},
)
def post_replay(dag_id: str, run_id: str, user: GetUserDep, body: ReplayRequest) -> dict[str, Any]:
    backends = _backends()
    with _explain_not_found(dag_id, run_id):
        plan = service.plan(backends, dag_id, run_id, body.mode, secrets=body.secrets, from_task=body.from_task)
    blocked = bool(plan.blocking_drift)
    triggered = False
    if not body.dry_run:
        _trigger(backends, plan, user_name(user), body.secrets)  # raises ReplayRefused (409) when blocked
        triggered = True
    return _replay_answer(plan, dry_run=body.dry_run, triggered=triggered, blocked=blocked)


@router.get(
    "/{run_id}/plan",
    dependencies=[READ_RUN, READ_CODE],
    response_model=ReplayResponse,
    summary="The dry run of a replay: pins, drift, replayed and reused tasks (read-only)",
)
def get_plan(
    dag_id: str,
    run_id: str,
    mode: Literal["pinned", "latest-code"] = Query("pinned", description="As for POST /replay."),
    from_task: str | None = Query(
        None, min_length=1, max_length=250, pattern=TASK_ID_PATTERN, description=FROM_TASK_DESCRIPTION
    ),
) -> dict[str, Any]:
    # No secrets on a GET (they would land in logs and history): a run whose conf holds one answers
    # with a blocking secret_missing drift item that says how to give it (POST /replay).
    backends = _backends()
    with _explain_not_found(dag_id, run_id):
        plan = service.plan(backends, dag_id, run_id, mode, from_task=from_task)
    return _replay_answer(plan, dry_run=True, triggered=False, blocked=bool(plan.blocking_drift))


def _replay_answer(plan: ReplayPlan, *, dry_run: bool, triggered: bool, blocked: bool) -> dict[str, Any]:
    return {
        "dag_id": plan.dag_id,
        "original_run_id": plan.original_run_id,
        "replay_run_id": plan.replay_run_id,
        "mode": plan.mode,
        "dry_run": dry_run,
        "triggered": triggered,
        "blocked": blocked,
        "plan_digest": plan.digest,
        "drift": _drift_items(plan.drift, plan.mode),
        "from_task": plan.from_task,
        "replayed_tasks": plan.replayed_task_ids,
        "reused_tasks": [
            {"task_id": t.task_id, "map_index": t.map_index, "commit_id": t.commit_id} for t in plan.reused_tasks or ()
        ],
    }


def _trigger(backends: service.Backends, plan: ReplayPlan, user: str | None, secrets: dict[str, Any]) -> None:
    from airflow.exceptions import DagNotFound, DagRunAlreadyExists

    try:
        service.trigger(backends, plan, triggered_by="REST_API", user=user, secrets=secrets)
    except DagNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"cannot trigger the replay: {exc}") from exc
    except DagRunAlreadyExists as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"cannot trigger the replay: run {plan.replay_run_id!r} already exists"
        ) from exc
    except ValueError as exc:  # ParamValidationError, run types the DAG does not allow
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"Airflow refused the replay run: {exc}") from exc


@router.get(
    "/{run_id}/replays",
    dependencies=[READ_RUN],
    response_model=ReplaysResponse,
    summary="The replays of a recorded run, oldest first",
)
def get_replays(dag_id: str, run_id: str) -> dict[str, Any]:
    backends = _backends()
    with _explain_not_found(dag_id, run_id):
        plans = service.replays_of(backends, dag_id, run_id)
    replays = [
        {
            "replay_run_id": p.replay_run_id,
            "mode": p.mode,
            "created_at": p.created_at,
            "drift_count": len(p.drift),
            "state": service.dag_run_state(dag_id, p.replay_run_id),
            "plan_digest": p.digest,
        }
        for p in plans
    ]
    return {"dag_id": dag_id, "run_id": run_id, "replays": replays, "total_entries": len(replays)}


@router.get(
    "/{replay_run_id}/verification",
    dependencies=[READ_RUN],
    response_model=VerificationReport,
    summary="The stored verification report of a replay",
)
def get_verification(dag_id: str, replay_run_id: str, request: Request) -> dict[str, Any]:
    backends = _backends()
    with _explain_not_found(dag_id, replay_run_id):
        try:
            report = service.stored_report(backends, dag_id, replay_run_id)
        except ObjectNotFound as exc:
            raise NotFoundError(
                f"no verification report is stored for run {replay_run_id!r} of {dag_id!r}; run the verification "
                f"first: POST {request.scope.get('root_path', '')}{API_PREFIX}/dags/{dag_id}/runs/{replay_run_id}"
                "/verification "
                "(or 'airflow-repro verify')"
            ) from exc
    return report.model_dump(mode="json")


@router.post(
    "/{replay_run_id}/verification",
    dependencies=[CREATE_RUN],
    response_model=VerificationReport,
    summary="Verify a finished replay against its original; store and return the report",
    responses={409: {"description": "The replay has not finished"}},
)
def post_verification(dag_id: str, replay_run_id: str, body: VerificationRequest) -> dict[str, Any]:
    backends = _backends()
    with _explain_not_found(dag_id, replay_run_id):
        _require_replay(backends, dag_id, replay_run_id)
        report = service.verify(backends, dag_id, replay_run_id, body.tolerance())
    return report.model_dump(mode="json")


def _require_replay(backends: service.Backends, dag_id: str, run_id: str) -> None:
    """A clear 404 for a run that is recorded but is not a replay (it has no replay plan)."""
    from airflow_repro.core.replay import load_plan
    from airflow_repro.core.runs import find_run_repository

    repository = find_run_repository(backends.store, dag_id, run_id)
    try:
        load_plan(backends.store, repository, dag_id, run_id)
    except ObjectNotFound as exc:
        raise NotFoundError(
            f"run {run_id!r} of {dag_id!r} is not a replay (it has no replay plan); "
            "verify the run that a replay created instead"
        ) from exc


def create_app() -> FastAPI:
    """The REST API app; the plugin mounts it at ``/repro`` in the Airflow API server."""
    from airflow.configuration import conf

    swagger = conf.getboolean("api", "enable_swagger_ui", fallback=True)
    app = FastAPI(
        title="airflow-repro API",
        version="1",
        description="Recorded runs, replays and verification of airflow-repro. Authenticate as for "
        "Airflow's API (POST /auth/token, then 'Authorization: Bearer <token>').",
        docs_url="/docs" if swagger else None,
        redoc_url=None,
        openapi_url="/openapi.json" if swagger else None,
    )
    app.add_exception_handler(ReproError, _handle_repro_error)
    app.add_exception_handler(StarletteHTTPException, _handle_http_error)
    app.add_exception_handler(RequestValidationError, handle_invalid_request)
    app.add_exception_handler(Exception, _handle_unexpected)
    app.include_router(router)
    from airflow_repro.airflow.ui_app import mount_ui  # the UI tab's page and context

    mount_ui(app)
    return app
