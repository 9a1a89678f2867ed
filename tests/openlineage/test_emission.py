"""OpenLineage events of recorded tasks, emitted for real by the Airflow OpenLineage provider.

DAGs run in process with ``dag.test()`` (the real task runner and listeners); the provider's
listener is switched on per test with the file transport (the embedded default) or the HTTP
transport (production) against a receiver on loopback. Every event is validated against the
official OpenLineage JSON Schemas, and each facet against the schema its ``_schemaURL`` names
(ours resolve to the files shipped in the package).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.adapters.openlineage_facets import PRODUCER
from airflow_repro.cli import EXIT_USER_ERROR, main
from airflow_repro.core.lineage_query import (
    MANIFEST_FACET,
    OBJECT_FACET,
    REPLAY_FACET,
    SCHEMA_BASE_URL,
    facet_schema_url,
)
from airflow_repro.core.runs import StoredRun, load_run
from tests.support.airflow_session import load_dag, run_replay
from tests.support.openlineage import (
    LINEAGE_DAGS_FILE,
    LineageReceiver,
    OpenLineageValidator,
    openlineage_enabled,
    read_events,
)

pytestmark = pytest.mark.usefixtures("repro_env")

EXAMPLE_TASKS = ["ingest", "featurize", "train", "evaluate"]


def file_transport(path: Path) -> dict[str, Any]:
    return {"type": "file", "log_file_path": str(path), "append": True}


def store_of(repro_env: dict[str, str]) -> LocalStore:
    return LocalStore(Path(repro_env["home"]) / "store")


def namespace_of(repro_env: dict[str, str]) -> str:
    from airflow_repro.adapters.openlineage_facets import store_namespace
    from airflow_repro.config import ReproSettings

    return store_namespace(ReproSettings.from_env().store_uri)


def task_events(events: list[dict[str, Any]], dag_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    """``(task_id, eventType) -> event`` of one DAG's task events."""
    found = {}
    for event in events:
        job = event["job"]["name"]
        if job.startswith(dag_id + "."):
            key = (job[len(dag_id) + 1 :], event["eventType"])
            assert key not in found, f"two {key} events"
            found[key] = event
    return found


def versions(datasets: list[dict[str, Any]]) -> dict[str, str | None]:
    return {d["name"]: (d.get("facets") or {}).get("version", {}).get("datasetVersion") for d in datasets}


def assert_valid(validator: OpenLineageValidator, events: list[dict[str, Any]]) -> None:
    problems = {f"{e['eventType']} {e['job']['name']}": validator.event_errors(e) for e in events}
    assert {k: v for k, v in problems.items() if v} == {}


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(main, ["lineage", *args])


# -- the example DAG with the file transport -----------------------------------------------------
@pytest.fixture(scope="module")
def example_lineage(
    repro_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, list[dict[str, Any]], StoredRun, Path]]:
    events_file = tmp_path_factory.mktemp("ol-file") / "events.jsonl"
    dag = load_dag("example_ml_pipeline", "example_ml_pipeline.py")
    with openlineage_enabled(file_transport(events_file)):
        dag_run = dag.test()
    assert dag_run.state == "success"
    # 4 tasks x (START, COMPLETE) + the DAG run's COMPLETE (dag.test() fires no DAG-run START)
    events = read_events(events_file, expect=9)
    yield dag_run, events, load_run(store_of(repro_env), dag.dag_id, dag_run.run_id), events_file


def test_example_pipeline_events_validate_against_the_official_schemas(
    example_lineage: Any, ol_validator: OpenLineageValidator
) -> None:
    _, events, _, _ = example_lineage
    assert sorted((e["job"]["name"], e["eventType"]) for e in events) == sorted(
        [(f"example_ml_pipeline.{t}", kind) for t in EXAMPLE_TASKS for kind in ("START", "COMPLETE")]
        + [("example_ml_pipeline", "COMPLETE")]
    )
    assert_valid(ol_validator, events)
    # our facets resolved to the schemas shipped in the package, not to anything fetched
    ours = {
        f["_schemaURL"]
        for e in events
        for f in (e["run"].get("facets") or {}).values()
        if f["_schemaURL"].startswith(SCHEMA_BASE_URL)
    }
    assert ours and {url.split("#")[0] for url in ours} <= set(ol_validator.shipped)


def test_example_pipeline_events_carry_commits_manifest_and_pins(
    example_lineage: Any, repro_env: dict[str, str]
) -> None:
    dag_run, events, recorded, _ = example_lineage
    namespace = namespace_of(repro_env)
    assert namespace.startswith("repro+file://") and namespace.endswith(str(Path(repro_env["home"]) / "store"))
    by_key = task_events(events, "example_ml_pipeline")
    dag_complete = next(e for e in events if e["job"]["name"] == "example_ml_pipeline")
    for task in recorded.tasks:
        m = task.manifest
        task_id = m.identity.task_id
        start, complete = by_key[(task_id, "START")], by_key[(task_id, "COMPLETE")]
        assert start["run"]["runId"] == complete["run"]["runId"]

        # datasets: <repository>/<path> in the store's namespace; the commit id is the version
        assert {d["namespace"] for d in complete["inputs"] + complete["outputs"]} == {namespace}
        assert versions(complete["outputs"]) == {f"repro/{o.path}": task.commit_id for o in m.outputs}
        assert versions(complete["inputs"]) == {f"repro/{i.path}": i.commit_id for i in m.inputs}
        assert {o["name"]: o["outputFacets"]["outputStatistics"]["size"] for o in complete["outputs"]} == {
            f"repro/{o.path}": o.size for o in m.outputs
        }
        assert {o["name"]: o["facets"][OBJECT_FACET] for o in complete["outputs"]} == {
            f"repro/{o.path}": {
                "_producer": PRODUCER,
                "_schemaURL": facet_schema_url("ReproObjectDatasetFacet"),
                "contentHash": o.content_hash,
                "size": o.size,
                "ref": recorded.branch,
            }
            for o in m.outputs
        }
        assert {
            i["name"]: (i["facets"][OBJECT_FACET]["contentHash"], i["facets"][OBJECT_FACET]["ref"])
            for i in complete["inputs"]
        } == {f"repro/{i.path}": (i.content_hash, i.ref) for i in m.inputs}
        # at START the inputs are declared, not yet resolved: no version
        assert versions(start["inputs"]) == {f"repro/{i.path}": None for i in m.inputs}
        assert set(versions(start["outputs"])) == {f"repro/{o.path}" for o in m.outputs}

        facet = complete["run"]["facets"][MANIFEST_FACET]
        assert facet["manifestDigest"] == m.digest and facet["commitId"] == task.commit_id
        assert facet["manifestPath"] == task.manifest_path and facet["reusedCommit"] is False
        assert facet["task"] == {
            "dagId": "example_ml_pipeline",
            "runId": dag_run.run_id,
            "taskId": task_id,
            "mapIndex": -1,
            "tryNumber": m.identity.try_number,
        }
        assert facet["environment"]["kind"] == "fingerprint" and facet["environment"]["digest"] == m.environment.digest
        assert facet["code"]["sourceHash"] == m.code.source_hash and facet["code"]["moduleHash"] == m.code.module_hash
        assert facet["seed"] == 42 and facet["mlflow"]["runId"] == m.tracking.mlflow_run_id
        assert facet["resources"] == {"gpu": 0}
        assert facet["repository"] == "repro" and facet["branch"] == recorded.branch
        assert MANIFEST_FACET not in start["run"]["facets"]  # no manifest before the task ran

        # standard facets: parent (the DAG run), processing engine, code location, parameters
        facets = complete["run"]["facets"]
        assert facets["parent"]["run"]["runId"] == dag_complete["run"]["runId"]
        assert facets["parent"]["job"] == {"namespace": "default", "name": "example_ml_pipeline", "facets": {}}
        assert facets["processing_engine"]["name"] == "Airflow" and facets["processing_engine"]["version"] == "3.3.2"
        params = {p["key"]: p["value"] for p in facets["executionParameters"]["parameters"]}
        assert params == {"seed": "42", "param.test_size": "0.25", "param.n_estimators": "50"}
        location = complete["job"]["facets"]["sourceCodeLocation"]
        assert location["type"] == "file" and location["version"] == m.code.module_hash
        assert location["url"].startswith("file://") and location["url"].endswith("/example_ml_pipeline.py")
        assert f"def {task_id}(" in complete["job"]["facets"]["sourceCode"]["sourceCode"]

    # the chain: what featurize read is exactly what ingest committed
    ingest_out = versions(by_key[("ingest", "COMPLETE")]["outputs"])["repro/raw/wine.csv"]
    assert versions(by_key[("featurize", "COMPLETE")]["inputs"]) == {"repro/raw/wine.csv": ingest_out}


def test_cli_answers_from_the_file_the_transport_wrote(example_lineage: Any, repro_env: dict[str, str]) -> None:
    _, events, recorded, events_file = example_lineage
    by_task = {t.manifest.identity.task_id: t for t in recorded.tasks}
    train, featurize = by_task["train"], by_task["featurize"]

    result = run_cli("produced-by", str(events_file), "repro/models/model.json", "--json")
    assert result.exit_code == 0, result.output
    [answer] = json.loads(result.output)
    assert answer["dataset"]["version"] == answer["commit"]["id"] == train.commit_id
    assert answer["inputs"] == [
        {"namespace": namespace_of(repro_env), "name": "repro/features/train.csv", "version": featurize.commit_id}
    ]
    assert answer["environment"]["digest"] == train.manifest.environment.digest
    assert answer["code"]["sourceHash"] == train.manifest.code.source_hash
    assert answer["code"]["location"]["version"] == train.manifest.code.module_hash
    assert answer["mlflow"]["runId"] == train.manifest.tracking.mlflow_run_id
    assert answer["run"]["manifestDigest"] == train.manifest.digest and answer["replay"] is None

    # human output, by a short commit id
    table = run_cli("produced-by", str(events_file), "repro/models/model.json", "--version", train.commit_id[:10])
    assert table.exit_code == 0, table.output
    assert "example_ml_pipeline.train" in table.output and featurize.commit_id in table.output

    # evaluate read features/test.csv at train's commit (its branch's head then), where the object
    # featurize wrote was unchanged: the same version, matched by content hash and ref
    train_reads = run_cli(
        "readers", str(events_file), "repro/features/train.csv", "--version", featurize.commit_id, "--json"
    )
    assert [(r["run"]["job"]["name"], r["matchedBy"]) for r in json.loads(train_reads.output)] == [
        ("example_ml_pipeline.train", "version")
    ]
    readers = run_cli(
        "readers", str(events_file), "repro/features/test.csv", "--version", featurize.commit_id, "--json"
    )
    assert readers.exit_code == 0, readers.output
    [reader] = json.loads(readers.output)
    assert reader["run"]["job"]["name"] == "example_ml_pipeline.evaluate" and reader["matchedBy"] == "content"
    assert reader["dataset"]["version"] == train.commit_id
    human = run_cli("readers", str(events_file), "repro/features/test.csv", "--version", featurize.commit_id)
    assert "read by 1 run(s)" in human.output and "wrote repro/reports/metrics.json" in human.output
    assert f"read the same object at commit {train.commit_id}" in human.output
    # and asked at the commit evaluate read it at, the producer is still featurize
    [producer] = json.loads(
        run_cli(
            "produced-by", str(events_file), "repro/features/test.csv", "--version", train.commit_id, "--json"
        ).output
    )
    assert producer["run"]["job"]["name"] == "example_ml_pipeline.featurize" and producer["matchedBy"] == "content"
    assert producer["dataset"]["version"] == featurize.commit_id

    missing = run_cli("readers", str(events_file), "repro/features/test.csv", "--version", "0" * 64)
    assert missing.exit_code == EXIT_USER_ERROR
    assert "no run in the events read repro/features/test.csv" in missing.output
    assert featurize.commit_id in missing.output  # it says which versions it does know


def test_openlineage_is_off_again_after_a_test(tmp_path: Path) -> None:
    from airflow.listeners.listener import get_listener_manager
    from airflow.providers.openlineage import conf
    from airflow.providers.openlineage.plugins.listener import get_openlineage_listener
    from airflow.sdk.listener import get_listener_manager as task_listener_manager

    events_file = tmp_path / "events.jsonl"
    dag = load_dag("repro_ol_small", LINEAGE_DAGS_FILE.name)
    with openlineage_enabled(file_transport(events_file)):
        assert not conf.is_disabled()
    assert conf.is_disabled()
    for manager in (get_listener_manager(), task_listener_manager()):
        assert not manager.pm.is_registered(get_openlineage_listener())
    assert dag.test().state == "success"
    assert not events_file.exists()


# -- failure, and lineage that breaks ------------------------------------------------------------
def test_a_failed_task_sends_fail_with_its_error_and_pins_but_no_outputs(
    tmp_path: Path, ol_validator: OpenLineageValidator
) -> None:
    events_file = tmp_path / "events.jsonl"
    dag = load_dag("repro_ol_fails_after_reading", LINEAGE_DAGS_FILE.name)
    with openlineage_enabled(file_transport(events_file)):
        dag_run = dag.test()
    assert dag_run.state == "failed"
    events = read_events(events_file, expect=5)
    assert_valid(ol_validator, events)
    by_key = task_events(events, dag.dag_id)
    fail = by_key[("read_then_fail", "FAIL")]
    produced = versions(by_key[("produce", "COMPLETE")]["outputs"])["repro/data/in.txt"]
    assert versions(fail["inputs"]) == {"repro/data/in.txt": produced}  # what it read, pinned
    assert fail["outputs"] == []  # a failed attempt commits nothing
    error = fail["run"]["facets"]["errorMessage"]
    assert "boom after reading" in error["message"] and error["programmingLanguage"] == "python"
    pins = fail["run"]["facets"][MANIFEST_FACET]
    assert "manifestDigest" not in pins and "commitId" not in pins
    assert pins["seed"] == 1 and pins["mlflow"]["runId"] and pins["environment"]["digest"].startswith("sha256:")
    assert any(e["job"]["name"] == dag.dag_id and e["eventType"] == "FAIL" for e in events)


def test_lineage_never_fails_a_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from airflow_repro.adapters import openlineage_facets
    from airflow_repro.airflow import lineage

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("facet builder exploded (injected)")

    dag = load_dag("repro_ol_small", LINEAGE_DAGS_FILE.name)

    # one part fails: the event goes out with the rest
    monkeypatch.setattr(openlineage_facets, "manifest_run_facet", broken)
    partial_file = tmp_path / "partial.jsonl"
    with openlineage_enabled(file_transport(partial_file)):
        assert dag.test().state == "success"
    complete = task_events(read_events(partial_file, expect=5), dag.dag_id)[("double", "COMPLETE")]
    assert MANIFEST_FACET not in complete["run"]["facets"]
    assert versions(complete["inputs"]) and versions(complete["outputs"])
    assert "executionParameters" in complete["run"]["facets"]
    assert "facet builder exploded" in caplog.text

    # the whole builder fails: an empty OperatorLineage, the provider's own event still goes out
    for name in ("_on_start", "_on_complete"):
        monkeypatch.setattr(lineage, name, broken)
    empty_file = tmp_path / "empty.jsonl"
    with openlineage_enabled(file_transport(empty_file)):
        assert dag.test().state == "success"
    complete = task_events(read_events(empty_file, expect=5), dag.dag_id)[("double", "COMPLETE")]
    assert complete["inputs"] == [] and complete["outputs"] == [] and "parent" in complete["run"]["facets"]


def test_an_unreachable_lineage_backend_does_not_fail_the_task(repro_env: dict[str, str]) -> None:
    from airflow_repro.embedded import free_port

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    dag = load_dag("repro_ol_small", LINEAGE_DAGS_FILE.name)
    with openlineage_enabled({"type": "http", "url": dead, "timeout": 1, "retry": {"total": 0}}):
        dag_run = dag.test()
    assert dag_run.state == "success"
    assert len(load_run(store_of(repro_env), dag.dag_id, dag_run.run_id).tasks) == 2


# -- HTTP (production) ---------------------------------------------------------------------------
def test_http_transport_delivers_valid_events_to_a_receiver_on_loopback(
    receiver: LineageReceiver, ol_validator: OpenLineageValidator, repro_env: dict[str, str]
) -> None:
    dag = load_dag("repro_ol_small", LINEAGE_DAGS_FILE.name)
    with openlineage_enabled(
        {"type": "http", "url": receiver.url, "endpoint": "api/v1/lineage", "timeout": 5}, namespace="repro-tests"
    ):
        dag_run = dag.test()
    assert dag_run.state == "success"
    events = receiver.wait_for(5)
    assert len(events) == 5
    assert {(m, p) for m, p, _ in receiver.requests} == {("POST", "/api/v1/lineage")}
    assert all(h.get("Content-Type", "").startswith("application/json") for _, _, h in receiver.requests)
    assert_valid(ol_validator, events)
    assert {e["job"]["namespace"] for e in events} == {"repro-tests"}

    recorded = {t.manifest.identity.task_id: t for t in load_run(store_of(repro_env), dag.dag_id, dag_run.run_id).tasks}
    complete = task_events(events, dag.dag_id)[("write", "COMPLETE")]
    pins = complete["run"]["facets"][MANIFEST_FACET]
    assert pins["manifestDigest"] == recorded["write"].manifest.digest
    assert pins["resources"] == {"cpu": 0.5, "memory": "256Mi", "gpu": 0}
    params = {p["key"]: p["value"] for p in complete["run"]["facets"]["executionParameters"]["parameters"]}
    assert params["param.factor"] == "3" and params["secret_names"] == "MY_TOKEN"

    # the consumer command reads the receiver's export endpoint, following its pages
    result = run_cli(
        "readers",
        f"{receiver.url}/api/v1/events/lineage",
        "repro/data/a.txt",
        "--version",
        recorded["write"].commit_id,
        "--json",
        "--header",
        "Authorization: Bearer t0k",
    )
    assert result.exit_code == 0, result.output
    assert [r["run"]["job"]["name"] for r in json.loads(result.output)] == ["repro_ol_small.double"]
    gets = [(p, h) for m, p, h in receiver.requests if m == "GET"]
    assert len(gets) == 2 and "offset=4" in gets[1][0] and gets[0][1]["Authorization"] == "Bearer t0k"


def test_task_events_from_a_forked_child_as_in_production(tmp_path: Path, ol_validator: OpenLineageValidator) -> None:
    """The provider's default: each task event is built and sent by a fork of the task process."""
    events_file = tmp_path / "events.jsonl"
    dag = load_dag("repro_ol_small", LINEAGE_DAGS_FILE.name)
    with openlineage_enabled(file_transport(events_file), execute_in_thread="False"):
        assert dag.test().state == "success"
    events = read_events(events_file, expect=5)
    assert_valid(ol_validator, events)
    assert MANIFEST_FACET in task_events(events, dag.dag_id)[("double", "COMPLETE")]["run"]["facets"]


# -- replay: what it replays, and the verdict once known -----------------------------------------
def test_a_replay_names_what_it_replays_and_later_its_verdict(
    tmp_path: Path, ol_validator: OpenLineageValidator, repro_env: dict[str, str]
) -> None:
    from airflow_repro.airflow import replay as service

    events_file = tmp_path / "events.jsonl"
    dag = load_dag("repro_ol_small", LINEAGE_DAGS_FILE.name)
    backends = service.Backends.from_airflow_conf()
    with openlineage_enabled(file_transport(events_file)):
        original = dag.test()
        plan = service.plan(backends, dag.dag_id, original.run_id, "pinned")
        replayed = run_replay(dag, plan, backends)
        assert replayed.state == "success"
        report = service.verify(backends, dag.dag_id, plan.replay_run_id)  # sends the verdict
        assert report.verdict == "identical"
    events = read_events(events_file, expect=13)
    assert_valid(ol_validator, events)

    def dag_run_event(run_id: str) -> dict[str, Any]:
        return next(
            e
            for e in events
            if e["job"]["name"] == dag.dag_id
            and e["eventType"] == "COMPLETE"
            and e["run"]["facets"]["airflowDagRun"]["dagRun"]["run_id"] == run_id
        )

    originals = {
        e["job"]["name"]: e["run"]["runId"]
        for e in events
        if e["eventType"] == "COMPLETE"
        and e["run"]["facets"].get(MANIFEST_FACET, {}).get("task", {}).get("runId") == original.run_id
    }
    original_digests = {
        t.manifest.identity.task_id: t.manifest.digest
        for t in load_run(backends.store, dag.dag_id, original.run_id).tasks
    }
    replay_runs = {}
    for event in events:
        facet = event["run"]["facets"].get(REPLAY_FACET)
        if facet and event["eventType"] == "COMPLETE":
            task_id = event["job"]["name"].split(".", 1)[1]
            assert facet["ofRunId"] == original.run_id and facet["mode"] == "pinned"
            assert facet["planDigest"] == plan.digest
            assert facet["originalManifestDigest"] == original_digests[task_id]
            assert "verdict" not in facet  # not known yet when the task completes
            replay_runs[event["job"]["name"]] = event["run"]["runId"]
    assert set(replay_runs) == {"repro_ol_small.write", "repro_ol_small.double"}

    verdicts = [e for e in events if e["eventType"] == "OTHER"]
    assert len(verdicts) == 3  # two tasks and the DAG run, sent once by verify
    for event in verdicts:
        facet = event["run"]["facets"][REPLAY_FACET]
        assert facet["verdict"] == "identical" and facet["verifiedAt"] == report.verified_at
        name = event["job"]["name"]
        if name == dag.dag_id:  # the replay's DAG run, linked to the original DAG run
            assert event["run"]["runId"] == dag_run_event(plan.replay_run_id)["run"]["runId"]
            assert facet["originalRun"]["runId"] == dag_run_event(original.run_id)["run"]["runId"]
            assert facet["ofRunId"] == original.run_id and "taskStatus" not in facet
            continue
        assert event["run"]["runId"] == replay_runs[name]  # the very run of the replayed task
        assert facet["taskStatus"] == "identical"
        assert facet["originalRun"] == {"runId": originals[name], "job": {"namespace": "default", "name": name}}

    # the consumer sees it: the replay's output, what it replays and the verdict
    replay_commit = {
        t.manifest.identity.task_id: t.commit_id for t in load_run(backends.store, dag.dag_id, plan.replay_run_id).tasks
    }["double"]
    result = run_cli("produced-by", str(events_file), "repro/data/b.txt", "--version", replay_commit, "--json")
    assert result.exit_code == 0, result.output
    [answer] = json.loads(result.output)
    assert answer["replay"]["ofRunId"] == original.run_id and answer["replay"]["verdict"] == "identical"
    every = json.loads(run_cli("produced-by", str(events_file), "repro/data/b.txt", "--json").output)
    assert len(every) == 2  # the original and the replay, latest first
    assert every[0]["dataset"]["version"] == replay_commit
