"""What a DAG author declares for a recorded task, validated at DAG parse time."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from airflow_repro.core.manifest import Resources
from airflow_repro.core.naming import validate_ref, validate_repository_name
from airflow_repro.core.resources import parse_quantity
from airflow_repro.core.store_rules import validate_object_path
from airflow_repro.errors import InvalidNameError, ReproUserError


def validate_store_path(path: str, *, what: str = "path", allow_folder: bool = False) -> str:
    """A path a task declares: the stores' object-path rule, a trailing '/' for a folder where
    allowed, and nothing under the reserved ``_repro/`` (where manifests live)."""
    body = path[:-1] if allow_folder and isinstance(path, str) and path.endswith("/") else path
    try:
        validate_object_path(body)
        reserved = body.split("/", 1)[0] == "_repro"
    except InvalidNameError:
        reserved = True
    if reserved:
        raise InvalidNameError(
            f"invalid {what} {path!r}: use a relative path like 'features/train.csv' "
            "(no leading '/', no '.' or '..' parts, not under the reserved '_repro/')"
        )
    return path


_INPUT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")


def validate_input_name(name: object) -> str:
    """An input's name is also its folder in the task's workspace: one plain path segment."""
    if not isinstance(name, str) or not _INPUT_NAME.match(name) or set(name) == {"."}:
        raise InvalidNameError(
            f"invalid input name {name!r}: use letters, digits, '_', '-' and '.' (at most 128, "
            "not starting with '.' or '-'), e.g. inputs={'raw': Input('raw/wine.csv')}"
        )
    return name


@dataclass(frozen=True)
class Input:
    """A data input: ``path`` in ``repository`` at ``ref``, resolved to a commit id before the task.

    ``repository`` defaults to the task's output repository and ``ref`` to the DAG run's own
    branch, which is how a task reads what upstream tasks of the same run wrote.
    """

    path: str
    repository: str | None = None
    ref: str | None = None

    def validate(self) -> None:
        """Checked by the task that declares it, so errors can name the task."""
        validate_store_path(self.path, what="input path")
        if self.repository is not None:
            validate_repository_name(self.repository)
        if self.ref is not None:
            validate_ref(self.ref)


@dataclass(frozen=True)
class TaskSpec:
    """The repro-specific declaration of one task."""

    task_id: str
    inputs: dict[str, Input] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    seed: int | None = None
    repository: str | None = None
    lockfile: str | None = None
    resources: Resources = field(default_factory=Resources)
    secret_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, spec in self.inputs.items():
            self._check_input(name, spec)
        for output in self.outputs:
            validate_store_path(output, what=f"output of task {self.task_id}", allow_folder=True)
        if len(set(self.outputs)) != len(self.outputs):
            raise ReproUserError(f"task {self.task_id}: outputs are listed twice: {list(self.outputs)}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0):
            raise ReproUserError(f"task {self.task_id}: seed must be a non-negative int, got {self.seed!r}")
        if self.repository is not None:
            validate_repository_name(self.repository)
        if self.resources.memory is not None:
            try:
                parse_quantity(self.resources.memory, what="memory")
            except ReproUserError as exc:
                raise ReproUserError(f"task {self.task_id}: {exc}") from None

    def _check_input(self, name: str, spec: object) -> None:
        try:
            validate_input_name(name)
        except InvalidNameError as exc:
            raise InvalidNameError(f"task {self.task_id}: {exc}") from None
        if not isinstance(spec, Input):
            raise ReproUserError(
                f"task {self.task_id}: input {name!r} must be airflow_repro.Input(path, "
                f"repository=None, ref=None), got {type(spec).__name__}"
            )
        try:
            spec.validate()
        except InvalidNameError as exc:
            raise InvalidNameError(f"task {self.task_id}: input {name!r}: {exc}") from exc
