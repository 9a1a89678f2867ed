"""The verdict event's ``repro_replay`` facet carries the explanation, bounded, and valid against
the schema we ship (SchemaVer 1-1-0)."""

from __future__ import annotations

import math

from airflow_repro.adapters import openlineage_facets as olf
from airflow_repro.core import lineage_query
from airflow_repro.core.comparison import ObjectComparison, Tolerance
from airflow_repro.core.manifest import ReplayInfo
from airflow_repro.core.verify import LikelyCause, ObjectDifference, ObjectSide, TaskVerification
from tests.openlineage.test_facets import undeclared
from tests.support.openlineage import OpenLineageValidator

SHA = "sha256:" + "ab" * 32


def difference(i: int, summary: str = "csv: 1 cell differs") -> ObjectDifference:
    side = ObjectSide(content_hash="blake3:" + "1" * 64, size=3)
    comparison = ObjectComparison(
        path=f"t{i}.csv",
        verdict="equivalent" if i % 2 else "differs",
        format="csv",
        tolerance=Tolerance(abs_tol=1e-6),
        summary=summary,
        max_abs_deviation=1e-9,
        max_rel_deviation=math.inf,  # a deviation from 0: sent as the string "Infinity"
    )
    return ObjectDifference(path=f"t{i}.csv", change="changed", original=side, replay=side, comparison=comparison)


def facet_body(task: TaskVerification) -> dict:
    replay = ReplayInfo(of_run_id="manual__0", mode="pinned", plan_digest=SHA, original_manifest_digest=SHA)
    facet = olf.replay_run_facet(replay, verdict="equivalent", task_status=task.status, task=task)
    return olf.facet_dict(facet)


def test_the_explanation_is_valid_against_the_shipped_schema(ol_validator: OpenLineageValidator) -> None:
    task = TaskVerification(
        task_id="train",
        status="equivalent",
        objects=[difference(1), ObjectDifference(path="gone.bin", change="missing_in_replay")],
        likely_causes=[LikelyCause(kind="gpu", detail="GPUs: A100 (driver 535) -> H100 (driver 550)")],
    )
    body = facet_body(task)
    url = body["_schemaURL"]
    assert url.endswith("ReproReplayRunFacet-1-1-0.json#/$defs/ReproReplayRunFacet")
    assert ol_validator.errors(body, url) == []
    schema = ol_validator.shipped[url.split("#")[0]]
    assert undeclared(body, schema["$defs"]["ReproReplayRunFacet"], schema) == []
    first, gone = body["objects"]
    assert (first["verdict"], first["format"], first["maxRelDeviation"], first["absTol"]) == (
        "equivalent",
        "csv",
        "Infinity",
        1e-6,
    )
    assert gone == {"path": "gone.bin", "verdict": "differs", "summary": "missing_in_replay"}
    assert body["likelyCauses"] == [{"kind": "gpu", "detail": "GPUs: A100 (driver 535) -> H100 (driver 550)"}]
    assert ol_validator.errors({**body, "verdict": "maybe"}, url)


def test_the_explanation_is_bounded(ol_validator: OpenLineageValidator) -> None:
    task = TaskVerification(
        task_id="train",
        status="differs",
        objects=[difference(i, summary="x" * 2000) for i in range(60)],
        likely_causes=[LikelyCause(kind="library", detail="y" * 2000)] * 30,
    )
    body = facet_body(task)
    assert len(body["objects"]) == olf.FACET_MAX_OBJECTS and len(body["likelyCauses"]) == olf.FACET_MAX_CAUSES
    assert max(len(o["summary"]) for o in body["objects"]) == olf.FACET_MAX_TEXT
    assert ol_validator.errors(body, lineage_query.facet_schema_url("ReproReplayRunFacet")) == []


def test_a_verdict_without_a_task_carries_no_explanation() -> None:
    replay = ReplayInfo(of_run_id="manual__0", mode="pinned", plan_digest=SHA)
    body = olf.facet_dict(olf.replay_run_facet(replay, verdict="identical"))
    assert body.get("objects") is None and body.get("likelyCauses") is None
