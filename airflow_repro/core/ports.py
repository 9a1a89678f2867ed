"""Ports: the small interfaces the core needs from outside systems.

Adapters implement them (``adapters/local_store.py`` for the embedded store, lakeFS later;
``adapters/mlflow_*.py`` for the tracker). Signatures follow lakeFS vocabulary so that the
embedded store and lakeFS behave the same: repositories, branches, commits with string metadata,
tags, reading any path at any ref, and two-dot diffs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object at a ref: its path, content hash (``blake3:<64 hex>``) and size in bytes."""

    path: str
    content_hash: str
    size: int


@dataclass(frozen=True, slots=True)
class StagedObject:
    """Content already written to the store's object area but not yet part of any commit."""

    content_hash: str
    size: int


@dataclass(frozen=True, slots=True)
class Commit:
    """An immutable commit. ``id`` is the full 64-hex id, never a prefix."""

    id: str
    repository: str
    parents: tuple[str, ...]
    message: str
    metadata: Mapping[str, str]
    created_at: str  # ISO 8601, UTC
    committer: str = ""


@dataclass(frozen=True, slots=True)
class DiffEntry:
    """One path that differs between two refs (two-dot: left tree versus right tree)."""

    path: str
    type: Literal["added", "removed", "changed"]
    left: ObjectInfo | None = None
    right: ObjectInfo | None = None


@dataclass(frozen=True, slots=True)
class Repository:
    """A repository of the versioned store."""

    name: str
    default_branch: str
    created_at: str = ""


@runtime_checkable
class VersionedDataStore(Protocol):
    """A git-like store of data: the port both the local store and lakeFS implement.

    Errors: ``RepositoryNotFound``, ``RefNotFound``, ``ObjectNotFound`` (user errors),
    ``InvalidNameError`` for malformed names, ``AlreadyExistsError``, and ``StoreUnavailable`` /
    ``StoreConflict`` / ``StoreCorruption`` for infrastructure faults.
    """

    def create_repository(self, name: str, *, default_branch: str = "main", exist_ok: bool = False) -> Repository: ...

    def get_repository(self, name: str) -> Repository: ...

    def list_repositories(self) -> list[Repository]: ...

    def create_branch(self, repository: str, name: str, source_ref: str, *, exist_ok: bool = False) -> str:
        """Create ``name`` at ``source_ref``; return the commit id it points to."""
        ...

    def list_branches(self, repository: str) -> dict[str, str]:
        """Branch name -> head commit id."""
        ...

    def resolve_ref(self, repository: str, ref: str) -> str:
        """A branch, tag or full commit id -> the full commit id."""
        ...

    def stage_file(self, repository: str, source: Path, *, move: bool = False) -> StagedObject:
        """Hash ``source`` and store its content; ``move`` lets the store take the file."""
        ...

    def stage_bytes(self, repository: str, data: bytes) -> StagedObject:
        """Store in-memory content (a manifest, say) as an object."""
        ...

    def commit(
        self,
        repository: str,
        branch: str,
        changes: Mapping[str, StagedObject | None],
        *,
        message: str,
        metadata: Mapping[str, str] | None = None,
        allow_empty: bool = False,
    ) -> Commit:
        """Apply ``changes`` (path -> staged object, or ``None`` to delete) in one commit."""
        ...

    def get_commit(self, repository: str, ref: str) -> Commit: ...

    def log(self, repository: str, ref: str, *, limit: int | None = None) -> Iterator[Commit]:
        """Commits reachable from ``ref`` by first parents, newest first."""
        ...

    def create_tag(self, repository: str, tag: str, ref: str, *, exist_ok: bool = False) -> str:
        """Create an immutable tag; return the commit id it names."""
        ...

    def list_tags(self, repository: str) -> dict[str, str]: ...

    def list_objects(self, repository: str, ref: str, prefix: str = "") -> list[ObjectInfo]: ...

    def stat_object(self, repository: str, ref: str, path: str) -> ObjectInfo: ...

    def check_available(self, repository: str, commit_id: str, path: str, content_hash: str) -> None:
        """Raise ``RefNotFound`` / ``ObjectNotFound`` / ``ObjectGone`` unless the data recorded for
        ``path`` at ``commit_id`` (with ``content_hash``) can still be read. Cheaper than a stat
        where the store allows (replay planning checks every pinned input)."""
        ...

    def open_object(self, repository: str, ref: str, path: str) -> BinaryIO:
        """A reader that verifies the content hash when read to the end."""
        ...

    def materialize(self, repository: str, ref: str, path: str, destination: Path) -> ObjectInfo:
        """Place the verified content of ``path`` at ``destination`` (read-only)."""
        ...

    def diff(self, repository: str, left_ref: str, right_ref: str, prefix: str = "") -> list[DiffEntry]: ...


ProblemKind = Literal["repository", "ref", "commit", "tree", "object", "manifest"]


@dataclass(frozen=True, slots=True)
class Problem:
    """Damage found in a store: where (repository, ref, commit, path) and what is wrong."""

    kind: ProblemKind
    repository: str
    detail: str
    ref: str | None = None  # a branch name, or tags/<name>
    commit_id: str | None = None
    path: str | None = None


@dataclass(frozen=True, slots=True)
class GarbageReport:
    """What garbage collection found (``deleted=False``: would free) or freed."""

    deleted: bool
    grace_s: float
    objects: int
    object_bytes: int
    temp_entries: int
    temp_bytes: int
    metadata_files: int  # orphan commit and tree files
    metadata_bytes: int
    recent_unreferenced_objects: int  # unreferenced but younger than the grace period: kept
    referenced_objects: int
    referenced_bytes: int

    @property
    def freed_bytes(self) -> int:
        return self.object_bytes + self.temp_bytes + self.metadata_bytes


@runtime_checkable
class ChecksLayout(Protocol):
    """Optional store capability: report damage in the store's own files that the port's
    listings skip (the local store: ``repository.json`` and ref files). Reads only."""

    def check_layout(self, repositories: Sequence[str] | None = None) -> list[Problem]: ...


@runtime_checkable
class CollectsGarbage(Protocol):
    """Optional store capability: find, and with ``delete`` remove, what no ref reaches and is
    older than ``grace_s`` (the local store; lakeFS collects garbage on the server)."""

    def collect_garbage(self, *, grace_s: float = ..., delete: bool = ...) -> GarbageReport: ...


@dataclass(frozen=True, slots=True)
class TrackerRun:
    """A run of the experiment tracker (MLflow): ids and the URL a person can open."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    url: str | None = None


@dataclass(frozen=True, slots=True)
class TrackerLog:
    """What is logged to a tracked run after the task: all in one batch where possible."""

    tags: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    json_artifacts: Mapping[str, object] = field(default_factory=dict)  # artifact path -> JSON value


@runtime_checkable
class ExperimentTracker(Protocol):
    """The experiment tracker port (MLflow)."""

    def start_run(self, experiment: str, run_name: str, tags: Mapping[str, str]) -> TrackerRun: ...

    def log(self, run: TrackerRun, record: TrackerLog) -> None: ...

    def end_run(self, run: TrackerRun, status: Literal["FINISHED", "FAILED", "KILLED"]) -> None: ...

    def get_run_tags(self, run_id: str) -> dict[str, str]: ...

    def get_metrics(self, run_id: str) -> dict[str, float]:
        """Latest value of each metric of a run."""
        ...

    def load_json_artifact(self, run_id: str, path: str) -> object: ...
