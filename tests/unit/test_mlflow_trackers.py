"""Both MLflow adapters against real MLflow, with the same behavioural tests.

``rest``: :class:`MlflowRestTracker` against a real ``mlflow server`` (one per session, from the
``mlflow_server`` fixture). ``sdk``: :class:`MlflowSdkTracker` against a sqlite file. What the
adapters wrote is read back with ``mlflow.MlflowClient``, MLflow's own reader.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_repro.adapters.mlflow_common import encode_json_artifact, redact_uri
from airflow_repro.adapters.mlflow_rest import MlflowRestTracker, artifact_proxy_path
from airflow_repro.adapters.mlflow_sdk import MlflowSdkTracker
from airflow_repro.adapters.mlflow_tracker import make_tracker
from airflow_repro.core.ports import ExperimentTracker, TrackerLog
from airflow_repro.embedded import free_port
from airflow_repro.errors import (
    ConfigError,
    InvalidRunRecord,
    NotFoundError,
    ParamsNotSerializableError,
    TrackerMisconfigured,
    TrackerNotFound,
    TrackerRequestRejected,
    TrackerUnavailable,
)

SECRET = "s3cr3t-pw"
MANIFEST = {"schema": 1, "task": "train", "inputs": [{"path": "data/x.csv", "ünï": "✓"}]}


@dataclass
class Backend:
    """A tracker under test, MLflow's own client on the same store, and the store's URI."""

    kind: str
    tracker: MlflowRestTracker | MlflowSdkTracker
    reader: Any  # mlflow.MlflowClient
    uri: str

    def fresh_tracker(self) -> MlflowRestTracker | MlflowSdkTracker:
        """Another tracker on the same store, with nothing cached."""
        return make_tracker(self.uri)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow-sqlite') / 'mlflow.db'}"


@pytest.fixture(params=["rest", "sdk"])
def backend(request: pytest.FixtureRequest, sqlite_uri: str) -> Backend:
    from mlflow import MlflowClient  # seconds to import: only where a test needs it

    if request.param == "rest":
        uri = request.getfixturevalue("mlflow_server")  # the server starts only when needed
        tracker: MlflowRestTracker | MlflowSdkTracker = MlflowRestTracker(uri, timeout=10)
    else:
        uri = sqlite_uri
        tracker = MlflowSdkTracker(uri)
    return Backend(request.param, tracker, MlflowClient(tracking_uri=uri), uri)


def new_experiment_name() -> str:
    return f"exp-{uuid.uuid4().hex[:10]}"


# --- the same behaviour from both adapters ------------------------------------------------------


def test_logged_run_reads_back_exactly(backend: Backend, tmp_path: Path) -> None:
    tracker, reader = backend.tracker, backend.reader
    assert isinstance(tracker, ExperimentTracker)
    start_tags = {"repro.task_id": "train", "repro.note": "ünïcødé ✓"}
    record = TrackerLog(
        tags={"repro.outcome": "success"},
        params={"lr": "0.1", "conf": json.dumps({"epochs": 3})},
        metrics={"accuracy": 0.9375, "tiny": 1e-300, "count": 3, "undefined": math.nan},
        json_artifacts={"repro/manifest.json": MANIFEST, "eval summary.json": [1, 2.5, None]},
    )

    experiment = new_experiment_name()
    run = tracker.start_run(experiment, "train-attempt-1", start_tags)
    tracker.log(run, record)
    tracker.end_run(run, "FINISHED")

    stored = reader.get_run(run.run_id)
    assert stored.info.status == "FINISHED" and stored.info.end_time
    assert stored.info.run_name == "train-attempt-1"
    assert run.experiment_id == reader.get_experiment_by_name(experiment).experiment_id
    user_tags = {k: v for k, v in stored.data.tags.items() if not k.startswith("mlflow.")}
    assert user_tags == {**start_tags, **record.tags}
    assert stored.data.params == record.params
    assert _same_metrics(stored.data.metrics, record.metrics)
    for path, value in record.json_artifacts.items():
        local = Path(reader.download_artifacts(run.run_id, path, str(tmp_path)))
        assert local.read_bytes() == encode_json_artifact(path, value)
        assert tracker.load_json_artifact(run.run_id, path) == value
        assert backend.fresh_tracker().load_json_artifact(run.run_id, path) == value

    assert tracker.get_run_tags(run.run_id) == stored.data.tags
    assert _same_metrics(tracker.get_metrics(run.run_id), record.metrics)
    assert run.tracking_uri == backend.uri
    if backend.kind == "rest":
        assert run.url == f"{backend.uri}/#/experiments/{run.experiment_id}/runs/{run.run_id}"


def test_large_records_are_split_into_batches(backend: Backend) -> None:
    # MLflow refuses more than 100 params or tags, or 1000 entries, in one log-batch request.
    start_tags = {f"start.{i}": f"s{i}" for i in range(150)}
    record = TrackerLog(
        tags={f"tag.{i}": f"t{i}" for i in range(150)},
        params={f"param.{i}": f"p{i}" for i in range(120)},
        metrics={f"metric.{i}": float(i) for i in range(1200)},
    )
    run = backend.tracker.start_run(new_experiment_name(), "big", start_tags)
    backend.tracker.log(run, record)

    stored = backend.reader.get_run(run.run_id).data
    assert {k: v for k, v in stored.tags.items() if k.startswith("start.")} == start_tags
    assert {k: v for k, v in stored.tags.items() if k.startswith("tag.")} == record.tags
    assert stored.params == record.params
    assert stored.metrics == record.metrics


def test_get_or_create_experiment_returns_the_same_id(backend: Backend) -> None:
    name = new_experiment_name()
    first = backend.tracker.get_or_create_experiment(name)
    assert backend.tracker.get_or_create_experiment(name) == first
    assert backend.fresh_tracker().get_or_create_experiment(name) == first
    assert backend.reader.get_experiment_by_name(name).experiment_id == first


def test_concurrent_experiment_creation_agrees_on_one_id(backend: Backend) -> None:
    name, ids, errors = new_experiment_name(), [], []
    trackers = [backend.fresh_tracker() for _ in range(6)]

    def create(tracker: MlflowRestTracker | MlflowSdkTracker) -> None:
        try:
            ids.append(tracker.get_or_create_experiment(name))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(tracker,)) for tracker in trackers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(set(ids)) == 1 and len(ids) == len(trackers)


@pytest.mark.parametrize("status", ["FAILED", "KILLED"])
def test_end_run_records_the_status(backend: Backend, status: str) -> None:
    run = backend.tracker.start_run(new_experiment_name(), "attempt", {})
    backend.tracker.end_run(run, status)  # type: ignore[arg-type]
    assert backend.reader.get_run(run.run_id).info.status == status


# Each record also holds a valid param: that none is stored shows nothing was sent.
INVALID_RECORDS: dict[str, tuple[dict[str, Any], type[Exception]]] = {
    "param-too-long": ({"params": {"ok": "1", "long": "x" * 6001}}, ParamsNotSerializableError),
    "param-not-str": ({"params": {"ok": "1", "n": 3}}, ParamsNotSerializableError),
    "tag-too-long": ({"tags": {"long": "x" * 8001}}, InvalidRunRecord),
    "key-escapes": ({"metrics": {"../up": 1.0}}, InvalidRunRecord),
    "metric-not-number": ({"metrics": {"m": "high"}}, InvalidRunRecord),
    "artifact-escapes": ({"json_artifacts": {"../x.json": {}}}, InvalidRunRecord),
    "artifact-not-json": ({"json_artifacts": {"x.json": {1, 2}}}, InvalidRunRecord),
    "artifact-infinite": ({"json_artifacts": {"x.json": math.inf}}, InvalidRunRecord),
}


@pytest.mark.parametrize(("fields", "error"), INVALID_RECORDS.values(), ids=INVALID_RECORDS.keys())
def test_invalid_records_fail_before_anything_is_logged(
    backend: Backend, fields: dict[str, Any], error: type[Exception]
) -> None:
    record = TrackerLog(**{"params": {"ok": "1"}, **fields})
    run = backend.tracker.start_run(new_experiment_name(), "attempt", {})
    with pytest.raises(error):
        backend.tracker.log(run, record)
    assert backend.reader.get_run(run.run_id).data.params == {}  # MLflow never truncated a value


def test_a_tag_too_long_fails_before_the_run_starts(backend: Backend) -> None:
    experiment = new_experiment_name()
    with pytest.raises(InvalidRunRecord, match="8000"):
        backend.tracker.start_run(experiment, "attempt", {"long": "x" * 8001})
    assert backend.reader.get_experiment_by_name(experiment) is None


def test_an_unknown_run_is_not_found(backend: Backend) -> None:
    with pytest.raises(TrackerNotFound) as caught:
        backend.tracker.get_run_tags("0" * 32)
    assert isinstance(caught.value, NotFoundError)
    assert "RESOURCE_DOES_NOT_EXIST" in str(caught.value)


def test_a_deleted_experiment_is_refused_with_advice(backend: Backend) -> None:
    name = new_experiment_name()
    backend.reader.delete_experiment(backend.tracker.get_or_create_experiment(name))
    with pytest.raises(TrackerRequestRejected, match="deleted"):
        backend.fresh_tracker().start_run(name, "attempt", {})


# --- REST only ----------------------------------------------------------------------------------


def test_an_unreachable_server_fails_fast_and_retryably() -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    tracker = MlflowRestTracker(f"http://user:{SECRET}@{closed[7:]}", timeout=2)
    started = time.monotonic()
    with pytest.raises(TrackerUnavailable) as caught:
        tracker.start_run("exp", "attempt", {})
    assert time.monotonic() - started < 5
    assert caught.value.retryable
    assert closed in str(caught.value) and SECRET not in str(caught.value)


def test_credentials_never_show(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", f"token-{SECRET}")
    with_password = mlflow_server.replace("http://", f"http://repro:{SECRET}@")
    for uri in (with_password, mlflow_server):  # URI credentials, then the token variable
        tracker = MlflowRestTracker(uri, timeout=10)
        run = tracker.start_run(new_experiment_name(), "attempt", {})
        assert run.tracking_uri == mlflow_server and SECRET not in f"{run} {tracker!r}"
        with pytest.raises(TrackerNotFound) as caught:
            tracker.get_run_tags("0" * 32)
        assert mlflow_server in str(caught.value) and SECRET not in str(caught.value)


def test_a_server_that_is_not_mlflow_is_reported_as_misconfigured(mlflow_server: str) -> None:
    tracker = MlflowRestTracker(f"{mlflow_server}/not-mlflow", timeout=10)
    with pytest.raises(TrackerMisconfigured, match="MLflow tracking server") as caught:
        tracker.get_or_create_experiment("exp")
    assert not caught.value.retryable


def test_artifact_proxy_path_comes_from_the_runs_artifact_uri() -> None:
    server = "http://mlflow:5000"
    assert artifact_proxy_path("mlflow-artifacts:/1/abc/artifacts", server) == "1/abc/artifacts"
    assert artifact_proxy_path("mlflow-artifacts://mlflow:5000/1/abc/artifacts", server) == ("1/abc/artifacts")
    with pytest.raises(TrackerMisconfigured, match="artifact serving") as caught:
        artifact_proxy_path("s3://bucket/1/abc/artifacts", server)
    assert not caught.value.retryable


def test_importing_the_adapters_does_not_import_mlflow() -> None:
    code = textwrap.dedent(
        """
        import sys
        import airflow_repro.adapters.mlflow_rest, airflow_repro.adapters.mlflow_sdk
        from airflow_repro.adapters.mlflow_tracker import make_tracker
        make_tracker("http://127.0.0.1:5000"), make_tracker("sqlite:////tmp/never-opened.db")
        print(sorted(m for m in sys.modules if m.split(".")[0] == "mlflow"))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# --- SDK only -----------------------------------------------------------------------------------


def test_sqlite_artifacts_live_next_to_the_database(sqlite_uri: str) -> None:
    tracker = MlflowSdkTracker(sqlite_uri)
    run = tracker.start_run(new_experiment_name(), "attempt", {})
    tracker.log(run, TrackerLog(json_artifacts={"repro/manifest.json": MANIFEST}))
    database_folder = Path(sqlite_uri.removeprefix("sqlite:///")).parent
    stored = database_folder / "mlartifacts" / run.run_id / "artifacts" / "repro/manifest.json"
    assert json.loads(stored.read_text()) == MANIFEST


def test_a_file_store_needs_mlflows_opt_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    tracker = MlflowSdkTracker(tmp_path.as_uri())
    with pytest.raises(ConfigError, match="MLFLOW_ALLOW_FILE_STORE"):
        tracker.get_or_create_experiment("exp")


# --- choosing the adapter -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "adapter"),
    [
        ("http://127.0.0.1:5000", MlflowRestTracker),
        ("https://mlflow.example.com/prefix/", MlflowRestTracker),
        ("sqlite:////abs/mlflow.db", MlflowSdkTracker),
        ("file:///abs/mlruns", MlflowSdkTracker),
        ("/abs/mlruns", MlflowSdkTracker),
    ],
)
def test_make_tracker_picks_the_adapter_by_uri(uri: str, adapter: type) -> None:
    assert type(make_tracker(uri)) is adapter


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "   ",
        "mlruns",
        "sqlite:///relative.db",
        "sqlite://",
        "http://",
        f"postgresql://repro:{SECRET}@db/mlflow",
        "databricks",
        "ftp://host/x",
    ],
)
def test_make_tracker_refuses_other_uris_and_says_what_works(uri: str) -> None:
    with pytest.raises(ConfigError, match=r"sqlite:////absolute") as caught:
        make_tracker(uri)
    assert SECRET not in str(caught.value)


def test_redact_uri_drops_only_the_credentials() -> None:
    assert redact_uri(f"https://u:{SECRET}@host:8443/p?q=1") == "https://host:8443/p?q=1"
    assert redact_uri("http://host:5000") == "http://host:5000"


def _same_metrics(stored: dict[str, float], logged: dict[str, float]) -> bool:
    """Equal, counting NaN equal to NaN."""
    return stored.keys() == logged.keys() and all(
        (math.isnan(value) and math.isnan(stored[key])) or stored[key] == value for key, value in logged.items()
    )
