"""MLflow tracking through ``mlflow.MlflowClient``, for local stores without a server.

For ``sqlite:////abs/mlflow.db`` and ``file:`` store directories: local development, tests and
demos. ``import mlflow`` (seconds) happens on first use, never when this module is imported, so
importing the adapters stays cheap; task processes against a server use ``mlflow_rest``.

Behaviour matches the REST adapter: the same checks, batches and JSON bytes (from
``mlflow_common``) and the same errors. For a sqlite store, new experiments keep their artifacts
in ``<database folder>/mlartifacts`` rather than under whatever the process's CWD happens to be.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote, urlsplit

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
from airflow_repro.errors import ConfigError, TrackerRequestRejected

if TYPE_CHECKING:
    from mlflow import MlflowClient

ARTIFACTS_DIR_NAME = "mlartifacts"


class MlflowSdkTracker:
    """An :class:`~airflow_repro.core.ports.ExperimentTracker` for a local MLflow store."""

    def __init__(self, tracking_uri: str) -> None:
        if tracker_kind(tracking_uri) != "sdk":
            raise ConfigError(
                f"MlflowSdkTracker is for local stores, got {redact_uri(tracking_uri)!r}; "
                "use MlflowRestTracker (or make_tracker()) for an http(s) server"
            )
        self._uri = tracking_uri.strip()
        self.tracking_uri = redact_uri(self._uri)
        self._artifact_location = sqlite_artifact_location(self._uri)
        self._client: MlflowClient | None = None
        self._experiment_ids: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"MlflowSdkTracker({self.tracking_uri!r})"

    # --- the ExperimentTracker port ----------------------------------------------------------

    def get_or_create_experiment(self, name: str) -> str:
        """The id of experiment ``name``, created if missing (safe when processes race)."""
        checked_experiment_name(name)
        if name not in self._experiment_ids:
            self._experiment_ids[name] = self._find_or_create_experiment(name)
        return self._experiment_ids[name]

    def start_run(self, experiment: str, run_name: str, tags: Mapping[str, str]) -> TrackerRun:
        run_tags = dict(checked_tags(tags))
        experiment_id = self.get_or_create_experiment(experiment)
        with self._mlflow_errors(f"create run {run_name!r}"):
            run = self._mlflow.create_run(experiment_id, start_time=now_ms(), tags=run_tags, run_name=run_name)
        return TrackerRun(run_id=run.info.run_id, experiment_id=experiment_id, tracking_uri=self.tracking_uri)

    def log(self, run: TrackerRun, record: TrackerLog) -> None:
        """Log ``record`` in the same batches as the REST adapter; JSON artifacts last."""
        prepared = prepare_record(record)  # fails before anything is logged
        for batch in prepared.batches:
            with self._mlflow_errors("log a batch"):
                self._log_batch(run.run_id, batch)
        for path, content in prepared.json_artifacts:
            with self._mlflow_errors(f"store artifact {path!r}"):
                # log_text, not log_dict: the bytes must match the REST adapter's exactly.
                self._mlflow.log_text(run.run_id, content.decode("utf-8"), path)

    def end_run(self, run: TrackerRun, status: Literal["FINISHED", "FAILED", "KILLED"]) -> None:
        with self._mlflow_errors(f"end run {run.run_id} as {status}"):
            self._mlflow.set_terminated(run.run_id, checked_status(status), end_time=now_ms())

    def get_run_tags(self, run_id: str) -> dict[str, str]:
        with self._mlflow_errors(f"read run {run_id}"):
            return dict(self._mlflow.get_run(run_id).data.tags)

    # --- beyond the port ---------------------------------------------------------------------

    def get_metrics(self, run_id: str) -> dict[str, float]:
        """Each metric's latest value."""
        with self._mlflow_errors(f"read run {run_id}"):
            return dict(self._mlflow.get_run(run_id).data.metrics)

    def load_json_artifact(self, run_id: str, path: str) -> object:
        checked_artifact_path(path)
        with tempfile.TemporaryDirectory(prefix="repro-artifact-") as folder:
            with self._mlflow_errors(f"read artifact {path!r} of run {run_id}"):
                local = self._mlflow.download_artifacts(run_id, path, dst_path=folder)
            return decode_json_artifact(path, Path(local).read_bytes())

    # --- internals ---------------------------------------------------------------------------

    @property
    def _mlflow(self) -> MlflowClient:
        """The client, made on first use: this is where the seconds of ``import mlflow`` go."""
        if self._client is None:
            from mlflow import MlflowClient

            with self._mlflow_errors("open the tracking store", config_error=True):
                self._client = MlflowClient(tracking_uri=self._uri)  # opens the store
        return self._client

    def _find_or_create_experiment(self, name: str) -> str:
        with self._mlflow_errors(f"look up experiment {name!r}"):
            experiment = self._mlflow.get_experiment_by_name(name)
        if experiment is None:
            try:
                with self._mlflow_errors(f"create experiment {name!r}"):
                    return self._mlflow.create_experiment(name, artifact_location=self._artifact_location)
            except TrackerRequestRejected as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            with self._mlflow_errors(f"look up experiment {name!r}"):
                experiment = self._mlflow.get_experiment_by_name(name)  # created by a racer
        if experiment is None or experiment.lifecycle_stage == "deleted":
            raise TrackerRequestRejected(
                f"MLflow experiment {name!r} in {self.tracking_uri} is deleted (or vanished): "
                "restore it (mlflow experiments restore) or choose another experiment name",
                error_code="EXPERIMENT_DELETED",
            )
        return experiment.experiment_id

    def _log_batch(self, run_id: str, batch: LogBatch) -> None:
        from mlflow.entities import Metric, Param, RunTag

        timestamp = now_ms()
        self._mlflow.log_batch(
            run_id,
            metrics=[Metric(key, value, timestamp, 0) for key, value in batch.metrics],
            params=[Param(key, value) for key, value in batch.params],
            tags=[RunTag(key, value) for key, value in batch.tags],
        )

    @contextmanager
    def _mlflow_errors(self, doing: str, *, config_error: bool = False) -> Iterator[None]:
        """Turn an ``MlflowException`` into the project's error, as the REST adapter does.

        ``config_error``: the store cannot even be opened, which is a setting to fix (MLflow's
        message says how, e.g. ``MLFLOW_ALLOW_FILE_STORE=true`` for a ``file:`` store).
        """
        from mlflow.exceptions import MlflowException

        try:
            yield
        except MlflowException as exc:
            if config_error:
                raise ConfigError(f"cannot open the MLflow store {self.tracking_uri}: {exc.message}") from exc
            raise error_from_mlflow(
                exc.get_http_status_code(),  # type: ignore[no-untyped-call]  # mlflow's own method, untyped
                exc.error_code,
                exc.message,
                doing=doing,
                where=self.tracking_uri,
            ) from exc


def sqlite_artifact_location(tracking_uri: str) -> str | None:
    """``file:`` URI of ``<database folder>/mlartifacts`` for a sqlite store, else None.

    MLflow's default for a database store is ``./mlruns`` under the CWD, which differs from one
    task process to the next; next to the database, artifacts stay with the runs they belong to.
    """
    parts = urlsplit(tracking_uri)
    if parts.scheme.lower() != "sqlite":
        return None
    database = Path(unquote(parts.path[1:]))  # sqlite:////abs/x.db -> path "//abs/x.db"
    return (database.parent / ARTIFACTS_DIR_NAME).as_uri()
