"""Restoring a replayed task's code and environment, on the Airflow side.

Three moments:

- **record** (every task): the task's code snapshot (:func:`current_code_snapshot`) and what pins
  its environment (the environment record, a lockfile's content, a pod's script) are archived
  (:func:`archive_objects`); the manifest names them by digest;
- **plan** (CLI, API server): :class:`ArchiveChecks` tells the core planner whether drifted code
  or environment can be restored: the archive holds it intact, uv can install the record here;
- **task start** (worker, pinned replay): :func:`restoration_for` compares the task's code and
  environment now with the recorded ones, loads what drifted from the archive, and says what the
  operator must run instead (:class:`Restoration`); the manifest then records the restored pins.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from airflow_repro.core.archive import ArchiveKind, ArchiveObject, load_archived
from airflow_repro.core.code_snapshot import (
    CodeSnapshot,
    code_root,
    scrub_secret_literals,
    scrub_source,
    snapshot_code,
)
from airflow_repro.core.environment_record import EnvironmentRecord, restore_problems
from airflow_repro.core.manifest import EnvironmentPin
from airflow_repro.core.redaction import Redactor, redacted_paths
from airflow_repro.core.replay import TaskPins, code_changed
from airflow_repro.errors import ReproError, ReproUserError

if TYPE_CHECKING:
    from airflow_repro.core.ports import VersionedDataStore
    from airflow_repro.core.recorder import TaskEnvironment


# -- record ----------------------------------------------------------------------------------------
def current_code_snapshot(
    operator: Any, ti: Any, *, bundle_root: str | None = None, secret_marker: SecretMarker | None = None
) -> CodeSnapshot | None:
    """The DAG file and the bundle modules it imports, as this process sees them; ``None`` for a
    task without a Python callable or DAG file (or where the snapshot cannot be taken: logged).

    The root is the task instance's bundle (``bundle_root`` where the caller knows it instead),
    else the DAGs folder: the recording worker and the replay planner find the same one.
    ``secret_marker``: string literals it maps to a marker are archived as that marker."""
    fileloc = operator.dag.fileloc if operator.has_dag() else None
    if getattr(operator, "python_callable", None) is None or not fileloc:
        return None
    bundle = getattr(ti, "bundle_instance", None)
    try:
        root = code_root(Path(fileloc), [bundle_root or getattr(bundle, "path", None), dags_folder()])
        snapshot = snapshot_code(Path(fileloc), root)
        return scrub_secret_literals(snapshot, secret_marker) if secret_marker is not None else snapshot
    except (ReproError, OSError) as exc:
        operator.log.warning("airflow-repro could not archive the code of %s: %s", operator.task_id, exc)
        return None


SecretMarker = Callable[[str], "str | None"]


def secret_marker_for(redactor: Redactor, *values: Any) -> SecretMarker | None:
    """Maps a string to its marker where it is one of the secrets recorded (as markers) in
    ``values`` (parameters, their dicts); ``None`` where they hold no secret (nothing to scrub)."""
    markers = _markers(*values)
    return _secret_marker(redactor, markers) if markers else None


def _markers(*values: Any) -> frozenset[str]:
    return frozenset(marker for value in values for marker in _markers_in(value))


def _secret_marker(redactor: Redactor, markers: frozenset[str]) -> SecretMarker:
    def secret_marker(text: str) -> str | None:
        marker = redactor.marker(text)
        return marker if marker in markers else None

    return secret_marker


def _markers_in(value: Any) -> Iterator[str]:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    for _path, marker in redacted_paths(value):
        yield marker


def archived_script(operator: Any, secret_marker: SecretMarker | None) -> str | None:
    """The script the task's own interpreter runs (a pod's), as it is archived."""
    script = operator.repro_script() if hasattr(operator, "repro_script") else None
    if script is None or secret_marker is None:
        return script
    return scrub_source(script, secret_marker)


def archive_objects(
    snapshot: CodeSnapshot | None,
    pin: EnvironmentPin,
    *,
    environment: EnvironmentRecord | None = None,
    lockfile: bytes | None = None,
    script: str | None = None,
) -> tuple[ArchiveObject, ...]:
    """What a replay would restore this task from (each stored once per repository)."""
    objects = []
    if snapshot is not None:
        objects.append(ArchiveObject("code", snapshot.canonical_json()))
    if environment is not None and pin.kind == "fingerprint":
        objects.append(ArchiveObject("environment", environment.canonical_json()))
    if lockfile is not None and pin.kind == "lockfile":
        objects.append(ArchiveObject("lockfile", lockfile))
    if script is not None:
        objects.append(ArchiveObject("script", script.encode()))
    return tuple(objects)


def dags_folder() -> str | None:
    """``[core] dags_folder``, where Airflow's configuration can be read (None otherwise)."""
    with contextlib.suppress(Exception):
        from airflow.configuration import conf

        return str(conf.get("core", "dags_folder"))
    return None


# -- task start ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Restoration:
    """What a pinned replay of one task runs instead of the current code or environment."""

    code: CodeSnapshot | None = None  # archived code of a Python task
    script: str | None = None  # archived script of a pod task
    environment: EnvironmentRecord | None = None  # rebuild this environment
    lockfile: bytes | None = None  # build the lockfile venv from this content

    @property
    def restores_code(self) -> bool:
        return self.code is not None or self.script is not None

    @property
    def restores_environment(self) -> bool:
        return self.environment is not None or self.lockfile is not None


def restoration_for(
    task_id: str,
    pins: TaskPins,
    environment: TaskEnvironment,
    store: VersionedDataStore,
    repository: str,
) -> tuple[Restoration, TaskEnvironment]:
    """What must be restored for this task to run as recorded, and the facts it then records.

    Raises a user error naming what cannot be restored (the replay was planned before it drifted,
    or on a planner whose environment differed from this worker's)."""
    recorded_code, recorded_pin = pins.code, pins.environment
    if recorded_code is None or recorded_pin is None:  # a plan written before archiving existed
        _refuse_if_changed(task_id, "source code", pins.source_hash, environment.code.source_hash)
        _refuse_if_changed(task_id, "environment", pins.environment_digest, environment.environment.digest)
        return Restoration(), environment
    code, script = None, None
    if code_changed(recorded_code, environment.code.source_hash, environment.code.snapshot):
        code, script = _archived_code(task_id, recorded_code, store, repository)
    record, lockfile = None, None
    if recorded_pin.digest != environment.environment.digest:
        record, lockfile = _archived_environment(task_id, recorded_pin, store, repository)
    restoration = Restoration(code=code, script=script, environment=record, lockfile=lockfile)
    replay = environment.replay
    if replay is not None:
        replay = replay.model_copy(
            update={
                "code": "restored" if restoration.restores_code else "current",
                "environment": "restored" if restoration.restores_environment else "current",
            }
        )
    return restoration, dataclasses.replace(
        environment,
        code=recorded_code if restoration.restores_code else environment.code,
        environment=recorded_pin if restoration.restores_environment else environment.environment,
        replay=replay,
    )


def _archived_code(
    task_id: str, code: Any, store: VersionedDataStore, repository: str
) -> tuple[CodeSnapshot | None, str | None]:
    try:
        if code.script is not None:
            return None, load_archived(store, repository, "script", code.script).decode()
        if code.snapshot is not None:
            return CodeSnapshot.from_json(load_archived(store, repository, "code", code.snapshot)), None
    except ReproError as exc:
        raise ReproUserError(f"task {task_id}: its code changed and cannot be restored: {exc}") from exc
    raise ReproUserError(
        f"task {task_id}: its code changed since the recorded run and no code of it was archived; "
        "replay with mode latest-code to accept the change"
    )


def _archived_environment(
    task_id: str, pin: EnvironmentPin, store: VersionedDataStore, repository: str
) -> tuple[EnvironmentRecord | None, bytes | None]:
    try:
        if pin.kind == "fingerprint":
            record = EnvironmentRecord.from_json(load_archived(store, repository, "environment", pin.digest))
            problems = restore_problems(record)
            if problems:
                raise ReproUserError("; ".join(problems))
            return record, None
        if pin.kind == "lockfile":
            return None, load_archived(store, repository, "lockfile", pin.digest)
    except ReproError as exc:
        raise ReproUserError(f"task {task_id}: its environment changed and cannot be restored: {exc}") from exc
    raise ReproUserError(
        f"task {task_id}: its image changed since the recorded run (recorded {pin.digest}); pin the recorded "
        "digest again in the DAG, or replay with mode latest-code"
    )


def _refuse_if_changed(task_id: str, what: str, pinned: str, current: str) -> None:
    if pinned != current:
        raise ReproUserError(
            f"task {task_id}: its {what} changed since the replay was planned (recorded {pinned}, now {current}); "
            "replay with mode latest-code to accept it"
        )


# -- plan ------------------------------------------------------------------------------------------
class ArchiveChecks:
    """The planner's :class:`~airflow_repro.core.replay.RestoreChecks`: the archive in ``store``,
    this process's environment, and uv's view of what can be installed (each answer cached)."""

    def __init__(
        self, store: VersionedDataStore, current_code: CodeSnapshot | None, redactor: Redactor | None = None
    ) -> None:
        self.store = store
        self._current_code = current_code
        self._redactor = redactor
        self._problems: dict[str, list[str]] = {}
        self._scrubbed: dict[frozenset[str], CodeSnapshot] = {}
        self._environment: EnvironmentRecord | None = None

    def current_code(self, *recorded: Any) -> CodeSnapshot | None:
        """The DAG file's code now, scrubbed of the secrets ``recorded`` holds as markers (as the
        recording worker scrubbed the archived one, so that both compare); once per set of secrets."""
        if self._current_code is None or self._redactor is None:
            return self._current_code
        markers = _markers(*recorded)
        if not markers:
            return self._current_code
        if markers not in self._scrubbed:
            secret_marker = _secret_marker(self._redactor, markers)
            self._scrubbed[markers] = scrub_secret_literals(self._current_code, secret_marker)
        return self._scrubbed[markers]

    @functools.cache  # noqa: B019 - one planner object per plan; the cache dies with it
    def archived_code(self, repository: str, digest: str) -> CodeSnapshot:
        return CodeSnapshot.from_json(load_archived(self.store, repository, "code", digest))

    @functools.cache  # noqa: B019 - as above
    def archived_environment(self, repository: str, digest: str) -> EnvironmentRecord:
        return EnvironmentRecord.from_json(load_archived(self.store, repository, "environment", digest))

    def check_archived(self, repository: str, kind: str, digest: str) -> None:
        self._check_archived(repository, kind, digest)

    @functools.cache  # noqa: B019 - as above
    def _check_archived(self, repository: str, kind: ArchiveKind | str, digest: str) -> None:
        load_archived(self.store, repository, kind, digest)  # type: ignore[arg-type]

    def current_environment(self) -> EnvironmentRecord | None:
        if self._environment is None:  # once per plan, not per task
            from airflow_repro.core.environment import clear_caches, environment_record

            clear_caches()  # an API server runs for weeks: read what is installed now (a few ms)
            self._environment = environment_record()
        return self._environment

    def environment_problems(self, record: EnvironmentRecord) -> list[str]:
        if record.digest not in self._problems:
            from airflow_repro.adapters.environment_builder import installability_problems

            self._problems[record.digest] = installability_problems(record)
        return self._problems[record.digest]


__all__ = [
    "ArchiveChecks",
    "Restoration",
    "archive_objects",
    "current_code_snapshot",
    "restoration_for",
]
