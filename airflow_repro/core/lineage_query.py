"""Reading OpenLineage events back: who produced a dataset version, and who read it.

The consumer side of the lineage airflow-repro emits. Pure Python over event dictionaries as the
OpenLineage spec defines them (what the file transport writes, one JSON event per line, or what a
backend such as Marquez exports); it imports no OpenLineage or Airflow code.

It also names the vocabulary both sides share: the keys of airflow-repro's custom facets, their
versioned schema URLs, and the JSON Schemas shipped in ``airflow_repro/schemas/openlineage``.

Events of one run (same ``run.runId``) are merged in time order, as OpenLineage consumers do: a
facet replaces an earlier facet of the same name, and datasets are united by namespace and name.

A dataset's version is the commit id it was read at or written in. A task that reads an object at a
later commit of the same branch, where the object has not changed, reads the version an earlier
task wrote: the two are matched by the ``repro_object`` facet (same content hash, same ref), and
answers say whether they matched by ``version`` or by ``content``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from airflow_repro.errors import ReproUserError

#: Run facet keys (``{prefix}_{name}``) and classes (``{Prefix}{Name}{Entity}Facet``) per the spec.
MANIFEST_FACET = "repro_manifest"
MANIFEST_FACET_CLASS = "ReproManifestRunFacet"
REPLAY_FACET = "repro_replay"
REPLAY_FACET_CLASS = "ReproReplayRunFacet"
OBJECT_FACET = "repro_object"
OBJECT_FACET_CLASS = "ReproObjectDatasetFacet"

#: Immutable URLs: the v0.1.0 tag of the repository, and a file per SchemaVer version. A new
#: schema version is a new file (the old one stays), so a URL never changes what it points to.
SCHEMA_BASE_URL = (
    "https://raw.githubusercontent.com/airflow-repro/airflow-repro/v0.1.0/airflow_repro/schemas/openlineage/"
)
FACET_SCHEMA_FILES: dict[str, str] = {
    MANIFEST_FACET_CLASS: "ReproManifestRunFacet-1-0-0.json",
    REPLAY_FACET_CLASS: "ReproReplayRunFacet-1-1-0.json",
    OBJECT_FACET_CLASS: "ReproObjectDatasetFacet-1-0-0.json",
}
#: Earlier versions, still shipped: events already sent name them in their ``_schemaURL``.
PREVIOUS_FACET_SCHEMA_FILES: tuple[str, ...] = ("ReproReplayRunFacet-1-0-0.json",)

TERMINAL_STATES = ("COMPLETE", "FAIL", "ABORT")
SHORT_VERSION = 7  # a version prefix at least this long matches, like a short git sha


def facet_schema_url(facet_class: str) -> str:
    """``_schemaURL`` of one of our facets: the shipped file's ``$id`` plus a JSON pointer."""
    return f"{SCHEMA_BASE_URL}{FACET_SCHEMA_FILES[facet_class]}#/$defs/{facet_class}"


def shipped_schemas() -> dict[str, dict[str, Any]]:
    """Our facets' JSON Schemas as shipped in the package, by ``$id`` (no network)."""
    folder = resources.files("airflow_repro") / "schemas" / "openlineage"
    schemas = {}
    for file_name in sorted([*FACET_SCHEMA_FILES.values(), *PREVIOUS_FACET_SCHEMA_FILES]):
        schema = json.loads((folder / file_name).read_text(encoding="utf-8"))
        schemas[schema["$id"]] = schema
    return schemas


# -- reading events ------------------------------------------------------------------------------
def parse_events(text: str, *, source: str = "<events>") -> list[dict[str, Any]]:
    """Events from JSON Lines, a JSON array, one event, or an export object ``{"events": [...]}``."""
    stripped = text.strip()
    if not stripped:
        return []
    try:
        whole = json.loads(stripped)
    except json.JSONDecodeError:
        whole = None
    if whole is not None:
        return _events_of(whole, source)
    events = []
    for number, line in enumerate(stripped.splitlines(), 1):
        if not line.strip():
            continue
        try:
            events.extend(_events_of(json.loads(line), f"{source}:{number}"))
        except json.JSONDecodeError as exc:
            raise ReproUserError(
                f"{source}, line {number}: not a JSON event ({exc.msg}); expected "
                "OpenLineage events, one JSON object per line"
            ) from exc
    return events


def _events_of(value: Any, source: str) -> list[dict[str, Any]]:
    if isinstance(value, Mapping) and isinstance(value.get("events"), list):
        value = value["events"]
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ReproUserError(f"{source}: expected OpenLineage events (objects), got {type(value).__name__}")
    return [dict(v) for v in value]


def load_event_files(path: Path) -> list[dict[str, Any]]:
    """Events of a file, or of every ``*.json``/``*.jsonl`` file of a folder (file transport with
    ``append: false`` writes one file per event)."""
    try:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl") and p.is_file())
        elif path.is_file():
            files = [path]
        else:
            raise ReproUserError(
                f"{path} is neither a file nor a folder of OpenLineage events "
                "(give the file transport's log_file_path, or an http(s) export URL)"
            )
        events = []
        for file in files:
            events.extend(parse_events(_read_events_text(file), source=str(file)))
    except OSError as exc:
        raise ReproUserError(
            f"cannot read OpenLineage events from {exc.filename or path}: {exc.strerror or exc}"
        ) from exc
    return events


def _read_events_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ReproUserError(
            f"{file} is not a text file of OpenLineage events (byte {exc.start} is not "
            "UTF-8); give the file transport's JSON Lines file"
        ) from exc


# -- runs, merged from their events --------------------------------------------------------------
@dataclass(frozen=True)
class DatasetVersion:
    namespace: str
    name: str
    version: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "name": self.name, "version": self.version}


@dataclass
class RunView:
    """What the events of one run say, merged."""

    run_id: str
    job_namespace: str
    job_name: str
    state: str | None = None  # the last lifecycle event type seen (START, COMPLETE, FAIL, ...)
    started_at: str | None = None
    ended_at: str | None = None
    run_facets: dict[str, Any] = field(default_factory=dict)
    job_facets: dict[str, Any] = field(default_factory=dict)
    inputs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    outputs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def input_versions(self) -> list[DatasetVersion]:
        return [_version_of(d) for d in self.inputs.values()]

    def output_versions(self) -> list[DatasetVersion]:
        return [_version_of(d) for d in self.outputs.values()]


def _version_of(dataset: Mapping[str, Any]) -> DatasetVersion:
    version = ((dataset.get("facets") or {}).get("version") or {}).get("datasetVersion")
    return DatasetVersion(str(dataset.get("namespace")), str(dataset.get("name")), version)


def merge_runs(events: Iterable[Mapping[str, Any]]) -> dict[str, RunView]:
    """Run events grouped by run id, merged in event-time order (other event kinds are skipped)."""
    run_events = [e for e in events if isinstance(e.get("run"), Mapping) and isinstance(e.get("job"), Mapping)]
    run_events.sort(key=lambda e: str(e.get("eventTime") or ""))
    runs: dict[str, RunView] = {}
    for event in run_events:
        run_id = str(event["run"].get("runId"))
        job = event["job"]
        view = runs.setdefault(run_id, RunView(run_id, str(job.get("namespace")), str(job.get("name"))))
        kind = str(event.get("eventType") or "")
        when = event.get("eventTime")
        if kind == "START" and view.started_at is None:
            view.started_at = when
        if kind in TERMINAL_STATES:
            view.ended_at = when
        if kind and kind != "OTHER":
            view.state = kind
        view.run_facets.update(event["run"].get("facets") or {})
        view.job_facets.update(job.get("facets") or {})
        for side, datasets in ((view.inputs, event.get("inputs")), (view.outputs, event.get("outputs"))):
            for dataset in datasets or []:
                key = (str(dataset.get("namespace")), str(dataset.get("name")))
                merged = dict(side.get(key) or {})
                merged.update({k: v for k, v in dataset.items() if k != "facets"})
                merged["facets"] = {**(merged.get("facets") or {}), **(dataset.get("facets") or {})}
                side[key] = merged
    return runs


def _object_identity(dataset: Mapping[str, Any]) -> tuple[str, str, str, str] | None:
    """(namespace, name, content hash, ref): the same object version across commits of one ref."""
    facet = (dataset.get("facets") or {}).get(OBJECT_FACET) or {}
    if not facet.get("contentHash"):
        return None
    return (str(dataset.get("namespace")), str(dataset.get("name")), str(facet["contentHash"]), str(facet.get("ref")))


def _same_objects(runs: Iterable[RunView], name: str, namespace: str | None, version: str) -> set[Any]:
    """The object identities of every dataset seen at exactly ``version``."""
    found = set()
    for run in runs:
        for dataset in [*run.inputs.values(), *run.outputs.values()]:
            identity = _object_identity(dataset)
            if identity is not None and _matches(_version_of(dataset), name, namespace, version):
                found.add(identity)
    return found


def _matches(dataset: DatasetVersion, name: str, namespace: str | None, version: str | None) -> bool:
    if dataset.name != name or (namespace is not None and dataset.namespace != namespace):
        return False
    if version is None:
        return True
    if dataset.version is None:
        return False
    return dataset.version == version or (len(version) >= SHORT_VERSION and dataset.version.startswith(version))


# -- the two questions ---------------------------------------------------------------------------
def produced_by(
    events: Iterable[Mapping[str, Any]], name: str, *, namespace: str | None = None, version: str | None = None
) -> list[dict[str, Any]]:
    """The completed runs that wrote dataset ``name`` (at ``version``, a commit id or a prefix of
    one): for each, the commit, the data commits it read, its environment (image) and its code.

    A ``version`` at which no run wrote ``name`` (a later commit that a reader saw it at) is
    answered by the run that wrote the same object on the same ref. Latest first.
    """
    every = list(merge_runs(events).values())
    runs = [r for r in every if r.state == "COMPLETE"]  # a failed attempt commits nothing
    answers = [
        _production(run, _version_of(d), "version")
        for run in runs
        for d in run.outputs.values()
        if _matches(_version_of(d), name, namespace, version)
    ]
    if not answers and version is not None:
        same = _same_objects(every, name, namespace, version)
        answers = [
            _production(run, _version_of(d), "content")
            for run in runs
            for d in run.outputs.values()
            if _object_identity(d) in same
        ]
    answers.sort(key=lambda a: str(a["run"]["endedAt"] or ""), reverse=True)
    return answers


def readers(
    events: Iterable[Mapping[str, Any]], name: str, version: str, *, namespace: str | None = None
) -> list[dict[str, Any]]:
    """The runs (any state) that read dataset ``name`` at ``version``, or the same object at a later
    commit of the same ref (``matchedBy: content``). Oldest first."""
    runs = list(merge_runs(events).values())
    same = _same_objects(runs, name, namespace, version)
    answers: list[dict[str, Any]] = []
    for run in runs:
        for dataset in run.inputs.values():
            read = _version_of(dataset)
            if _matches(read, name, namespace, version):
                matched = "version"
            elif read.name == name and _object_identity(dataset) in same:
                matched = "content"
            else:
                continue
            answers.append(
                {
                    "dataset": read.as_dict(),
                    "matchedBy": matched,
                    "run": _run_summary(run),
                    "outputs": [o.as_dict() for o in run.output_versions()],
                }
            )
    answers.sort(key=lambda a: str(a["run"]["startedAt"] or a["run"]["endedAt"] or ""))
    return answers


def dataset_versions(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every dataset version the events mention, with how many runs wrote and read it."""
    table: dict[DatasetVersion, dict[str, int]] = {}
    for run in merge_runs(events).values():
        for output in run.output_versions() if run.state == "COMPLETE" else []:
            table.setdefault(output, {"writers": 0, "readers": 0})["writers"] += 1
        for read in run.input_versions():
            table.setdefault(read, {"writers": 0, "readers": 0})["readers"] += 1
    return [
        {**d.as_dict(), **counts}
        for d, counts in sorted(table.items(), key=lambda i: (i[0].namespace, i[0].name, i[0].version or ""))
    ]


def _run_summary(run: RunView) -> dict[str, Any]:
    manifest = run.run_facets.get(MANIFEST_FACET) or {}
    return {
        "runId": run.run_id,
        "job": {"namespace": run.job_namespace, "name": run.job_name},
        "state": run.state,
        "startedAt": run.started_at,
        "endedAt": run.ended_at,
        "airflow": manifest.get("task"),
        "manifestDigest": manifest.get("manifestDigest"),
        "parent": _parent(run.run_facets.get("parent")),
    }


def _parent(facet: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not facet:
        return None
    return {"runId": (facet.get("run") or {}).get("runId"), "job": facet.get("job")}


def _production(run: RunView, output: DatasetVersion, matched: str) -> dict[str, Any]:
    manifest = run.run_facets.get(MANIFEST_FACET) or {}
    location = run.job_facets.get("sourceCodeLocation") or {}
    replay = run.run_facets.get(REPLAY_FACET)
    return {
        "dataset": output.as_dict(),
        "matchedBy": matched,
        "run": _run_summary(run),
        "commit": {
            "id": manifest.get("commitId") or output.version,
            "repository": manifest.get("repository"),
            "branch": manifest.get("branch"),
        },
        "inputs": [d.as_dict() for d in run.input_versions()],
        "environment": manifest.get("environment"),
        "code": {
            **(manifest.get("code") or {}),
            "location": {
                k: location[k] for k in ("type", "url", "repoUrl", "path", "version", "tag", "branch") if k in location
            }
            or None,
        },
        "seed": manifest.get("seed"),
        "resources": manifest.get("resources"),
        "mlflow": manifest.get("mlflow"),
        "replay": {k: v for k, v in replay.items() if not k.startswith("_")} if replay else None,
    }


__all__ = [
    "MANIFEST_FACET",
    "OBJECT_FACET",
    "REPLAY_FACET",
    "DatasetVersion",
    "RunView",
    "dataset_versions",
    "facet_schema_url",
    "load_event_files",
    "merge_runs",
    "parse_events",
    "produced_by",
    "readers",
    "shipped_schemas",
]
