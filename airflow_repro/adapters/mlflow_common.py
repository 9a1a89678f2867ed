"""The rules both MLflow adapters share, so they accept, refuse and split the same records.

Two adapters implement :class:`~airflow_repro.core.ports.ExperimentTracker`: ``mlflow_rest``
(``http(s)://`` servers, httpx, never imports mlflow) and ``mlflow_sdk`` (local stores, through
``mlflow.MlflowClient``); ``mlflow_tracker.make_tracker`` picks one. Shared here: MLflow's limits
(checked before anything is sent, because MLflow would silently truncate long values), batching,
JSON artifact encoding, tracking-URI checks and redaction, and the mapping of MLflow's errors onto
the project's error tree.

This module imports neither mlflow nor httpx, nor either adapter: they import it.
"""

from __future__ import annotations

import json
import numbers
import posixpath
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from airflow_repro.core.ports import TrackerLog
from airflow_repro.errors import (
    ConfigError,
    InvalidRunRecord,
    ParamsNotSerializableError,
    ReproError,
    ReproUserError,
    TrackerMisconfigured,
    TrackerNotFound,
    TrackerRequestRejected,
    TrackerUnavailable,
)

# MLflow's own limits (mlflow/utils/validation.py, MLflow 3.x).
MAX_PARAMS_AND_TAGS_PER_BATCH = 100  # MLflow allows 100 of each; one shared cap keeps bodies small
MAX_ENTRIES_PER_BATCH = 1000  # metrics, params and tags together; so also <= 1000 metrics
MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_EXPERIMENT_NAME_LENGTH = 500
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")

# MLflow's rule for param, metric and tag keys (non-Windows): they may become file names.
_KEY_RE = re.compile(r"^[/\w.\- :]+$")
_ARTIFACT_PATH_RE = re.compile(r"^[\w.\- ]+(/[\w.\- ]+)*$")

ACCEPTED_URI_FORMS = (
    "'http://host:port' or 'https://host[:port][/prefix]' (an MLflow tracking server), "
    "'sqlite:////absolute/path/mlflow.db', or a local store directory as 'file:///absolute/dir' "
    "or '/absolute/dir'"
)


# --- tracking URIs ------------------------------------------------------------------------------


def redact_uri(uri: str) -> str:
    """``uri`` without ``user:password@``, fit for messages, logs and ``TrackerRun``."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable tracking URI>"
    if "@" not in parts.netloc:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host))


def tracker_kind(tracking_uri: str) -> Literal["rest", "sdk"]:
    """``"rest"`` or ``"sdk"`` for an accepted tracking URI; :class:`ConfigError` otherwise."""
    if not isinstance(tracking_uri, str) or not tracking_uri.strip():
        raise ConfigError(f"the MLflow tracking URI is empty: give {ACCEPTED_URI_FORMS}")
    uri = tracking_uri.strip()
    if uri.startswith("/"):
        return "sdk"
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise _bad_uri(uri, str(exc)) from None
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise _bad_uri(uri, "it has no host")
        return "rest"
    if scheme == "sqlite":
        # sqlite:////abs/x.db has path //abs/x.db; relative files would follow each task's CWD.
        if not parts.path.startswith("//") or parts.path == "//":
            raise _bad_uri(uri, "the database file must be an absolute path (four slashes)")
        return "sdk"
    if scheme == "file":
        if not parts.path.startswith("/") or parts.netloc not in ("", "localhost"):
            raise _bad_uri(uri, "the directory must be a local absolute path")
        return "sdk"
    raise _bad_uri(uri, f"the scheme {scheme!r} is not supported" if scheme else "it has no scheme")


def _bad_uri(uri: str, why: str) -> ConfigError:
    return ConfigError(
        f"invalid MLflow tracking URI {redact_uri(uri)!r}: {why}. Give {ACCEPTED_URI_FORMS}. "
        "For another database, run 'mlflow server' against it and give its http(s) address."
    )


# --- records: validation, batching, JSON artifacts ----------------------------------------------


@dataclass(frozen=True, slots=True)
class LogBatch:
    """One MLflow ``log-batch`` request's worth of params, tags and metrics."""

    params: tuple[tuple[str, str], ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    metrics: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class PreparedTrackerLog:
    """A :class:`TrackerLog` checked against MLflow's limits and cut into requests."""

    batches: tuple[LogBatch, ...]
    json_artifacts: tuple[tuple[str, bytes], ...]  # (artifact path, UTF-8 JSON)


def prepare_record(record: TrackerLog) -> PreparedTrackerLog:
    """Check all of ``record`` first, so that a bad value fails before anything is logged."""
    params = [_checked_param(key, value) for key, value in record.params.items()]
    tags = checked_tags(record.tags)
    metrics = [_checked_metric(key, value) for key, value in record.metrics.items()]
    artifacts = tuple(
        (checked_artifact_path(path), encode_json_artifact(path, value))
        for path, value in record.json_artifacts.items()
    )
    return PreparedTrackerLog(split_into_batches(params, tags, metrics), artifacts)


def split_into_batches(
    params: list[tuple[str, str]],
    tags: list[tuple[str, str]],
    metrics: list[tuple[str, float]],
) -> tuple[LogBatch, ...]:
    """Batches within MLflow's limits: <= 100 params and tags, <= 1000 entries in all."""
    keyed = [("param", *item) for item in params] + [("tag", *item) for item in tags]
    batches = []
    while keyed or metrics:
        keyed_part = keyed[:MAX_PARAMS_AND_TAGS_PER_BATCH]
        keyed = keyed[MAX_PARAMS_AND_TAGS_PER_BATCH:]
        room = MAX_ENTRIES_PER_BATCH - len(keyed_part)
        metric_part, metrics = metrics[:room], metrics[room:]
        batches.append(
            LogBatch(
                params=tuple((key, value) for kind, key, value in keyed_part if kind == "param"),
                tags=tuple((key, value) for kind, key, value in keyed_part if kind == "tag"),
                metrics=tuple(metric_part),
            )
        )
    return tuple(batches)


def checked_tags(tags: Mapping[str, str]) -> list[tuple[str, str]]:
    """Tags as (key, value) pairs, or :class:`InvalidRunRecord` naming the first bad one."""
    checked = []
    for key, value in tags.items():
        _check_key("tag", key)
        if not isinstance(value, str):
            raise InvalidRunRecord(f"tag {key!r} must be a string, got {type(value).__name__}")
        if len(value) > MAX_TAG_VALUE_LENGTH:
            raise InvalidRunRecord(
                f"tag {key!r} is {len(value)} characters long; MLflow keeps at most "
                f"{MAX_TAG_VALUE_LENGTH} (store longer values as a JSON artifact instead)"
            )
        checked.append((key, value))
    return checked


def _checked_param(key: str, value: str) -> tuple[str, str]:
    _check_key("param", key, error=ParamsNotSerializableError)
    if not isinstance(value, str):
        raise ParamsNotSerializableError(
            f"param {key!r} must be a string (JSON-encode it first), got {type(value).__name__}"
        )
    if len(value) > MAX_PARAM_VALUE_LENGTH:
        raise ParamsNotSerializableError(
            f"param {key!r} is {len(value)} characters long; MLflow keeps at most "
            f"{MAX_PARAM_VALUE_LENGTH} (record the full value as a JSON artifact instead)"
        )
    return key, value


def _checked_metric(key: str, value: float) -> tuple[str, float]:
    _check_key("metric", key)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidRunRecord(f"metric {key!r} must be a number, got {type(value).__name__}")
    return key, float(value)


def _check_key(kind: str, key: str, *, error: type[ReproUserError] = InvalidRunRecord) -> None:
    """MLflow's key rules: it may store a key as a file name, so it must be a clean path."""
    if not isinstance(key, str) or not key:
        raise error(f"{kind} names must be non-empty strings, got {key!r}")
    if len(key) > MAX_KEY_LENGTH:
        raise error(f"{kind} name {key[:40]!r}... is longer than {MAX_KEY_LENGTH} characters")
    if not _KEY_RE.match(key) or posixpath.normpath(key) != key or key.startswith(("/", "..")):
        raise error(
            f"invalid {kind} name {key!r}: use letters, digits, '_', '-', '.', ' ', ':' and '/' "
            "as a relative path without '.', '..' or empty parts"
        )


def checked_artifact_path(path: str) -> str:
    """A relative POSIX path inside the run's artifact folder, or :class:`InvalidRunRecord`."""
    valid = (
        isinstance(path, str)
        and _ARTIFACT_PATH_RE.match(path)
        and all(part not in (".", "..") for part in path.split("/"))
    )
    if not valid:
        raise InvalidRunRecord(
            f"invalid artifact path {path!r}: use a relative path like 'repro/manifest.json' made "
            "of letters, digits, '_', '-', '.' and ' ', without '.' or '..' parts"
        )
    return path


def encode_json_artifact(path: str, value: object) -> bytes:
    """The bytes both adapters store for a JSON artifact: strict JSON, indented, UTF-8."""
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRunRecord(f"artifact {path!r} cannot be stored as JSON: {exc}") from None
    return (text + "\n").encode("utf-8")


def decode_json_artifact(path: str, content: bytes) -> object:
    try:
        return json.loads(content)
    except ValueError as exc:
        raise InvalidRunRecord(f"artifact {path!r} is not JSON: {exc}") from None


def checked_experiment_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_EXPERIMENT_NAME_LENGTH:
        raise ConfigError(f"invalid MLflow experiment name {name!r}: give 1-{MAX_EXPERIMENT_NAME_LENGTH} characters")
    return name


def checked_status(status: str) -> str:
    if status not in RUN_STATUSES:
        raise ValueError(f"run status must be one of {RUN_STATUSES}, got {status!r}")
    return status


def now_ms() -> int:
    return int(time.time() * 1000)


# --- MLflow errors -> the project's error tree ---------------------------------------------------


def error_from_mlflow(status_code: int | None, error_code: str, message: str, *, doing: str, where: str) -> ReproError:
    """Map an MLflow failure (HTTP status and MLflow ``error_code``) onto our error tree.

    ``doing`` names the operation, ``where`` the redacted tracking URI.
    """
    detail = f"{error_code}: {message}" if error_code else message
    text = f"MLflow at {where} failed to {doing}: {detail}"
    if status_code is None or status_code >= 500 or status_code in (408, 429):
        return TrackerUnavailable(text)
    if error_code == "RESOURCE_DOES_NOT_EXIST":
        return TrackerNotFound(text)
    if status_code == 404:
        return TrackerMisconfigured(
            f"{text} (no such endpoint: is {where} an MLflow tracking server, with the right path prefix?)"
        )
    if status_code in (401, 403):
        text += " (check MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN)"
    return TrackerRequestRejected(text, status_code=status_code, error_code=error_code)
