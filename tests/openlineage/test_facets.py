"""Our OpenLineage vocabulary: dataset naming, the custom facets and the schemas shipped for them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_repro.adapters import openlineage_facets as olf
from airflow_repro.core import lineage_query
from airflow_repro.core.manifest import (
    AirflowIdentity,
    CodeVersion,
    DataInput,
    DataOutput,
    EnvironmentPin,
    Parameters,
    ReplayInfo,
    Resources,
    Tracking,
)
from tests.support.openlineage import OpenLineageValidator

PACKAGE_SCHEMAS = Path(lineage_query.__file__).resolve().parents[1] / "schemas" / "openlineage"
SHA = "sha256:" + "ab" * 32
COMMIT = "c0" * 32


# -- naming --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("store_uri", "namespace"),
    [
        ("file:///srv/repro/store", "repro+file://box/srv/repro/store"),
        ("/srv/repro/store", "repro+file://box/srv/repro/store"),
        ("file://nfs-1/srv/repro/store", "repro+file://nfs-1/srv/repro/store"),
        ("file:///srv/my store/", "repro+file://box/srv/my%20store"),
        ("lakefs://LakeFS.internal:8000", "lakefs://lakefs.internal:8000"),
        ("http://lakefs.internal:8000/api/v1", "lakefs://lakefs.internal:8000"),
        ("https://lakefs.example.com", "lakefs://lakefs.example.com:443"),
    ],
)
def test_store_namespaces(store_uri: str, namespace: str) -> None:
    assert olf.store_namespace(store_uri, hostname="Box") == namespace


@pytest.mark.parametrize("store_uri", ["relative/store", "s3://bucket/prefix", "lakefs:///no-host"])
def test_store_uris_without_a_convention_are_refused(store_uri: str) -> None:
    with pytest.raises(ValueError, match="store URI"):
        olf.store_namespace(store_uri, hostname="box")


def test_dataset_names_keep_the_commit_out() -> None:
    assert olf.dataset_name("repro", "features/train.csv") == "repro/features/train.csv"
    assert olf.dataset_name("ml-data", "models/") == "ml-data/models"
    dataset = olf.output_dataset(
        "lakefs://lakefs:8000",
        "repro",
        "a.csv",
        commit_id=COMMIT,
        content_hash="blake3:" + "1" * 64,
        size=3,
        ref="main",
    )
    assert dataset.name == "repro/a.csv" and COMMIT not in dataset.namespace + dataset.name
    assert dataset.facets["version"].datasetVersion == COMMIT


# -- the shipped schemas -------------------------------------------------------------------------
def test_every_shipped_schema_is_versioned_immutable_and_named_by_the_spec() -> None:
    assert re.search(r"/v\d+\.\d+\.\d+/", lineage_query.SCHEMA_BASE_URL), "a tag, never a branch"
    assert not re.search(r"/(main|master|HEAD|develop)/", lineage_query.SCHEMA_BASE_URL)
    assert lineage_query.SCHEMA_BASE_URL.endswith("/airflow_repro/schemas/openlineage/")
    shipped = sorted(p.name for p in PACKAGE_SCHEMAS.glob("*.json"))
    previous = lineage_query.PREVIOUS_FACET_SCHEMA_FILES
    assert shipped == sorted([*lineage_query.FACET_SCHEMA_FILES.values(), *previous])
    current = {f.rsplit("-", 3)[0]: f for f in lineage_query.FACET_SCHEMA_FILES.values()}
    assert all(f.rsplit("-", 3)[0] in current and f < current[f.rsplit("-", 3)[0]] for f in previous)
    keys = {
        "ReproManifestRunFacet": lineage_query.MANIFEST_FACET,
        "ReproReplayRunFacet": lineage_query.REPLAY_FACET,
        "ReproObjectDatasetFacet": lineage_query.OBJECT_FACET,
    }
    for facet_class, file_name in lineage_query.FACET_SCHEMA_FILES.items():
        # {Prefix}{Name}{Entity}Facet, key {prefix}_{name} in camelCase, a file per SchemaVer version
        match = re.fullmatch(r"Repro([A-Z][A-Za-z]*)(Run|Job|Dataset)Facet", facet_class)
        assert match, facet_class
        name = match.group(1)
        assert keys[facet_class] == f"repro_{name[0].lower()}{name[1:]}"
        assert re.fullmatch(rf"{facet_class}-\d+-\d+-\d+\.json", file_name)
        schema = json.loads((PACKAGE_SCHEMAS / file_name).read_text())
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"] == lineage_query.SCHEMA_BASE_URL + file_name
        assert list(schema["properties"]) == [keys[facet_class]]
        base = schema["$defs"][facet_class]["allOf"][0]["$ref"]
        assert base == f"https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/{match.group(2)}Facet"
        url = lineage_query.facet_schema_url(facet_class)
        assert url == f"{schema['$id']}#/$defs/{facet_class}"
    assert set(lineage_query.shipped_schemas()) == {
        lineage_query.SCHEMA_BASE_URL + f for f in [*lineage_query.FACET_SCHEMA_FILES.values(), *previous]
    }


# -- our facets against them ---------------------------------------------------------------------
def sample_facets() -> dict[str, Any]:
    identity = AirflowIdentity(dag_id="d", run_id="manual__1", task_id="t", try_number=2, map_index=3)
    code = CodeVersion(
        bundle_name="dags",
        bundle_version="1a2b3c",
        dag_file="pipelines/d.py",
        callable="m:f",
        source_hash=SHA,
        module_hash=SHA,
    )
    environment = EnvironmentPin(
        kind="image", digest="sha256:" + "cd" * 32, python="3.11.7", image="registry.example.com/ml@sha256:" + "cd" * 32
    )
    replay = ReplayInfo(of_run_id="manual__0", mode="pinned", plan_digest=SHA, original_manifest_digest=SHA)
    full = olf.manifest_run_facet(
        identity=identity,
        code=code,
        environment=environment,
        repository="repro",
        branch="run_d_x",
        seed=7,
        resources=Resources(cpu=2, memory="4Gi", gpu=1, accelerator="nvidia-h100"),
        mlflow_run=Tracking(mlflow_run_id="r1", mlflow_experiment_id="5", mlflow_tracking_uri="http://mlflow:5000"),
        manifest=type("M", (), {"digest": SHA, "schema_version": "1.0"})(),
        manifest_path="_repro/manifests/t.3.json",
        commit_id=COMMIT,
        reused_commit=False,
    )
    pins_only = olf.manifest_run_facet(
        identity=identity,
        code=CodeVersion(source_hash=SHA),
        environment=EnvironmentPin(kind="fingerprint", digest=SHA, python="3.11"),
        repository="repro",
        branch="b",
        seed=None,
        resources=None,
    )
    pinned = DataInput(
        name="x",
        repository="repro",
        ref="main",
        commit_id=COMMIT,
        path="a.csv",
        content_hash="blake3:" + "2" * 64,
        size=10,
    )
    return {
        "manifest": full,
        "pins only": pins_only,
        "replay": olf.replay_run_facet(replay),
        "replay verified": olf.replay_run_facet(
            replay,
            original_run=("01a218bf-5754-7125-ba9f-071cc0a7cae5", "default", "d.t"),
            verdict="differs",
            task_status="missing",
            verified_at="2026-01-01T00:00:00Z",
        ),
        "object of an input": olf.resolved_input("repro+file://h/s", pinned).facets[olf.OBJECT_FACET],
        "object of an output": olf.committed_output(
            "repro+file://h/s",
            "repro",
            "run_b",
            DataOutput(path="o.csv", content_hash="blake3:" + "3" * 64, size=1),
            COMMIT,
        ).facets[olf.OBJECT_FACET],
        "executionParameters": olf.execution_parameters_facet(
            Parameters(task_params={"a": [1, 2]}, dag_run_conf={"b": "x" * 5000}, seed=1, secret_names=["S"]), replay
        ),
    }


def undeclared(instance: Any, schema: dict[str, Any], root: dict[str, Any]) -> list[str]:
    """Keys of ``instance`` that no ``properties`` of its shipped schema declares, recursively (our
    facets are open objects, like OpenLineage's, so validation alone would not catch a typo)."""
    if "$ref" in schema:
        if not schema["$ref"].startswith("#/"):
            return []
        node = root
        for part in schema["$ref"][2:].split("/"):
            node = node[part]
        return undeclared(instance, node, root)
    declared = dict(schema.get("properties", {}))
    for sub in schema.get("allOf", []):
        if not sub.get("$ref", "#").startswith("#"):  # the OpenLineage base facet
            declared.update(dict.fromkeys(("_producer", "_schemaURL", "_deleted"), {}))
        declared.update(sub.get("properties", {}))
    problems = []
    for key, value in instance.items() if isinstance(instance, dict) else ():
        if key not in declared:
            problems.append(key)
        elif isinstance(value, dict):
            problems.extend(f"{key}.{p}" for p in undeclared(value, declared[key], root))
    return problems


def test_our_facets_validate_against_the_schemas_we_ship(ol_validator: OpenLineageValidator) -> None:
    for label, facet in sample_facets().items():
        body = olf.facet_dict(facet)
        url = body["_schemaURL"]
        assert ol_validator.errors(body, url) == [], label
        if url.startswith(lineage_query.SCHEMA_BASE_URL):
            schema_id, pointer = url.split("#")
            schema = ol_validator.shipped[schema_id]
            assert undeclared(body, schema["$defs"][pointer.rsplit("/", 1)[1]], schema) == [], label
    body = olf.facet_dict(sample_facets()["manifest"])
    assert body["_producer"] == olf.PRODUCER == "https://github.com/airflow-repro/airflow-repro/tree/v0.1.0"
    assert body["resources"] == {"cpu": 2.0, "memory": "4Gi", "gpu": 1, "accelerator": "nvidia-h100"}
    assert body["mlflow"] == {"runId": "r1", "experimentId": "5", "trackingUri": "http://mlflow:5000"}
    parameters = olf.facet_dict(sample_facets()["executionParameters"])["parameters"]
    assert {p["key"] for p in parameters} == {
        "seed",
        "param.a",
        "conf.b",
        "secret_names",
        "replay.of_run_id",
        "replay.mode",
    }
    assert max(len(p["value"]) for p in parameters) == olf.MAX_PARAMETER_CHARS


def test_the_shipped_schemas_reject_what_they_should(ol_validator: OpenLineageValidator) -> None:
    url = lineage_query.facet_schema_url("ReproManifestRunFacet")
    good = olf.facet_dict(sample_facets()["manifest"])
    for broken in (
        {**good, "manifestDigest": "md5:1234"},
        {**good, "commitId": "not-a-commit"},
        {k: v for k, v in good.items() if k != "environment"},
        {**good, "environment": {**good["environment"], "kind": "docker-tag"}},
        {**good, "task": {**good["task"], "extra": 1}},
        {k: v for k, v in good.items() if k != "_producer"},
    ):
        assert ol_validator.errors(broken, url), broken
    schema = ol_validator.shipped[url.split("#")[0]]
    assert undeclared(
        {**good, "typo": 1, "task": {**good["task"], "tryNumbr": 1}}, schema["$defs"]["ReproManifestRunFacet"], schema
    ) == ["task.tryNumbr", "typo"]
    replay = olf.facet_dict(sample_facets()["replay verified"])
    assert ol_validator.errors({**replay, "verdict": "maybe"}, lineage_query.facet_schema_url("ReproReplayRunFacet"))
    assert ol_validator.errors(
        {**replay, "originalRun": {"runId": "nope", "job": {"namespace": "n", "name": "j"}}},
        lineage_query.facet_schema_url("ReproReplayRunFacet"),
    )


# -- import costs --------------------------------------------------------------------------------
def imported_after(statement: str) -> list[str]:
    watched = (
        "openlineage",
        "airflow",
        "httpx",
        "rich",
        "airflow_repro.airflow.lineage",
        "airflow_repro.adapters.openlineage_facets",
    )
    code = (
        f"import sys; {statement}; "
        f"print(json.dumps(sorted({{w for w in {watched!r} for m in sys.modules if m == w or m.startswith(w + '.')}})))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__OPENLINEAGE__")}
    out = subprocess.run(
        [sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True, env=env
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_cli_and_the_query_module_stay_light() -> None:
    assert imported_after("import airflow_repro.cli, airflow_repro.lineage_cli, airflow_repro.core.lineage_query") == []
    assert (
        "lineage"
        in subprocess.run(
            [sys.executable, "-m", "airflow_repro.cli", "--help"], capture_output=True, text=True, check=True
        ).stdout
    )


def test_the_operator_and_plugin_do_not_import_openlineage() -> None:
    loaded = imported_after("import airflow_repro.airflow.operators, airflow_repro.airflow.plugin")
    assert "airflow" in loaded
    assert not {"openlineage", "airflow_repro.airflow.lineage", "airflow_repro.adapters.openlineage_facets"} & set(
        loaded
    )
