"""The manifest: canonical JSON, digest, validation and the shipped JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from airflow_repro.core.manifest import (
    AirflowIdentity,
    CodeVersion,
    DataOutput,
    EnvironmentPin,
    Hardware,
    TaskManifest,
    Timing,
    Versions,
    json_schemas,
    load_task_manifest,
)
from airflow_repro.errors import ManifestError

SCHEMA_DIR = Path(__file__).parents[2] / "airflow_repro" / "schemas"


def make_manifest(**overrides: object) -> TaskManifest:
    fields: dict[str, object] = {
        "identity": AirflowIdentity(dag_id="d", run_id="manual__1", task_id="t", try_number=1),
        "code": CodeVersion(source_hash="sha256:" + "a" * 64),
        "environment": EnvironmentPin(kind="fingerprint", digest="sha256:" + "b" * 64, python="CPython 3.11.7"),
        "outputs": [
            DataOutput(path="b.csv", content_hash="blake3:" + "1" * 64, size=3),
            DataOutput(path="a.csv", content_hash="blake3:" + "2" * 64, size=4),
        ],
        "output_repository": "repro",
        "output_branch": "run_d_manual__1_x",
        "hardware": Hardware(platform="Linux", machine="x86_64"),
        "versions": Versions(python="CPython 3.11.7"),
        "timing": Timing(started_at="2026-11-26T00:00:00.000Z"),
    }
    fields.update(overrides)
    return TaskManifest(**fields)  # type: ignore[arg-type]


def test_canonical_json_is_sorted_compact_and_stable() -> None:
    manifest = make_manifest()
    text = manifest.canonical_json().decode()
    assert ": " not in text and ", " not in text
    parsed = json.loads(text)
    assert list(parsed) == sorted(parsed)
    assert [o["path"] for o in parsed["outputs"]] == ["a.csv", "b.csv"], "outputs are sorted by path"
    assert make_manifest().digest == manifest.digest


def test_digest_changes_with_any_field() -> None:
    base = make_manifest()
    changed = make_manifest(identity=AirflowIdentity(dag_id="d", run_id="manual__1", task_id="t", try_number=2))
    assert base.digest.startswith("sha256:") and len(base.digest) == 7 + 64
    assert changed.digest != base.digest


def test_round_trip_and_digest_check() -> None:
    manifest = make_manifest()
    loaded = load_task_manifest(manifest.canonical_json(), expected_digest=manifest.digest)
    assert loaded == manifest
    with pytest.raises(ManifestError, match="digest mismatch"):
        load_task_manifest(manifest.canonical_json(), expected_digest="sha256:" + "0" * 64)


def test_invalid_manifests_are_rejected() -> None:
    with pytest.raises(ManifestError, match="not a valid task manifest"):
        load_task_manifest(b'{"schema_version": "1.0"}')
    with pytest.raises(ValueError, match="unique"):
        make_manifest(outputs=[DataOutput(path="a", content_hash="x", size=1)] * 2)
    data = json.loads(make_manifest().canonical_json())
    data["unexpected"] = 1
    with pytest.raises(ManifestError):
        load_task_manifest(json.dumps(data))


def test_manifest_is_immutable() -> None:
    manifest = make_manifest()
    with pytest.raises(ValueError):
        manifest.output_branch = "other"  # type: ignore[misc]


@pytest.mark.parametrize("name", ["task-manifest", "dag-run-manifest"])
def test_shipped_schema_is_current(name: str) -> None:
    shipped = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    assert shipped == json_schemas()[name], "run 'airflow-repro schema --out airflow_repro/schemas'"


def test_manifest_validates_against_its_schema() -> None:
    schema = json_schemas()["task-manifest"]
    jsonschema.Draft202012Validator(schema).validate(json.loads(make_manifest().canonical_json()))
    broken = json.loads(make_manifest().canonical_json())
    del broken["identity"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(broken)
