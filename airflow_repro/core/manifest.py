"""Task and DAG-run manifests: what one task attempt ran with, on five axes.

A manifest is a frozen pydantic model. Its *canonical JSON* (sorted keys, no insignificant
whitespace, UTF-8) is what gets hashed into the ``digest`` and what is committed next to the
task's outputs, so the same content always has the same digest on every machine.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from airflow_repro.core.comparison import Tolerance
from airflow_repro.errors import ManifestError

SCHEMA_VERSION: Final = "1.0"
TASK_MANIFEST_KIND: Final = "airflow-repro/task-manifest"
DAG_RUN_MANIFEST_KIND: Final = "airflow-repro/dag-run-manifest"
DIGEST_PREFIX = "sha256:"

JsonValue = Any


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CanonicalDocument:
    """A stored JSON document whose digest is ``sha256:<hex>`` of its canonical JSON (manifests,
    replay plans, code snapshots, environment records: the same content has the same digest)."""

    def canonical_json(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))  # type: ignore[attr-defined]  # on pydantic models

    @property
    def digest(self) -> str:
        return DIGEST_PREFIX + hashlib.sha256(self.canonical_json()).hexdigest()


def _unset(value: Any) -> bool:
    return value is None


# Fields added after 1.0 are left out of the canonical JSON while unset, so manifests written
# before they existed keep their digests.
def _optional(description: str, **kwargs: Any) -> Any:
    return Field(default=None, description=description, exclude_if=_unset, **kwargs)


class AirflowIdentity(_Frozen):
    """Which task attempt this is, in Airflow's own terms."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1
    try_number: int = Field(ge=0)
    run_type: str | None = None
    logical_date: str | None = None


class CodeVersion(_Frozen):
    """The code that ran: the DAG bundle's version and a hash of the task's own source."""

    bundle_name: str | None = None
    bundle_version: str | None = Field(
        default=None, description="The bundle version the worker checked out (git sha for GitDagBundle)."
    )
    dag_file: str | None = Field(default=None, description="DAG file path relative to the bundle root.")
    callable: str | None = Field(default=None, description="module:qualname of the task callable.")
    source_hash: str = Field(description="sha256:<hex> of the task callable's source code.")
    module_hash: str | None = Field(default=None, description="sha256:<hex> of the callable's module file.")
    snapshot: str | None = _optional(
        "sha256:<hex> of the archived code snapshot: the DAG file and every bundle module it imports."
    )
    script: str | None = _optional("sha256:<hex> of the archived script the task's own interpreter ran (pods).")


class EnvironmentPin(_Frozen):
    """The environment a task ran in: a lockfile, an image digest or an environment fingerprint."""

    kind: Literal["lockfile", "fingerprint", "image"]
    digest: str = Field(description="sha256 of the lockfile, the image digest, or the fingerprint hash.")
    python: str
    lockfile: str | None = Field(default=None, description="Lockfile path as the DAG declared it.")
    image: str | None = None
    distributions: int | None = Field(default=None, description="How many distributions the pin covers.")


class DataInput(_Frozen):
    """An input resolved to an immutable commit id before the task ran."""

    name: str
    repository: str
    ref: str = Field(description="The ref as declared (branch, tag or commit).")
    commit_id: str = Field(pattern=r"^[0-9a-f]{64}$")
    path: str
    content_hash: str
    size: int = Field(ge=0)


class DataOutput(_Frozen):
    """An object the task wrote, by content hash."""

    path: str
    content_hash: str
    size: int = Field(ge=0)
    tolerance: Tolerance | None = _optional(
        "The tolerance the task declared for this output (Output(abs_tol=..., rel_tol=...)); unset: exact."
    )


class Parameters(_Frozen):
    """Everything that parametrized the task. Secrets are never values here, only names."""

    task_params: dict[str, JsonValue] = Field(default_factory=dict)
    dag_run_conf: dict[str, JsonValue] = Field(default_factory=dict)
    op_kwargs: dict[str, JsonValue] = Field(default_factory=dict)
    op_args: list[JsonValue] | None = _optional(
        "Positional arguments of the task's callable (secrets redacted); left out where there are none."
    )
    seed: int | None = None
    secret_names: list[str] = Field(
        default_factory=list, description="Names of connections/variables/env vars holding secrets."
    )


class Resources(_Frozen):
    """What the task asked for."""

    cpu: float | None = Field(default=None, gt=0)
    memory: str | None = None
    gpu: int = Field(default=0, ge=0)
    accelerator: str | None = None
    cpu_limit: float | None = _optional("CPU limit in cores (Kubernetes).", gt=0)
    memory_limit: str | None = _optional("Memory limit as a Kubernetes quantity.")
    gpu_resource: str | None = _optional("Extended resource the GPUs are requested as: nvidia.com/gpu or a MIG slice.")
    gpu_product: str | None = _optional("nvidia.com/gpu.product node label the pod was scheduled by.")


class Hardware(_Frozen):
    """What the task actually ran on."""

    hostname: str | None = None
    platform: str
    machine: str
    cpu_count: int | None = None
    cpu_model: str | None = None
    memory_bytes: int | None = None
    gpus: list[dict[str, str]] = Field(default_factory=list)
    threads: dict[str, str] | None = _optional(
        "Thread settings of the task's process (OMP_NUM_THREADS, MKL_NUM_THREADS, ...) where set."
    )


class Versions(_Frozen):
    """Versions of Python, Airflow, providers and key libraries (recorded, not pinned)."""

    python: str
    airflow: str | None = None
    task_sdk: str | None = None
    airflow_repro: str | None = None
    providers: dict[str, str] = Field(default_factory=dict)
    libraries: dict[str, str] = Field(default_factory=dict)


class Tracking(_Frozen):
    """Links to the experiment tracker and lineage."""

    mlflow_run_id: str | None = None
    mlflow_experiment_id: str | None = None
    mlflow_tracking_uri: str | None = None


class ReusedFrom(_Frozen):
    """Where a reused task's outputs come from: the replayed run's commit that holds them."""

    run_id: str
    commit_id: str = Field(pattern=r"^[0-9a-f]{64}$")


class ReplayInfo(_Frozen):
    """Set on the manifests of a replay: which run it replays, how, and with which plan."""

    of_run_id: str
    mode: Literal["pinned", "latest-code"]
    plan_digest: str
    original_manifest_digest: str | None = Field(
        default=None, description="Manifest of the same task in the replayed run (None for a task added since)."
    )
    code: Literal["current", "restored"] | None = _optional(
        "Whether the task ran the code of the DAG as it is now, or the archived code of the replayed run."
    )
    environment: Literal["current", "restored"] | None = _optional(
        "Whether the task ran in the environment as it is now, or one rebuilt from the replayed run's record."
    )
    reused_from: ReusedFrom | None = _optional(
        "Set when the task did not run (a replay from a later task): its outputs are the replayed run's, at this commit."
    )


class KubernetesPod(_Frozen):
    """Where a task ran on Kubernetes, as the cluster reported it after the pod finished."""

    namespace: str
    pod_name: str
    node_name: str | None = None
    image: str = Field(description="The image reference the pod asked for (pinned by digest).")
    image_id: str | None = Field(default=None, description="containerStatuses[].imageID: what the kubelet ran.")
    image_digest: str | None = Field(default=None, description="The sha256 digest in image_id.")
    resolved_from_tag: str | None = Field(
        default=None, description="The tag the DAG named, where the digest was resolved from it (resolve_tag=True)."
    )
    phase: str | None = None
    secret_refs: list[str] = Field(
        default_factory=list, description="Kubernetes secrets given to the pod, as 'secret/key' names only."
    )


class Timing(_Frozen):
    started_at: str
    ended_at: str | None = None
    duration_s: float | None = None


class TaskManifest(CanonicalDocument, _Frozen):
    """One task attempt, pinned on code, environment, data, parameters and hardware."""

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    kind: Literal["airflow-repro/task-manifest"] = TASK_MANIFEST_KIND
    identity: AirflowIdentity
    code: CodeVersion
    environment: EnvironmentPin
    inputs: list[DataInput] = Field(default_factory=list)
    outputs: list[DataOutput] = Field(default_factory=list)
    output_repository: str
    output_branch: str
    parameters: Parameters = Field(default_factory=Parameters)
    resources: Resources = Field(default_factory=Resources)
    hardware: Hardware
    versions: Versions
    tracking: Tracking = Field(default_factory=Tracking)
    timing: Timing
    replay: ReplayInfo | None = None
    kubernetes: KubernetesPod | None = _optional("Set when the task ran in a Kubernetes pod.")

    @field_validator("outputs")
    @classmethod
    def _outputs_sorted_unique(cls, outputs: list[DataOutput]) -> list[DataOutput]:
        paths = [o.path for o in outputs]
        if len(set(paths)) != len(paths):
            raise ValueError("output paths must be unique")
        return sorted(outputs, key=lambda o: o.path)


class DagRunManifestEntry(_Frozen):
    """One task of a DAG run as the DAG-run manifest lists it."""

    task_id: str
    map_index: int = -1
    try_number: int
    manifest_digest: str
    manifest_path: str
    commit_id: str
    mlflow_run_id: str | None = None


class UnrecordedTask(_Frozen):
    """A task instance of the DAG run that left no manifest: a plain operator (re-run on replay
    with whatever it reads then), or a recorded task that failed, was skipped or never ran."""

    task_id: str
    map_index: int = -1
    state: str | None = None


class DagRunManifest(CanonicalDocument, _Frozen):
    """A DAG run: the manifests of its tasks and the commit that closes the run."""

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    kind: Literal["airflow-repro/dag-run-manifest"] = DAG_RUN_MANIFEST_KIND
    dag_id: str
    run_id: str
    repository: str
    branch: str
    state: str
    tasks: list[DagRunManifestEntry]
    unrecorded_tasks: list[UnrecordedTask] | None = _optional(
        "Task instances of the run without a manifest, with their Airflow state (None: not known)."
    )


def canonical_json(value: JsonValue) -> bytes:
    """RFC 8785-style canonical form: sorted keys, compact separators, UTF-8, no NaN."""
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"value cannot be written as canonical JSON: {exc}") from exc
    return text.encode("utf-8")


def load_task_manifest(data: bytes | str, *, expected_digest: str | None = None) -> TaskManifest:
    """Parse a stored manifest; with ``expected_digest``, refuse content that does not match it."""
    try:
        manifest = TaskManifest.model_validate_json(data)
    except ValidationError as exc:
        raise ManifestError(f"not a valid task manifest: {exc}") from exc
    if expected_digest is not None and manifest.digest != expected_digest:
        raise ManifestError(
            f"manifest digest mismatch for {manifest.identity.dag_id}/{manifest.identity.run_id}/"
            f"{manifest.identity.task_id}: recorded {expected_digest}, content hashes to {manifest.digest}"
        )
    return manifest


def load_dag_run_manifest(data: bytes | str) -> DagRunManifest:
    try:
        return DagRunManifest.model_validate_json(data)
    except ValidationError as exc:
        raise ManifestError(f"not a valid DAG-run manifest: {exc}") from exc


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schemas of both manifest kinds, as shipped in ``airflow_repro/schemas``."""
    schemas = {}
    for name, model in (("task-manifest", TaskManifest), ("dag-run-manifest", DagRunManifest)):
        schema = model.model_json_schema(mode="serialization")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://airflow-repro.dev/schemas/{name}/{SCHEMA_VERSION}.json"
        schemas[name] = schema
    return schemas
