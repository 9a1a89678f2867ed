"""MLflow tracking over MLflow's REST API 2.0 with httpx: the tracker for the task side.

``import mlflow`` costs seconds and Airflow task processes are short-lived, so this adapter
speaks MLflow's documented REST API directly and never imports mlflow (a test enforces it).
Artifacts go through the tracking server's artifact proxy (``mlflow-artifacts:`` runs, which
``mlflow server`` gives by default), so tasks need no storage credentials.

Credentials come from the URI's ``user:password@`` or from the variables MLflow itself reads
(``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``, ``MLFLOW_TRACKING_TOKEN``); TLS
follows ``MLFLOW_TRACKING_INSECURE_TLS`` and ``MLFLOW_TRACKING_SERVER_CERT_PATH``. Credentials
never appear in messages or in :class:`TrackerRun`: only the redacted URI does.
"""

from __future__ import annotations

import math
import os
import ssl
from collections.abc import Generator, Mapping
from typing import Any, Literal, Self
from urllib.parse import quote, unquote, urlsplit

import httpx

from airflow_repro.adapters.mlflow_common import (
    LogBatch,
    checked_artifact_path,
    checked_experiment_name,
    checked_status,
    checked_tags,
    decode_json_artifact,
    error_from_mlflow,
    now_ms,
    prepare_record,
    redact_uri,
    tracker_kind,
)
from airflow_repro.core.ports import TrackerLog, TrackerRun
from airflow_repro.errors import (
    ConfigError,
    TrackerMisconfigured,
    TrackerNotFound,
    TrackerRequestRejected,
    TrackerUnavailable,
)

TRACKING_API = "/api/2.0/mlflow"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
ARTIFACT_PROXY_SCHEME = "mlflow-artifacts:"
DEFAULT_TIMEOUT_S = 30.0


class MlflowRestTracker:
    """An :class:`~airflow_repro.core.ports.ExperimentTracker` for an ``http(s)://`` server.

    ``client``: an httpx client to use (it stays yours to close); by default the tracker makes
    one, retrying only connection attempts (``connect_retries``), which never repeats a request
    the server received. ``timeout`` bounds every request, in seconds.
    """

    def __init__(
        self,
        tracking_uri: str,
        client: httpx.Client | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        *,
        connect_retries: int = 2,
    ) -> None:
        if tracker_kind(tracking_uri) != "rest":
            raise ConfigError(
                f"MlflowRestTracker needs an http(s):// tracking URI, got "
                f"{redact_uri(tracking_uri)!r}; use make_tracker() to choose the adapter"
            )
        self.tracking_uri = redact_uri(tracking_uri.strip()).rstrip("/")
        self._auth = _auth_for(tracking_uri)
        self._timeout = httpx.Timeout(timeout)
        self._owns_client = client is None
        self._client = client or httpx.Client(
            transport=httpx.HTTPTransport(retries=connect_retries, verify=_tls_verify()),
            headers={"User-Agent": "airflow-repro"},
        )
        self._experiment_ids: dict[str, str] = {}
        self._artifact_uris: dict[str, str] = {}  # run id -> artifact_uri, from runs/create

    def __repr__(self) -> str:
        return f"MlflowRestTracker({self.tracking_uri!r})"

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the ExperimentTracker port ----------------------------------------------------------

    def get_or_create_experiment(self, name: str) -> str:
        """The id of experiment ``name``, created if missing (safe when processes race)."""
        checked_experiment_name(name)
        if name not in self._experiment_ids:
            self._experiment_ids[name] = self._find_or_create_experiment(name)
        return self._experiment_ids[name]

    def start_run(self, experiment: str, run_name: str, tags: Mapping[str, str]) -> TrackerRun:
        run_tags = checked_tags(tags)
        experiment_id = self.get_or_create_experiment(experiment)
        body = {
            "experiment_id": experiment_id,
            "run_name": run_name,
            "start_time": now_ms(),
            "tags": [{"key": key, "value": value} for key, value in run_tags],
        }
        run = self._post("runs/create", body, doing=f"create run {run_name!r}")["run"]
        run_id = run["info"]["run_id"]
        self._artifact_uris[run_id] = run["info"]["artifact_uri"]
        return TrackerRun(
            run_id=run_id,
            experiment_id=experiment_id,
            tracking_uri=self.tracking_uri,
            url=f"{self.tracking_uri}/#/experiments/{experiment_id}/runs/{run_id}",
        )

    def log(self, run: TrackerRun, record: TrackerLog) -> None:
        """Log ``record`` in as few requests as MLflow's limits allow; JSON artifacts last."""
        prepared = prepare_record(record)  # fails before anything is sent
        for batch in prepared.batches:
            self._post("runs/log-batch", _log_batch_body(run.run_id, batch), doing="log a batch")
        for path, content in prepared.json_artifacts:
            self._upload_artifact(run.run_id, path, content)

    def end_run(self, run: TrackerRun, status: Literal["FINISHED", "FAILED", "KILLED"]) -> None:
        body = {"run_id": run.run_id, "status": checked_status(status), "end_time": now_ms()}
        self._post("runs/update", body, doing=f"end run {run.run_id} as {status}")

    def get_run_tags(self, run_id: str) -> dict[str, str]:
        tags = self._get_run(run_id)["data"].get("tags", [])
        return {tag["key"]: tag["value"] for tag in tags}

    # --- beyond the port ---------------------------------------------------------------------

    def get_metrics(self, run_id: str) -> dict[str, float]:
        """Each metric's latest value (NaN and infinities come back as floats too)."""
        metrics = self._get_run(run_id)["data"].get("metrics", [])
        return {metric["key"]: float(metric["value"]) for metric in metrics}

    def load_json_artifact(self, run_id: str, path: str) -> object:
        url = self._artifact_url(run_id, checked_artifact_path(path))
        response = self._call("GET", url, doing=f"download artifact {path!r} of run {run_id}")
        return decode_json_artifact(path, response.content)

    # --- experiments -------------------------------------------------------------------------

    def _find_experiment(self, name: str) -> dict[str, Any] | None:
        try:
            answer = self._get(
                "experiments/get-by-name",
                {"experiment_name": name},
                doing=f"look up experiment {name!r}",
            )
        except TrackerNotFound:
            return None
        return dict(answer["experiment"])

    def _create_experiment(self, name: str) -> str | None:
        """The new experiment's id, or None when another process created it first."""
        try:
            answer = self._post("experiments/create", {"name": name}, doing=f"create experiment {name!r}")
        except TrackerRequestRejected as exc:
            if exc.error_code == "RESOURCE_ALREADY_EXISTS":
                return None
            raise
        return str(answer["experiment_id"])

    def _find_or_create_experiment(self, name: str) -> str:
        experiment = self._find_experiment(name)
        if experiment is None:
            created_id = self._create_experiment(name)
            if created_id is not None:
                return created_id
            experiment = self._find_experiment(name)  # another process created it first
        if experiment is None:
            raise TrackerUnavailable(
                f"MLflow at {self.tracking_uri} says experiment {name!r} exists but cannot find it"
            )
        if experiment.get("lifecycle_stage") == "deleted":
            raise TrackerRequestRejected(
                f"MLflow experiment {name!r} at {self.tracking_uri} is deleted: restore it "
                "(mlflow experiments restore) or choose another experiment name",
                error_code="EXPERIMENT_DELETED",
            )
        return str(experiment["experiment_id"])

    # --- runs and artifacts ------------------------------------------------------------------

    def _get_run(self, run_id: str) -> dict[str, Any]:
        return dict(self._get("runs/get", {"run_id": run_id}, doing=f"read run {run_id}")["run"])

    def _upload_artifact(self, run_id: str, path: str, content: bytes) -> None:
        url = self._artifact_url(run_id, path)
        headers = {"Content-Type": "application/json"}
        self._call("PUT", url, doing=f"upload artifact {path!r}", content=content, headers=headers)

    def _artifact_url(self, run_id: str, path: str) -> str:
        if run_id not in self._artifact_uris:  # a run started by another tracker or process
            self._artifact_uris[run_id] = self._get_run(run_id)["info"]["artifact_uri"]
        root = artifact_proxy_path(self._artifact_uris[run_id], self.tracking_uri)
        return f"{self.tracking_uri}{ARTIFACTS_API}/{quote(f'{root}/{path}', safe='/')}"

    # --- HTTP --------------------------------------------------------------------------------

    def _get(self, endpoint: str, params: dict[str, str], *, doing: str) -> dict[str, Any]:
        url = f"{self.tracking_uri}{TRACKING_API}/{endpoint}"
        return self._json(self._call("GET", url, doing=doing, params=params), doing)

    def _post(self, endpoint: str, body: dict[str, Any], *, doing: str) -> dict[str, Any]:
        url = f"{self.tracking_uri}{TRACKING_API}/{endpoint}"
        return self._json(self._call("POST", url, doing=doing, json=body), doing)

    def _call(self, method: str, url: str, *, doing: str, **kwargs: Any) -> httpx.Response:
        auth = self._auth if self._auth is not None else httpx.USE_CLIENT_DEFAULT
        try:
            response = self._client.request(method, url, auth=auth, timeout=self._timeout, **kwargs)
        except httpx.HTTPError as exc:
            raise TrackerUnavailable(
                f"MLflow at {self.tracking_uri} cannot be reached to {doing}: "
                f"{type(exc).__name__}: {str(exc) or 'no detail'}"
            ) from exc
        if response.is_success:
            return response
        error_code, message = _mlflow_error(response)
        raise error_from_mlflow(response.status_code, error_code, message, doing=doing, where=self.tracking_uri)

    def _json(self, response: httpx.Response, doing: str) -> dict[str, Any]:
        try:
            return dict(response.json())
        except ValueError:
            raise TrackerMisconfigured(
                f"{self.tracking_uri} did not answer with JSON when asked to {doing}: is it an MLflow tracking server?"
            ) from None


def artifact_proxy_path(artifact_uri: str, tracking_uri: str) -> str:
    """The path of a run's artifact folder under the server's artifact proxy.

    ``mlflow-artifacts:/1/<run id>/artifacts`` (or ``mlflow-artifacts://host/1/...``) gives
    ``1/<run id>/artifacts``. Any other artifact URI means the server does not proxy artifacts,
    and a task would need direct credentials to the artifact store, which we do not support.
    """
    if not artifact_uri.startswith(ARTIFACT_PROXY_SCHEME):
        raise TrackerMisconfigured(
            f"the run's artifacts live at {redact_uri(artifact_uri)!r}, which the MLflow server at "
            f"{tracking_uri} does not proxy: start the server with artifact serving (the default, "
            "e.g. 'mlflow server --artifacts-destination <dir or s3://bucket>', without "
            "--no-serve-artifacts or a --default-artifact-root) and use a new experiment"
        )
    rest = artifact_uri[len(ARTIFACT_PROXY_SCHEME) :]
    if rest.startswith("//"):  # an authority (host:port) comes before the path
        rest = rest[2:].partition("/")[2]
    return rest.strip("/")


def _log_batch_body(run_id: str, batch: LogBatch) -> dict[str, Any]:
    timestamp = now_ms()
    return {
        "run_id": run_id,
        "params": [{"key": key, "value": value} for key, value in batch.params],
        "tags": [{"key": key, "value": value} for key, value in batch.tags],
        "metrics": [
            {"key": key, "value": _json_double(value), "timestamp": timestamp, "step": 0}
            for key, value in batch.metrics
        ],
    }


def _json_double(value: float) -> float | str:
    """MLflow parses doubles as protobuf JSON: NaN and infinities must be strings.

    (A bare ``NaN`` token is accepted by the server but stored as 0.0.)
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _mlflow_error(response: httpx.Response) -> tuple[str, str]:
    """MLflow's ``error_code`` and ``message``, or the HTTP reason and a bit of the body."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict) and ("error_code" in payload or "message" in payload):
        return str(payload.get("error_code", "")), str(payload.get("message", ""))
    snippet = " ".join(response.text.split())[:200]
    return "", f"HTTP {response.status_code} {response.reason_phrase}: {snippet}"


class _BearerAuth(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


def _auth_for(tracking_uri: str) -> httpx.Auth | None:
    """The URI's ``user:password@`` first, then MLflow's environment variables."""
    parts = urlsplit(tracking_uri.strip())
    if parts.username is not None:
        return httpx.BasicAuth(unquote(parts.username), unquote(parts.password or ""))
    username = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if username and password:
        return httpx.BasicAuth(username, password)
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    return _BearerAuth(token) if token else None


def _tls_verify() -> bool | ssl.SSLContext:
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        return False
    ca_bundle = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
    if not ca_bundle:
        return True
    try:
        return ssl.create_default_context(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"MLFLOW_TRACKING_SERVER_CERT_PATH={ca_bundle!r} is not a readable CA bundle: {exc}"
        ) from None
