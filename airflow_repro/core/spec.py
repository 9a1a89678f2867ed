"""What a DAG author declares for a recorded task, validated at DAG parse time."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from airflow_repro.core.comparison import Tolerance
from airflow_repro.core.manifest import Resources
from airflow_repro.core.naming import validate_ref, validate_repository_name
from airflow_repro.core.resources import parse_quantity
from airflow_repro.core.store_rules import validate_object_path
from airflow_repro.errors import InvalidNameError, ReproUserError
from airflow_repro.task_formats import MAP_INDEX_PLACEHOLDER


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


def validate_output_path(path: str, *, task_id: str) -> str:
    """A declared output: a store path (a trailing '/' for a folder), in which ``{map_index}`` (and
    no other brace) stands for the map index of a mapped task's instance."""
    validate_store_path(path, what=f"output of task {task_id}", allow_folder=True)
    if "{" in path.replace(MAP_INDEX_PLACEHOLDER, "") or "}" in path.replace(MAP_INDEX_PLACEHOLDER, ""):
        raise InvalidNameError(
            f"invalid output of task {task_id} {path!r}: the only placeholder an output path may hold is "
            f"{MAP_INDEX_PLACEHOLDER} (each map index of a mapped task writes its own), e.g. "
            f"'shards/{MAP_INDEX_PLACEHOLDER}.csv'; remove the other braces"
        )
    return path


def per_map_index(path: str) -> str:
    """A path that differs per map index, for a message: ``shard.txt`` -> ``shard/{map_index}.txt``."""
    if path.endswith("/"):
        return f"{path}{MAP_INDEX_PLACEHOLDER}/"
    pure = PurePosixPath(path)
    base, dot, extension = pure.name.partition(".") if not pure.name.startswith(".") else (pure.name, "", "")
    folder = "" if str(pure.parent) == "." else f"{pure.parent}/"
    return f"{folder}{base}/{MAP_INDEX_PLACEHOLDER}{dot}{extension}"


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
        if isinstance(self.path, str) and self.path.endswith("/"):
            raise InvalidNameError(
                f"inputs are single objects; a folder ({self.path!r}) cannot be an input: declare each file, "
                f"e.g. Input({self.path + 'model.pt'!r})"
            )
        validate_store_path(self.path, what="input path")
        if self.repository is not None:
            validate_repository_name(self.repository)
        if self.ref is not None:
            validate_ref(self.ref)


def check_tolerance(value: object, name: str, *, where: str) -> float:
    """A tolerance bound as given by a user: a finite number >= 0, or a message with the fix."""
    try:  # an int too large for a float (10**400) overflows: refused like an infinite number
        bound = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    except OverflowError:
        bound = math.inf
    if not math.isfinite(bound) or bound < 0:
        # such an int's repr may run to thousands of digits (or past Python's int-to-str limit)
        shown = "an integer too large for a float" if isinstance(value, int) and bound == math.inf else repr(value)
        raise ReproUserError(
            f"{where}: {name} must be a finite number >= 0, got {shown}: use 0 for an exact comparison "
            f"or a small bound such as {name}=1e-6"
        )
    return bound


@dataclass(frozen=True)
class Output:
    """An output declared with the tolerance verify compares its numbers within.

    ``outputs={"models/model.pt": Output(rel_tol=1e-5)}``: a replayed number ``b`` matches the
    original ``a`` when ``|b - a| <= abs_tol + rel_tol * |a|`` (numpy ``isclose`` semantics); both
    0 by default (exact). On a folder (``"reports/"``) it covers every object under it. Text, keys,
    shapes and dtypes always compare exactly.
    """

    abs_tol: float = 0.0
    rel_tol: float = 0.0

    def __post_init__(self) -> None:
        check_tolerance(self.abs_tol, "abs_tol", where="Output")
        check_tolerance(self.rel_tol, "rel_tol", where="Output")

    @property
    def tolerance(self) -> Tolerance:
        return Tolerance(abs_tol=self.abs_tol, rel_tol=self.rel_tol)


DeclaredOutputs = Collection[str] | Mapping[str, "Output | None"]


def declared_outputs(task_id: str, outputs: DeclaredOutputs) -> tuple[tuple[str, ...], dict[str, Tolerance]]:
    """``outputs=`` as a task takes it (paths, or path -> :class:`Output`): the paths and the
    tolerances declared for some of them."""
    if isinstance(outputs, str):
        raise ReproUserError(
            f"task {task_id}: outputs must be a list of paths, got the string {outputs!r}: write outputs=[{outputs!r}]"
        )
    if not isinstance(outputs, Mapping):
        return tuple(outputs), {}
    tolerances = {}
    for path, declared in outputs.items():
        if declared is None:
            continue
        if not isinstance(declared, Output):
            raise ReproUserError(
                f"task {task_id}: output {path!r} must map to airflow_repro.Output(abs_tol=..., rel_tol=...) "
                f"or None, got {type(declared).__name__}: e.g. outputs={{{path!r}: Output(rel_tol=1e-5)}}"
            )
        if not declared.tolerance.exact:
            tolerances[path] = declared.tolerance
    return tuple(outputs), tolerances


@dataclass(frozen=True)
class TaskSpec:
    """The repro-specific declaration of one task."""

    task_id: str
    inputs: dict[str, Input] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    #: Declared output (or folder, ending in '/') -> the tolerance verify compares it within.
    tolerances: Mapping[str, Tolerance] = field(default_factory=dict)
    seed: int | None = None
    repository: str | None = None
    lockfile: str | None = None
    resources: Resources = field(default_factory=Resources)
    secret_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, spec in self.inputs.items():
            self._check_input(name, spec)
        for output in self.outputs:
            validate_output_path(output, task_id=self.task_id)
        if len(set(self.outputs)) != len(self.outputs):
            raise ReproUserError(f"task {self.task_id}: outputs are listed twice: {list(self.outputs)}")
        undeclared = sorted(set(self.tolerances) - set(self.outputs))
        if undeclared:
            raise ReproUserError(f"task {self.task_id}: tolerances for paths that are not outputs: {undeclared}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0):
            raise ReproUserError(f"task {self.task_id}: seed must be a non-negative int, got {self.seed!r}")
        if self.repository is not None:
            try:
                validate_repository_name(self.repository)
            except InvalidNameError as exc:
                raise InvalidNameError(f"task {self.task_id}: {exc}") from None
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

    def tolerance_for(self, path: str) -> Tolerance | None:
        """The tolerance declared for output ``path``: its own, else its nearest declared folder's."""
        if path in self.tolerances:
            return self.tolerances[path]
        folders = [f for f in self.tolerances if f.endswith("/") and path.startswith(f)]
        return self.tolerances[max(folders, key=len)] if folders else None

    def for_map_index(self, map_index: int) -> TaskSpec:
        """The spec of one task instance: ``{map_index}`` in the outputs replaced by ``map_index``.

        A mapped instance (``map_index >= 0``) whose outputs lack the placeholder is refused (its map
        indexes would overwrite each other's outputs on the run's branch), as is an unmapped one
        (``-1``) whose outputs hold it.
        """
        templated = [o for o in self.outputs if MAP_INDEX_PLACEHOLDER in o]
        if map_index < 0:
            if templated:
                raise ReproUserError(
                    f"task {self.task_id} is not mapped, but its outputs {', '.join(map(repr, templated))} hold "
                    f"{MAP_INDEX_PLACEHOLDER}, which only the instances of a mapped task fill: map the task "
                    f"(.expand(...)) or declare paths without {MAP_INDEX_PLACEHOLDER}"
                )
            return self
        fixed = [o for o in self.outputs if MAP_INDEX_PLACEHOLDER not in o]
        if fixed:
            suggested = [o if MAP_INDEX_PLACEHOLDER in o else per_map_index(o) for o in self.outputs]
            raise ReproUserError(
                f"task {self.task_id} is mapped: its map indexes would overwrite each other's "
                f"{', '.join(map(repr, fixed))}; declare outputs={suggested!r} "
                f"(or any path with {MAP_INDEX_PLACEHOLDER})"
            )
        index = str(map_index)
        outputs = tuple(o.replace(MAP_INDEX_PLACEHOLDER, index) for o in self.outputs)
        tolerances = {p.replace(MAP_INDEX_PLACEHOLDER, index): t for p, t in self.tolerances.items()}
        return dataclasses.replace(self, outputs=outputs, tolerances=tolerances)
