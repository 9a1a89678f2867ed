"""Task-side runtime: what code inside a task calls to read pinned inputs and write outputs.

Standard library only, and importable without Airflow: the same calls work in the worker process,
in a task's pinned virtualenv and inside a Kubernetes pod. The lineage hook writes a context file
before the task starts and points ``AIRFLOW_REPRO_CONTEXT`` at it::

    from airflow_repro import runtime

    ctx = runtime.current()
    frame = pandas.read_csv(ctx.input_path("raw"))       # pinned to a commit id
    frame.to_csv(ctx.output_path("features/train.csv"))  # committed after success
    ctx.log_metric("rows", len(frame))                   # logged to the task's MLflow run
    rng = numpy.random.default_rng(ctx.seed)             # the recorded seed

In a Kubernetes pod there is no context file: the operator puts the pins in ``AIRFLOW_REPRO_*``
environment variables (see :data:`POD_ENV`) and :func:`current` reads them. There, outputs are
written to a pod-local folder and, when the task's process exits, handed to the worker through an
:class:`OutputTransport` (the worker commits them with the manifest); a small JSON report of the
hardware the task saw (GPU model and driver) is written to the pod's termination message, where
the operator reads it back.
"""

from __future__ import annotations

import atexit
import inspect
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol
from urllib.parse import unquote, urlparse

CONTEXT_ENV = "AIRFLOW_REPRO_CONTEXT"

#: The environment variables a pod's task reads its pins from (names -> what they hold).
POD_ENV = {
    "AIRFLOW_REPRO_TASK": "dag_id.task_id",
    "AIRFLOW_REPRO_SEED": "the recorded random seed",
    "AIRFLOW_REPRO_INPUTS": "JSON: input name -> {path, repository, commit_id, store_path}",
    "AIRFLOW_REPRO_OUTPUTS": "JSON list of the declared outputs",
    "AIRFLOW_REPRO_OUTPUT_DIR": "pod-local folder the task writes its outputs to",
    "AIRFLOW_REPRO_OUTPUT_URI": "where outputs are handed to the worker (file:///<shared volume>/...)",
    "AIRFLOW_REPRO_OUTPUT_REPOSITORY": "repository the outputs are committed to",
    "AIRFLOW_REPRO_OUTPUT_BRANCH": "the DAG run's branch they are committed on",
    "AIRFLOW_REPRO_PARAMS": "JSON of the task's params",
    "AIRFLOW_REPRO_KWARGS": "JSON of a decorated task's keyword arguments",
    "AIRFLOW_REPRO_METRICS_FILE": "where logged metrics are written",
    "AIRFLOW_REPRO_MLFLOW_RUN_ID": "the task attempt's MLflow run",
    "AIRFLOW_REPRO_MLFLOW_TRACKING_URI": "the MLflow tracking server",
    "AIRFLOW_REPRO_REPORT_FILE": "where the hardware report goes (the pod's termination message file)",
}
TASK_ENV = "AIRFLOW_REPRO_TASK"
REPORT_KIND = "airflow-repro/pod-report"
TERMINATION_MESSAGE_LIMIT = 4096  # bytes the kubelet keeps of a termination message
XCOM_RETURN_FILE = Path("/airflow/xcom/return.json")  # KubernetesPodOperator's XCom sidecar convention

__all__ = [
    "CONTEXT_ENV", "POD_ENV", "OutputTransport", "RuntimeContextError", "TaskContext", "current",
    "hardware_report", "run_callable", "seed_everything",
]


class RuntimeContextError(RuntimeError):
    """The task-side context is missing, or a name the task used was not declared."""


@dataclass(frozen=True)
class PinnedInput:
    name: str
    path: Path
    repository: str
    commit_id: str
    store_path: str


@dataclass
class TaskContext:
    """The pins of the running task attempt, and where to write its outputs."""

    task: str
    seed: int | None
    output_dir: Path
    declared_outputs: tuple[str, ...]
    inputs: dict[str, PinnedInput]
    params: dict[str, Any] = field(default_factory=dict)
    metrics_file: Path | None = None
    output_repository: str | None = None
    output_branch: str | None = None
    mlflow_run_id: str | None = None
    mlflow_tracking_uri: str | None = None
    _metrics: dict[str, float] = field(default_factory=dict, repr=False)

    @classmethod
    def from_file(cls, path: Path) -> TaskContext:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        inputs = {
            name: PinnedInput(name=name, path=Path(spec["path"]), repository=spec["repository"],
                              commit_id=spec["commit_id"], store_path=spec["store_path"])
            for name, spec in raw["inputs"].items()
        }
        return cls(
            task=raw["task"],
            seed=raw.get("seed"),
            output_dir=Path(raw["output_dir"]),
            declared_outputs=tuple(raw["declared_outputs"]),
            inputs=inputs,
            params=raw.get("params", {}),
            metrics_file=Path(raw["metrics_file"]) if raw.get("metrics_file") else None,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TaskContext:
        """The context of a task in a pod, from the ``AIRFLOW_REPRO_*`` variables the operator set."""
        env = os.environ if environ is None else environ
        try:
            inputs = {
                name: PinnedInput(name=name, path=Path(spec["path"]), repository=spec["repository"],
                                  commit_id=spec["commit_id"], store_path=spec["store_path"])
                for name, spec in json.loads(env.get("AIRFLOW_REPRO_INPUTS") or "{}").items()
            }
            seed = env.get("AIRFLOW_REPRO_SEED")
            return cls(
                task=env[TASK_ENV],
                seed=int(seed) if seed else None,
                # Pod-local by default; handed over to the worker at exit (see OutputTransport).
                output_dir=Path(env.get("AIRFLOW_REPRO_OUTPUT_DIR") or tempfile.mkdtemp(prefix="airflow-repro-outputs-")),
                declared_outputs=tuple(json.loads(env.get("AIRFLOW_REPRO_OUTPUTS") or "[]")),
                inputs=inputs,
                params=json.loads(env.get("AIRFLOW_REPRO_PARAMS") or "{}"),
                metrics_file=Path(env["AIRFLOW_REPRO_METRICS_FILE"]) if env.get("AIRFLOW_REPRO_METRICS_FILE") else None,
                output_repository=env.get("AIRFLOW_REPRO_OUTPUT_REPOSITORY"),
                output_branch=env.get("AIRFLOW_REPRO_OUTPUT_BRANCH"),
                mlflow_run_id=env.get("AIRFLOW_REPRO_MLFLOW_RUN_ID"),
                mlflow_tracking_uri=env.get("AIRFLOW_REPRO_MLFLOW_TRACKING_URI"),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise RuntimeContextError(
                f"the AIRFLOW_REPRO_* environment of this pod is incomplete or malformed ({exc!r}); "
                "run it with ReproKubernetesPodOperator, which sets them"
            ) from exc

    # -- inputs ------------------------------------------------------------------------------
    def input(self, name: str) -> PinnedInput:
        try:
            return self.inputs[name]
        except KeyError:
            declared = ", ".join(sorted(self.inputs)) or "none"
            raise RuntimeContextError(
                f"task {self.task} has no input named {name!r} (declared: {declared}); "
                "declare it in the task's inputs={...}"
            ) from None

    def input_path(self, name: str) -> Path:
        """Local, read-only path of a pinned input."""
        return self.input(name).path

    def open_input(self, name: str, mode: str = "rb", **kwargs: Any) -> IO[Any]:
        if any(flag in mode for flag in "wax+"):
            raise RuntimeContextError(f"inputs are read-only; open {name!r} with mode 'r' or 'rb'")
        return open(self.input_path(name), mode, **kwargs)  # noqa: SIM115 - the caller closes it

    # -- outputs -----------------------------------------------------------------------------
    def output_path(self, path: str) -> Path:
        """Where to write a declared output; parent folders are created."""
        relative = PurePosixPath(path)
        if not self._is_declared(relative):
            declared = ", ".join(self.declared_outputs) or "none"
            raise RuntimeContextError(
                f"task {self.task} did not declare output {path!r} (declared: {declared}); "
                "add it to the task's outputs=[...] (a name ending in '/' declares a folder)"
            )
        target = self.output_dir.joinpath(*relative.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def open_output(self, path: str, mode: str = "wb", **kwargs: Any) -> IO[Any]:
        return open(self.output_path(path), mode, **kwargs)  # noqa: SIM115 - the caller closes it

    def _is_declared(self, path: PurePosixPath) -> bool:
        if path.is_absolute() or ".." in path.parts or not path.parts:
            return False
        text = path.as_posix()
        return any(
            text == declared or (declared.endswith("/") and text.startswith(declared))
            for declared in self.declared_outputs
        )

    # -- metrics -----------------------------------------------------------------------------
    def log_metric(self, name: str, value: float) -> None:
        """Record a metric; it is logged to the task's MLflow run after the task succeeds."""
        self.log_metrics({name: value})

    def log_metrics(self, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self._metrics[str(name)] = float(value)
        if self.metrics_file is not None:
            _write_json_atomically(self.metrics_file, self._metrics)

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)


_current: TaskContext | None = None


def current() -> TaskContext:
    """The running task's context: set in-process, read from ``$AIRFLOW_REPRO_CONTEXT``, or, in a
    Kubernetes pod, from the ``AIRFLOW_REPRO_*`` variables (outputs are then handed over at exit)."""
    global _current
    if _current is not None:
        return _current
    path = os.environ.get(CONTEXT_ENV)
    if path:
        _current = TaskContext.from_file(Path(path))
    elif os.environ.get(TASK_ENV):
        _current = TaskContext.from_env()
        _current.output_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(_finish_pod_task, _current)
    else:
        raise RuntimeContextError(
            "no airflow-repro task context: this code must run inside a task declared with "
            "@repro_task (or with $AIRFLOW_REPRO_CONTEXT pointing at a context file, or in a pod "
            "started by ReproKubernetesPodOperator)"
        )
    return _current


def _activate(context: TaskContext | None) -> None:
    """Set (or clear) the in-process context; used by the lineage hook, not by tasks."""
    global _current
    _current = context


def seed_everything(seed: int | None) -> None:
    """Seed Python's ``random`` and, where already imported, NumPy's and PyTorch's global RNGs."""
    if seed is None:
        return
    random.seed(seed)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(seed % 2**32)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


# -- in a Kubernetes pod -------------------------------------------------------------------------
class OutputTransport(Protocol):
    """Hands a finished task's outputs from the pod to the place the worker commits them from."""

    def publish(self, output_dir: Path, declared: tuple[str, ...]) -> int:
        """Make the files under ``output_dir`` available to the worker; return how many."""
        ...


@dataclass(frozen=True)
class SharedVolumeTransport:
    """Outputs copied to a folder on a volume the worker also mounts (``file://`` URIs).

    Files are copied under a temporary name and renamed, so the worker never reads half a file.
    """

    root: Path

    def publish(self, output_dir: Path, declared: tuple[str, ...]) -> int:
        count = 0
        for source in sorted(p for p in output_dir.rglob("*") if p.is_file() and not _is_partial(p)):
            target = self.root / source.relative_to(output_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.partial")
            shutil.copyfile(source, partial)
            os.replace(partial, target)
            count += 1
        return count


def _is_partial(path: Path) -> bool:
    """A temporary file of an interrupted copy (``.<name>.partial``): never an output."""
    return path.name.startswith(".") and path.name.endswith(".partial")


def transport_for(uri: str) -> OutputTransport:
    """The transport an ``AIRFLOW_REPRO_OUTPUT_URI`` names."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return SharedVolumeTransport(Path(unquote(parsed.path)))
    raise RuntimeContextError(
        f"no output transport for {uri!r}: this runtime hands outputs over through a shared volume "
        "(file:///<mount>/...); mount the worker's [repro] work_dir in the pod"
    )


def run_callable(function: Callable[..., Any]) -> Any:
    """Run a decorated task's function in a pod: pins from the environment, outputs handed over after.

    This is what the pod of a ``@repro_task`` in Kubernetes mode runs; the function's keyword
    arguments come as JSON in ``AIRFLOW_REPRO_KWARGS``, and a ``repro`` parameter gets the context.
    """
    ctx = current()
    seed_everything(ctx.seed)
    kwargs = json.loads(os.environ.get("AIRFLOW_REPRO_KWARGS") or "{}")
    parameters = inspect.signature(function).parameters
    if "repro" in parameters:
        kwargs["repro"] = ctx
    if "params" in parameters and "params" not in kwargs:  # the one Airflow context value a pod has
        kwargs["params"] = ctx.params
    result = function(**kwargs)
    if XCOM_RETURN_FILE.parent.is_dir():  # do_xcom_push=True mounts it; the sidecar reads it back
        XCOM_RETURN_FILE.write_text(json.dumps(result), encoding="utf-8")
    return result


def _finish_pod_task(ctx: TaskContext) -> None:
    """At the pod task's exit: hand the outputs over and report the hardware it saw.

    Runs as an ``atexit`` handler, whose exceptions Python prints and ignores (the exit status stays
    0): a failed handover (a full disk) ends the process with status 1 instead, so the pod fails and
    the worker commits nothing.
    """
    try:
        _hand_over(ctx)
    except BaseException as exc:  # noqa: BLE001 - any failure here must fail the pod
        sys.stderr.write(f"airflow-repro: handing the outputs over failed: {type(exc).__name__}: {exc}\n")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)


def _hand_over(ctx: TaskContext) -> None:
    uri = os.environ.get("AIRFLOW_REPRO_OUTPUT_URI")
    published = transport_for(uri).publish(ctx.output_dir, ctx.declared_outputs) if uri else 0
    if uri and not os.environ.get("AIRFLOW_REPRO_OUTPUT_DIR"):
        shutil.rmtree(ctx.output_dir, ignore_errors=True)  # the pod-local scratch copy, handed over above
    report = {"kind": REPORT_KIND, "outputs": published, "metrics": ctx.metrics, **hardware_report()}
    write_report(report, Path(os.environ.get("AIRFLOW_REPRO_REPORT_FILE") or "/dev/termination-log"))


def write_report(report: dict[str, Any], path: Path) -> None:
    """Write the report where the kubelet reads the termination message, within its 4 KiB."""
    text = json.dumps(report, sort_keys=True, separators=(",", ":"))
    while len(text.encode()) > TERMINATION_MESSAGE_LIMIT and report.get("gpus"):
        report["gpus"] = report["gpus"][:-1]  # many GPUs: keep what fits; the model is the same
        report["gpus_truncated"] = True
        text = json.dumps(report, sort_keys=True, separators=(",", ":"))
    if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
        text = json.dumps({k: report[k] for k in ("kind", "python", "gpus", "outputs") if k in report})
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:  # outside a pod there is no termination log: not worth failing the task
        sys.stderr.write(f"airflow-repro: could not write the pod report to {path}: {exc}\n")


def hardware_report() -> dict[str, Any]:
    """What this process runs on: the fields of the manifest's ``Hardware``, plus Python's version."""
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "hostname": socket.gethostname(),
        "platform": platform.platform(terse=True),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "gpus": nvidia_gpus(),
        "libraries": library_versions(),
    }


KEY_LIBRARIES = ("numpy", "pandas", "scikit-learn", "scipy", "torch", "tensorflow", "jax", "xgboost", "lightgbm",
                 "mlflow", "pyarrow", "transformers")


def library_versions() -> dict[str, str]:
    """Versions of the key ML libraries installed where the task runs (the image, in a pod)."""
    from importlib import metadata

    found = {}
    for name in KEY_LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def nvidia_gpus() -> list[dict[str, str]]:
    """GPU model, driver, memory and uuid as ``nvidia-smi`` reports them; empty without one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,driver_version,memory.total,uuid", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [part.strip() for part in line.split(",", 3)]
        if len(parts) == 4:
            gpus.append(dict(zip(("name", "driver", "memory", "uuid"), parts, strict=True)))
    return gpus


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _write_json_atomically(path: Path, value: object) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(value, handle, sort_keys=True)
    os.replace(tmp, path)
