"""The formats that cross between the worker and a task's own process; this module owns each of them.

* :class:`ContextFile`, the task context file ``$AIRFLOW_REPRO_CONTEXT`` names: written by the
  recorder before a local task runs, read by the runtime (in the worker's process or a lockfile
  virtualenv);
* :class:`PodEnv`, the ``AIRFLOW_REPRO_*`` variables of a pod task's container (:data:`POD_ENV`):
  written by the pod operator, read by the runtime in the pod;
* :class:`PodReport`, the pod task's termination message: written by the runtime when the task's
  process exits, read by the pod operator from the container's status;
* :class:`CallArguments`, a decorated task's positional and keyword arguments in the file a lockfile
  virtualenv or a restored replay reads them from (a pod gets them in ``AIRFLOW_REPRO_ARGS`` /
  ``AIRFLOW_REPRO_KWARGS``);
* :data:`NO_RETRY_EXIT_CODE`, the exit status of a task's own process whose failure a retry cannot
  mend (it misused the runtime).

Each is a frozen dataclass with its ``to_*`` / ``from_*`` pair, so writer and reader cannot drift
apart. (The fourth format that crosses a process, the replay marker in a DAG run's conf, is
:class:`airflow_repro.core.replay.ReplayMarker`: only Airflow-side code reads it.) Standard library
only: the runtime ships with this module into images and virtualenvs that have neither Airflow nor
pydantic. Readers raise ``KeyError``, ``ValueError`` or ``TypeError`` on a malformed value; the
runtime turns them into its ``RuntimeContextError`` (:mod:`airflow_repro.errors`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

CONTEXT_ENV = "AIRFLOW_REPRO_CONTEXT"
#: Set (to "1") in a process that imports an archived DAG file only to run one of its functions.
RESTORED_CODE_ENV = "AIRFLOW_REPRO_RESTORED_CODE"
REPORT_KIND = "airflow-repro/pod-report"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"  # where the kubelet reads a container's message
TERMINATION_MESSAGE_LIMIT = 4096  # bytes the kubelet keeps of a termination message
#: Stands for the map index in a declared output path (``outputs=["shards/{map_index}.csv"]``).
MAP_INDEX_PLACEHOLDER = "{map_index}"
#: Exit status of a task's own process (lockfile virtualenv, restored replay, pod) that failed in a
#: way a retry cannot mend: the task misused the runtime (sysexits' EX_CONFIG).
NO_RETRY_EXIT_CODE = 78
NO_RETRY_MESSAGE_LIMIT = 1000  # characters of that error a pod's report keeps


@dataclass(frozen=True)
class PinnedInput:
    """An input as the task reads it: a local, read-only copy of a path at a commit."""

    name: str
    path: Path
    repository: str
    commit_id: str
    store_path: str

    def to_json(self) -> dict[str, str]:
        return {
            "path": str(self.path),
            "repository": self.repository,
            "commit_id": self.commit_id,
            "store_path": self.store_path,
        }

    @classmethod
    def from_json(cls, name: str, raw: Mapping[str, Any]) -> PinnedInput:
        return cls(
            name=name,
            path=Path(raw["path"]),
            repository=raw["repository"],
            commit_id=raw["commit_id"],
            store_path=raw["store_path"],
        )


def _inputs_to_json(inputs: Mapping[str, PinnedInput]) -> dict[str, dict[str, str]]:
    return {name: pinned.to_json() for name, pinned in inputs.items()}


def _inputs_from_json(raw: Any) -> dict[str, PinnedInput]:
    if not isinstance(raw, Mapping):
        raise TypeError(f"inputs must be a JSON object (name -> pinned input), not {type(raw).__name__}")
    return {name: PinnedInput.from_json(name, spec) for name, spec in raw.items()}


# -- the task context file -----------------------------------------------------------------------
@dataclass(frozen=True)
class ContextFile:
    """The pins of a local task attempt and where it writes, in the file ``$AIRFLOW_REPRO_CONTEXT`` names."""

    task: str  # dag_id.task_id
    seed: int | None
    output_dir: Path
    declared_outputs: tuple[str, ...]
    inputs: Mapping[str, PinnedInput]
    params: Mapping[str, Any] = field(default_factory=dict)  # the real values the task gets (not redacted)
    metrics_file: Path | None = None
    map_index: int = -1  # the task instance's map index; -1 when the task is not mapped

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "map_index": self.map_index,
            "seed": self.seed,
            "output_dir": str(self.output_dir),
            "declared_outputs": list(self.declared_outputs),
            "inputs": _inputs_to_json(self.inputs),
            "params": dict(self.params),
            "metrics_file": None if self.metrics_file is None else str(self.metrics_file),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ContextFile:
        return cls(
            task=raw["task"],
            seed=raw.get("seed"),
            output_dir=Path(raw["output_dir"]),
            declared_outputs=tuple(raw["declared_outputs"]),
            inputs=_inputs_from_json(raw["inputs"]),
            params=raw.get("params", {}),
            metrics_file=Path(raw["metrics_file"]) if raw.get("metrics_file") else None,
            map_index=_int_of(raw.get("map_index", -1), "map_index"),
        )

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True), encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> ContextFile:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


def _int_of(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    return value


# -- a task's arguments, in a file -------------------------------------------------------------------
@dataclass(frozen=True)
class CallArguments:
    """A task's positional and keyword arguments (JSON values), as its own process reads them from a
    file: ``{"args": [...], "kwargs": {...}}``. A file holding one plain object (the format before
    positional arguments travelled) reads as keyword arguments only."""

    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"args": list(self.args), "kwargs": dict(self.kwargs)}

    @classmethod
    def from_json(cls, raw: Any) -> CallArguments:
        if not isinstance(raw, Mapping):
            raise TypeError(f"the arguments file must hold a JSON object, not {type(raw).__name__}")
        if set(raw) == {"args", "kwargs"} and isinstance(raw["args"], list) and isinstance(raw["kwargs"], Mapping):
            return cls(args=tuple(raw["args"]), kwargs=dict(raw["kwargs"]))
        return cls(kwargs=dict(raw))  # the older format: keyword arguments only

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json()), encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> CallArguments:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


# -- the environment of a pod's task ----------------------------------------------------------------
def _env(name: str, doc: str, default: Any = None, factory: Any = MISSING) -> Any:
    """A field of :class:`PodEnv`: the variable it is read from, and what :data:`POD_ENV` says of it."""
    return field(
        default=MISSING if factory is not MISSING else default,
        default_factory=factory,
        metadata={"env": name, "doc": doc},
    )


@dataclass(frozen=True)
class PodEnv:
    """The pins of a task attempt in a pod, as the ``AIRFLOW_REPRO_*`` variables of its container.

    Values are pins, never secrets (the task's params and keyword arguments are what it is given;
    Kubernetes secrets reach the pod as ``secretKeyRef`` variables of their own).
    """

    task: str = _env("AIRFLOW_REPRO_TASK", "dag_id.task_id", default=MISSING)
    seed: int | None = _env("AIRFLOW_REPRO_SEED", "the recorded random seed")
    map_index: int = _env("AIRFLOW_REPRO_MAP_INDEX", "the task instance's map index (-1: not mapped)", default=-1)
    inputs: Mapping[str, PinnedInput] = _env(
        "AIRFLOW_REPRO_INPUTS", "JSON: input name -> {path, repository, commit_id, store_path}", factory=dict
    )
    declared_outputs: tuple[str, ...] = _env("AIRFLOW_REPRO_OUTPUTS", "JSON list of the declared outputs", default=())
    output_dir: str | None = _env("AIRFLOW_REPRO_OUTPUT_DIR", "pod-local folder the task writes its outputs to")
    output_uri: str | None = _env(
        "AIRFLOW_REPRO_OUTPUT_URI", "where outputs are handed to the worker (file:///<shared volume>/...)"
    )
    output_repository: str | None = _env("AIRFLOW_REPRO_OUTPUT_REPOSITORY", "repository the outputs are committed to")
    output_branch: str | None = _env("AIRFLOW_REPRO_OUTPUT_BRANCH", "the DAG run's branch they are committed on")
    params: Mapping[str, Any] = _env("AIRFLOW_REPRO_PARAMS", "JSON of the task's params", factory=dict)
    args: tuple[Any, ...] = _env(
        "AIRFLOW_REPRO_ARGS", "JSON list of a decorated task's positional arguments", default=()
    )
    kwargs: Mapping[str, Any] = _env(
        "AIRFLOW_REPRO_KWARGS", "JSON of a decorated task's keyword arguments", factory=dict
    )
    metrics_file: str | None = _env("AIRFLOW_REPRO_METRICS_FILE", "where logged metrics are written")
    mlflow_run_id: str | None = _env("AIRFLOW_REPRO_MLFLOW_RUN_ID", "the task attempt's MLflow run")
    mlflow_tracking_uri: str | None = _env("AIRFLOW_REPRO_MLFLOW_TRACKING_URI", "the MLflow tracking server")
    report_file: str | None = _env(
        "AIRFLOW_REPRO_REPORT_FILE", "where the hardware report goes (the pod's termination message file)"
    )
    transfer_file: str | None = _env(
        "AIRFLOW_REPRO_TRANSFER_FILE",
        "presigned transport: the mounted Secret file with this attempt's presigned URLs (never the URLs)",
    )

    @classmethod
    def env_name(cls, field_name: str) -> str:
        """The variable a field is read from: ``PodEnv.env_name("kwargs") == "AIRFLOW_REPRO_KWARGS"``."""
        return str(next(spec.metadata["env"] for spec in fields(cls) if spec.name == field_name))

    @classmethod
    def for_context(cls, context: ContextFile, **pod_only: Any) -> PodEnv:
        """The pod's pins for the attempt the recorder laid out in ``context`` (plus what only a pod needs)."""
        return cls(
            task=context.task,
            seed=context.seed,
            map_index=context.map_index,
            inputs=context.inputs,
            declared_outputs=tuple(context.declared_outputs),
            params=context.params,
            metrics_file=None if context.metrics_file is None else str(context.metrics_file),
            **pod_only,
        )

    def to_env(self) -> dict[str, str]:
        """The variables, in :data:`POD_ENV`'s order; unset (``None``) values are left out."""
        env: dict[str, str] = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.name == "inputs":
                env[spec.metadata["env"]] = json.dumps(_inputs_to_json(value), sort_keys=True)
            elif spec.name in ("declared_outputs", "args"):
                env[spec.metadata["env"]] = json.dumps(list(value))
            elif spec.name in ("params", "kwargs"):
                env[spec.metadata["env"]] = json.dumps(dict(value), sort_keys=True)
            elif value is not None:
                env[spec.metadata["env"]] = str(value)
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> PodEnv:
        """Read the variables; ``AIRFLOW_REPRO_TASK`` is required, the rest default to empty."""
        values: dict[str, Any] = {}
        for spec in fields(cls):
            text = environ.get(spec.metadata["env"])
            if spec.name == "task":
                values["task"] = environ[spec.metadata["env"]]
            elif spec.name == "seed":
                values["seed"] = int(text) if text else None
            elif spec.name == "map_index":
                values["map_index"] = int(text) if text else -1
            elif spec.name == "inputs":
                values["inputs"] = _inputs_from_json(json.loads(text or "{}"))
            elif spec.name in ("declared_outputs", "args"):
                values[spec.name] = tuple(_json_of(text or "[]", list, spec.metadata["env"]))
            elif spec.name in ("params", "kwargs"):
                values[spec.name] = _json_of(text or "{}", dict, spec.metadata["env"])
            elif spec.name in ("output_dir", "metrics_file", "report_file", "transfer_file"):
                values[spec.name] = text or None  # a path: empty means unset
            else:
                values[spec.name] = text
        return cls(**values)


def _json_of(text: str, kind: type, name: str) -> Any:
    value = json.loads(text)
    if not isinstance(value, kind):
        raise TypeError(f"{name} must hold a JSON {'list' if kind is list else 'object'}, not {type(value).__name__}")
    return value


#: The environment variables a pod's task reads its pins from (names -> what they hold).
POD_ENV: dict[str, str] = {spec.metadata["env"]: spec.metadata["doc"] for spec in fields(PodEnv)}
TASK_ENV = PodEnv.env_name("task")


# -- the report of a pod's task -----------------------------------------------------------------------
@dataclass(frozen=True)
class PodReport:
    """What a pod's task reports at exit (in its termination message): outputs handed over, metrics,
    and the hardware and Python it saw. Every field is optional on reading: a report may have been
    cut to fit the kubelet's 4 KiB (``gpus_truncated``), or come from another version of the runtime."""

    outputs: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)
    python: str | None = None
    hostname: str | None = None
    platform: str | None = None
    machine: str | None = None
    cpu_count: int | None = None
    memory_bytes: int | None = None
    gpus: tuple[Mapping[str, str], ...] = ()
    libraries: Mapping[str, str] = field(default_factory=dict)
    gpus_truncated: bool = False
    #: Set where the task failed in a way a retry cannot mend (it misused the runtime): what it raised.
    no_retry: str | None = None
    #: Presigned transport: what the pod uploaded, path -> [size in bytes, the object store's ETag].
    uploads: Mapping[str, tuple[int, str]] = field(default_factory=dict)

    kind: ClassVar[str] = REPORT_KIND

    def to_dict(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "kind": REPORT_KIND,
            "outputs": self.outputs,
            "metrics": dict(self.metrics),
            "python": self.python,
            "hostname": self.hostname,
            "platform": self.platform,
            "machine": self.machine,
            "cpu_count": self.cpu_count,
            "memory_bytes": self.memory_bytes,
            "gpus": [dict(gpu) for gpu in self.gpus],
            "libraries": dict(self.libraries),
        }
        if self.gpus_truncated:
            report["gpus_truncated"] = True
        if self.no_retry is not None:
            report["no_retry"] = self.no_retry[:NO_RETRY_MESSAGE_LIMIT]
        if self.uploads:
            report["uploads"] = {path: [size, etag] for path, (size, etag) in self.uploads.items()}
        return report

    def to_message(self, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
        """The report as a termination message within ``limit`` bytes: GPUs beyond what fits are
        dropped (they are of one model), then, if still too long, all but kind, Python and outputs."""
        report = self.to_dict()
        text = json.dumps(report, sort_keys=True, separators=(",", ":"))
        while len(text.encode()) > limit and report.get("gpus"):
            report["gpus"] = report["gpus"][:-1]
            report["gpus_truncated"] = True
            text = json.dumps(report, sort_keys=True, separators=(",", ":"))
        if len(text.encode()) > limit:
            kept = ("kind", "python", "gpus", "outputs", "no_retry", "uploads")
            text = json.dumps({k: report[k] for k in kept if k in report})
        return text

    @classmethod
    def from_message(cls, message: str | None) -> PodReport | None:
        """The report in a termination message; ``None`` where there is none (or it is another's)."""
        if not message:
            return None
        try:
            raw = json.loads(message)
        except ValueError:
            return None
        if not isinstance(raw, dict) or raw.get("kind") != REPORT_KIND:
            return None
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PodReport:
        """Lenient: a value of the wrong type reads as absent."""

        def typed(name: str, kind: type | tuple[type, ...]) -> Any:
            value = raw.get(name)
            return value if isinstance(value, kind) and not isinstance(value, bool) else None

        metrics = raw.get("metrics")
        metrics = metrics if isinstance(metrics, dict) else {}
        libraries = raw.get("libraries")
        libraries = libraries if isinstance(libraries, dict) else {}
        gpus = raw.get("gpus")
        gpus = gpus if isinstance(gpus, list) else []
        return cls(
            outputs=typed("outputs", int) or 0,
            metrics={
                str(k): float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
            },
            python=typed("python", str),
            hostname=typed("hostname", str),
            platform=typed("platform", str),
            machine=typed("machine", str),
            cpu_count=typed("cpu_count", int),
            memory_bytes=typed("memory_bytes", int),
            gpus=tuple({str(k): str(v) for k, v in gpu.items()} for gpu in gpus if isinstance(gpu, dict)),
            libraries={str(k): str(v) for k, v in libraries.items()},
            gpus_truncated=raw.get("gpus_truncated") is True,
            no_retry=typed("no_retry", str),
            uploads=_uploads_of(raw.get("uploads")),
        )


def _uploads_of(raw: Any) -> dict[str, tuple[int, str]]:
    """The ``uploads`` of a report: well-formed ``path: [size, etag]`` entries only."""
    if not isinstance(raw, dict):
        return {}
    return {
        str(path): (int(entry[0]), str(entry[1]))
        for path, entry in raw.items()
        if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], int) and not isinstance(entry[0], bool)
    }


__all__ = [
    "CONTEXT_ENV",
    "MAP_INDEX_PLACEHOLDER",
    "NO_RETRY_EXIT_CODE",
    "RESTORED_CODE_ENV",
    "POD_ENV",
    "REPORT_KIND",
    "TASK_ENV",
    "TERMINATION_MESSAGE_LIMIT",
    "TERMINATION_MESSAGE_PATH",
    "CallArguments",
    "ContextFile",
    "PinnedInput",
    "PodEnv",
    "PodReport",
]
