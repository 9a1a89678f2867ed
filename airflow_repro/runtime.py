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
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

CONTEXT_ENV = "AIRFLOW_REPRO_CONTEXT"

__all__ = ["CONTEXT_ENV", "RuntimeContextError", "TaskContext", "current", "seed_everything"]


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
    """The running task's context (set in-process, or read from ``$AIRFLOW_REPRO_CONTEXT``)."""
    global _current
    if _current is not None:
        return _current
    path = os.environ.get(CONTEXT_ENV)
    if not path:
        raise RuntimeContextError(
            "no airflow-repro task context: this code must run inside a task declared with "
            "@repro_task (or with $AIRFLOW_REPRO_CONTEXT pointing at a context file)"
        )
    _current = TaskContext.from_file(Path(path))
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


def _write_json_atomically(path: Path, value: object) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(value, handle, sort_keys=True)
    os.replace(tmp, path)
