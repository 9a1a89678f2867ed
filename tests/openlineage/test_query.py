"""Reading events back (``core.lineage_query``) and ``airflow-repro lineage``, on hand-made events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from airflow_repro.cli import EXIT_INFRA_ERROR, EXIT_USER_ERROR, main
from airflow_repro.core import lineage_query as q
from airflow_repro.errors import ReproUserError
from tests.support.openlineage import LineageReceiver

NS = "lakefs://lakefs:8000"
C1, C2, C3, C4 = ("1" * 64, "2" * 64, "3" * 64, "4" * 64)
H_RAW, H_FEAT = "blake3:" + "a" * 64, "blake3:" + "b" * 64


def dataset(name: str, version: str | None, content: str | None = None, ref: str = "run_b") -> dict[str, Any]:
    facets: dict[str, Any] = {}
    if version:
        facets["version"] = {"datasetVersion": version}
    if content:
        facets[q.OBJECT_FACET] = {"contentHash": content, "ref": ref}
    return {"namespace": NS, "name": name, "facets": facets}


def event(
    kind: str,
    run_id: str,
    job: str,
    when: str,
    *,
    inputs: list[Any] = (),
    outputs: list[Any] = (),
    facets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "eventType": kind,
        "eventTime": when,
        "run": {"runId": run_id, "facets": facets or {}},
        "job": {"namespace": "default", "name": job, "facets": {}},
        "inputs": list(inputs),
        "outputs": list(outputs),
        "producer": "p",
        "schemaURL": "s",
    }


def manifest(task: str, commit: str, image: str) -> dict[str, Any]:
    return {
        q.MANIFEST_FACET: {
            "manifestDigest": "sha256:" + task[0] * 64,
            "commitId": commit,
            "repository": "repro",
            "branch": "run_b",
            "environment": {"kind": "image", "digest": image, "image": image},
            "code": {"sourceHash": "sha256:" + "c" * 64, "callable": f"dags.p:{task}"},
            "task": {"dagId": "p", "runId": "manual__1", "taskId": task, "mapIndex": -1, "tryNumber": 1},
            "seed": 1,
            "mlflow": {"runId": f"mlflow-{task}"},
        }
    }


def pipeline() -> list[dict[str, Any]]:
    """ingest writes raw@C1; featurize reads raw@C1, writes feat@C2; train reads raw and feat at C2
    (raw unchanged since C1); a failed attempt of report read feat@C2; eval in another run wrote feat@C3."""
    return [
        event("START", "r-ingest", "p.ingest", "2026-01-01T00:00:01Z", outputs=[dataset("repro/raw.csv", None)]),
        event(
            "COMPLETE",
            "r-ingest",
            "p.ingest",
            "2026-01-01T00:00:02Z",
            outputs=[dataset("repro/raw.csv", C1, H_RAW)],
            facets=manifest("ingest", C1, "img@sha256:1"),
        ),
        event("START", "r-feat", "p.featurize", "2026-01-01T00:00:03Z", inputs=[dataset("repro/raw.csv", None)]),
        event(
            "COMPLETE",
            "r-feat",
            "p.featurize",
            "2026-01-01T00:00:04Z",
            inputs=[dataset("repro/raw.csv", C1, H_RAW)],
            outputs=[dataset("repro/feat.csv", C2, H_FEAT)],
            facets=manifest("featurize", C2, "img@sha256:2"),
        ),
        event(
            "COMPLETE",
            "r-train",
            "p.train",
            "2026-01-01T00:00:06Z",
            inputs=[dataset("repro/raw.csv", C2, H_RAW), dataset("repro/feat.csv", C2, H_FEAT)],
            outputs=[dataset("repro/model.json", C3, "blake3:" + "d" * 64)],
            facets=manifest("train", C3, "i"),
        ),
        event("START", "r-report", "p.report", "2026-01-01T00:00:07Z", inputs=[dataset("repro/feat.csv", C2, H_FEAT)]),
        event(
            "FAIL",
            "r-report",
            "p.report",
            "2026-01-01T00:00:08Z",
            inputs=[dataset("repro/feat.csv", C2, H_FEAT)],
            outputs=[dataset("repro/report.txt", None)],
        ),
        # the same bytes, written by another run on its own branch: a different version
        event(
            "COMPLETE",
            "r-replay",
            "p.featurize",
            "2026-01-02T00:00:04Z",
            inputs=[dataset("repro/raw.csv", C1, H_RAW)],
            outputs=[dataset("repro/feat.csv", C4, H_FEAT, "run_r")],
            facets={
                **manifest("featurize", C4, "img@sha256:2"),
                q.REPLAY_FACET: {"ofRunId": "manual__1", "mode": "pinned", "verdict": "identical"},
            },
        ),
        event(
            "OTHER",
            "r-replay",
            "p.featurize",
            "2026-01-03T00:00:00Z",
            facets={
                q.REPLAY_FACET: {
                    "ofRunId": "manual__1",
                    "mode": "pinned",
                    "verdict": "differs",
                    "_producer": "x",
                    "_schemaURL": "y",
                }
            },
        ),
    ]


def test_runs_merge_their_events() -> None:
    runs = q.merge_runs(pipeline())
    assert runs["r-ingest"].state == "COMPLETE" and runs["r-ingest"].started_at == "2026-01-01T00:00:01Z"
    assert runs["r-ingest"].output_versions() == [q.DatasetVersion(NS, "repro/raw.csv", C1)]  # START's merged in
    assert runs["r-report"].state == "FAIL"
    assert runs["r-replay"].state == "COMPLETE"  # an OTHER event adds facets, not a state
    assert runs["r-replay"].run_facets[q.REPLAY_FACET]["verdict"] == "differs"


def test_produced_by_names_commit_inputs_environment_and_code() -> None:
    [answer] = q.produced_by(pipeline(), "repro/feat.csv", version=C2)
    assert answer["matchedBy"] == "version" and answer["commit"] == {"id": C2, "repository": "repro", "branch": "run_b"}
    assert answer["inputs"] == [{"namespace": NS, "name": "repro/raw.csv", "version": C1}]
    assert answer["environment"]["image"] == "img@sha256:2" and answer["code"]["callable"] == "dags.p:featurize"
    assert answer["mlflow"] == {"runId": "mlflow-featurize"} and answer["replay"] is None
    assert answer["run"]["airflow"]["taskId"] == "featurize"

    every = q.produced_by(pipeline(), "repro/feat.csv")
    assert [a["dataset"]["version"] for a in every] == [C4, C2]  # latest first
    assert every[0]["replay"] == {"ofRunId": "manual__1", "mode": "pinned", "verdict": "differs"}
    assert [a["dataset"]["version"] for a in q.produced_by(pipeline(), "repro/feat.csv", version=C4[:7])] == [C4]
    assert q.produced_by(pipeline(), "repro/feat.csv", version=C4[:6]) == []  # too short to be a prefix
    assert q.produced_by(pipeline(), "repro/feat.csv", namespace="lakefs://other:8000") == []
    assert q.produced_by(pipeline(), "repro/report.txt") == []  # a failed attempt produced nothing

    # asked at a later commit where the object is unchanged: the run that wrote it
    [raw] = q.produced_by(pipeline(), "repro/raw.csv", version=C2)
    assert raw["matchedBy"] == "content" and raw["dataset"]["version"] == C1 and raw["run"]["runId"] == "r-ingest"


def test_readers_of_a_version_include_later_commits_of_the_same_object() -> None:
    found = [
        (r["run"]["runId"], r["run"]["state"], r["matchedBy"], r["dataset"]["version"])
        for r in q.readers(pipeline(), "repro/raw.csv", C1)
    ]
    assert found == [
        ("r-feat", "COMPLETE", "version", C1),
        ("r-train", "COMPLETE", "content", C2),
        ("r-replay", "COMPLETE", "version", C1),
    ]
    feat = [(r["run"]["runId"], r["run"]["state"]) for r in q.readers(pipeline(), "repro/feat.csv", C2)]
    assert feat == [("r-train", "COMPLETE"), ("r-report", "FAIL")]
    # identical bytes on another branch are another version: nobody read C4
    assert q.readers(pipeline(), "repro/feat.csv", C4) == []
    assert [r["outputs"] for r in q.readers(pipeline(), "repro/feat.csv", C2)][0] == [
        {"namespace": NS, "name": "repro/model.json", "version": C3}
    ]


def test_dataset_versions_counts_writers_and_readers() -> None:
    table = {(d["name"], d["version"]): (d["writers"], d["readers"]) for d in q.dataset_versions(pipeline())}
    assert table[("repro/raw.csv", C1)] == (1, 2) and table[("repro/feat.csv", C2)] == (1, 2)
    assert table[("repro/raw.csv", C2)] == (0, 1) and ("repro/report.txt", None) not in table


@pytest.mark.parametrize("shape", ["jsonl", "array", "export", "single"])
def test_events_parse_from_every_shape_a_source_gives(shape: str) -> None:
    events = pipeline()
    text = {
        "jsonl": "\n".join(json.dumps(e) for e in events) + "\n\n",
        "array": json.dumps(events),
        "export": json.dumps({"events": events, "totalCount": len(events)}),
        "single": json.dumps(events[0]),
    }[shape]
    assert q.parse_events(text) == (events[:1] if shape == "single" else events)


def test_bad_event_files_are_user_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"eventType": "START"}\nnot json\n')
    with pytest.raises(ReproUserError, match="bad.jsonl, line 2"):
        q.load_event_files(tmp_path / "bad.jsonl")
    with pytest.raises(ReproUserError, match="expected OpenLineage events"):
        q.parse_events("[1, 2]")
    with pytest.raises(ReproUserError, match="neither a file nor a folder"):
        q.load_event_files(tmp_path / "absent.jsonl")


def test_a_folder_of_event_files_is_read_whole(tmp_path: Path) -> None:
    for i, e in enumerate(pipeline()):  # the file transport with append: false writes a file per event
        (tmp_path / f"ol-{i:03}.json").write_text(json.dumps(e))
    (tmp_path / "notes.txt").write_text("ignored")
    assert len(q.load_event_files(tmp_path)) == len(pipeline())


# -- the command ---------------------------------------------------------------------------------
def cli(*args: str) -> Any:
    return CliRunner().invoke(main, ["lineage", *args])


def test_cli_on_a_file(tmp_path: Path) -> None:
    events_file = tmp_path / "events.jsonl"
    events_file.write_text("\n".join(json.dumps(e) for e in pipeline()))
    human = cli("produced-by", str(events_file), "repro/feat.csv", "--version", C2)
    assert human.exit_code == 0, human.output
    for text in (
        "p.featurize",
        f"commit       {C2} on repro/run_b",
        f"repro/raw.csv @ {C1}",
        "image img@sha256:2",
        "dags.p:featurize",
        "mlflow run mlflow-featurize",
    ):
        assert text in human.output, text
    replayed = cli("produced-by", str(events_file), "repro/feat.csv", "--version", C4)
    assert "replay of    manual__1 (pinned), verdict differs" in replayed.output
    readers = cli("readers", str(events_file), "repro/raw.csv", "--version", C1)
    assert readers.exit_code == 0 and "read by 3 run(s)" in readers.output
    assert f"read the same object at commit {C2}" in readers.output
    datasets = cli("datasets", str(events_file), "--json")
    assert {(d["name"], d["version"]) for d in json.loads(datasets.output)} >= {("repro/feat.csv", C4)}
    assert "repro/model.json" in cli("datasets", str(events_file)).output

    unknown = cli("produced-by", str(events_file), "repro/nothing.csv")
    assert unknown.exit_code == EXIT_USER_ERROR and "never mention it" in unknown.output
    no_version = cli("readers", str(events_file), "repro/raw.csv")
    assert no_version.exit_code == 2 and "--version" in no_version.output
    missing_file = cli("readers", str(tmp_path / "nope.jsonl"), "repro/raw.csv", "--version", C1)
    assert missing_file.exit_code == EXIT_USER_ERROR and "neither a file nor a folder" in missing_file.output


def test_cli_on_an_http_export(receiver: LineageReceiver) -> None:
    receiver.events.extend(pipeline())
    result = cli("produced-by", f"{receiver.url}/api/v1/events/lineage", "repro/feat.csv", "--json")
    assert result.exit_code == 0, result.output
    assert [a["dataset"]["version"] for a in json.loads(result.output)] == [C4, C2]
    offsets = [p for m, p, _ in receiver.requests if m == "GET"]
    assert offsets == ["/api/v1/events/lineage", "/api/v1/events/lineage?offset=4", "/api/v1/events/lineage?offset=8"]

    not_found = cli("datasets", f"{receiver.url}/no/such/export")
    assert not_found.exit_code == EXIT_USER_ERROR and "HTTP 404" in not_found.output
    bad_header = cli("datasets", f"{receiver.url}/api/v1/events/lineage", "--header", "no-colon")
    assert bad_header.exit_code == 2 and "NAME: VALUE" in bad_header.output


def test_cli_when_the_export_is_down() -> None:
    from airflow_repro.embedded import free_port

    result = cli("datasets", f"http://127.0.0.1:{free_port()}/api/v1/events/lineage", "--timeout", "2")
    assert result.exit_code == EXIT_INFRA_ERROR and "could not read OpenLineage events" in result.output
