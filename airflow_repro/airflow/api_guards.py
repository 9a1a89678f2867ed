"""What the REST API does around its endpoints: refuse cross-site cookie POSTs, answer invalid
requests with JSON, and keep the server's folders out of what it says.

Kept apart from :mod:`airflow_repro.airflow.api`, which maps the service's answers and errors.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from typing import Any
from urllib.parse import urlsplit

from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import requires_access_dag
from fastapi import Depends, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from airflow_repro.config import ReproSettings
from airflow_repro.errors import ReproError

# Airflow's own permissions, as the endpoints (the REST API's and the tab's) require them.
READ_RUN = Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.RUN))
CREATE_RUN = Depends(requires_access_dag(method="POST", access_entity=DagAccessEntity.RUN))
# A plan's drift carries diffs of the DAG's code, which Airflow guards with its own permission.
READ_CODE = Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.CODE))


def user_name(user: Any) -> str | None:
    """The authenticated user's name, or ``None`` where the auth manager's user object has none."""
    try:
        return str(user.get_name())
    except Exception:  # noqa: BLE001 - any auth manager's user object
        return None


# -- cross-site requests -----------------------------------------------------------------------------
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443}


def refuse_cross_site(request: Request) -> None:
    """Refuse a state-changing request authenticated by the UI's cookie unless it is same-origin.

    Airflow has no CSRF token: its ``_token`` cookie is SameSite=Lax, which browsers still send
    with a form POST from another page of the same *site* (another port of the host, a sibling
    subdomain). A bearer token is never sent by a browser on its own, so such clients pass.
    """
    if request.method in SAFE_METHODS or _has_bearer(request) or COOKIE_NAME_JWT_TOKEN not in request.cookies:
        return  # without a cookie or a token, authentication answers 401
    reason = _cross_site_reason(request)
    if reason is not None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            (
                f"cross-site request refused: {reason}. A {request.method} authenticated by the session cookie "
                "must come from a page of this Airflow server itself; scripts and other services "
                "authenticate with 'Authorization: Bearer <token>' (POST /auth/token)"
            ),
        )


def _has_bearer(request: Request) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())  # what Airflow's get_user prefers to the cookie


def _cross_site_reason(request: Request) -> str | None:
    """Why the request may come from another origin, or ``None`` if it comes from this one."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:  # set by the browser itself; pages cannot forge it
        return (
            None if fetch_site == "same-origin" else f"it was sent from another origin (Sec-Fetch-Site: {fetch_site})"
        )
    origin = request.headers.get("origin")
    if origin is None:
        return "it has neither a Sec-Fetch-Site nor an Origin header to show where it was sent from"
    if _origin(origin) in _own_origins(request):
        return None
    return f"it was sent from {origin!r}, which is not this server's origin"


def _own_origins(request: Request) -> set[str | None]:
    from airflow.configuration import conf

    own = {_origin(f"{request.url.scheme}://{request.url.netloc}")}
    base_url = conf.get("api", "base_url", fallback="") or ""
    if base_url:  # the origin browsers see behind a proxy
        own.add(_origin(base_url))
    return own - {None}


def _origin(url: str) -> str | None:
    """``scheme://host:port`` of ``url``, with the scheme's default port made explicit."""
    try:
        parts = urlsplit(url.strip().lower())
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:  # a malformed port
        return None
    if not parts.scheme or not parts.hostname or port is None:
        return None  # "null" (sandboxed or opaque origins) among others
    return f"{parts.scheme}://{parts.hostname}:{port}"


# -- invalid requests -------------------------------------------------------------------------------
async def handle_invalid_request(request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's own handler echoes each input as it is: NaN, Infinity or 1e999 (which Python's JSON
    # parser accepts) and undecodable bytes cannot be rendered as JSON, and it answered 500.
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content={"detail": [_clear_error(e) for e in exc.errors()]}
    )


def _clear_error(error: Any) -> dict[str, Any]:
    non_finite = error.get("type") == "finite_number" or _has_non_finite(error.get("input"))
    error = dict(_json_safe(error))
    if error.get("loc") == ["body"] and error.get("type") == "missing":
        error["msg"] = "a JSON object body is required (send {} for the defaults)"
    elif error.get("loc") == ["body"] and error.get("type") == "model_attributes_type":
        error["msg"] = "the body must be a JSON object, sent with 'Content-Type: application/json'"
    elif non_finite:
        error["msg"] = f"{error.get('msg')}: NaN, Infinity and numbers beyond the float range (1e999) are not accepted"
    return error


def _json_safe(value: Any) -> Any:
    """``value`` as strict JSON: non-finite floats and bytes become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return json.dumps(value)  # "NaN", "Infinity", "-Infinity"
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, str | int | float):
        return value
    return str(value)  # e.g. the exception in a pydantic error's ctx


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(v) for v in value)
    return False


# -- server paths ------------------------------------------------------------------------------------
def public_text(text: str) -> str:
    """``text`` without the server's absolute paths: each known folder is replaced by its name.

    Errors of the store and of Airflow name files by absolute path (``/srv/.../repro/store/repos/
    ...``). Viewers read these messages; they see ``<repro home>/store/repos/...`` instead.
    """
    for folder, name in _known_folders():
        text = re.sub(re.escape(folder) + r"(?![\w.-])", name, text)  # whole folder names only
    return text


def _known_folders() -> list[tuple[str, str]]:
    from airflow import settings
    from airflow.configuration import AIRFLOW_HOME

    folders = {AIRFLOW_HOME: "<airflow home>", settings.DAGS_FOLDER: "<dags folder>"}
    with contextlib.suppress(ReproError):  # broken settings: the other folders are still replaced
        repro = ReproSettings.from_airflow_conf()
        folders[str(repro.home)] = "<repro home>"  # what lies inside it is named relative to it
        others = {"work_dir": repro.work_dir, "venv_cache": repro.venv_cache}
        if repro.store_kind == "local":
            others["store"] = repro.store_root
        for option, folder in others.items():
            if not folder.is_relative_to(repro.home):
                folders[str(folder)] = f"<repro {option}>"
    normalized = {os.path.normpath(f): n for f, n in folders.items() if os.path.normpath(f) != os.sep}
    return sorted(normalized.items(), key=lambda item: -len(item[0]))  # a folder inside another first
