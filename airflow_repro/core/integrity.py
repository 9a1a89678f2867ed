"""Integrity of a versioned data store: is what the refs reach still intact?

``check_store`` works on any :class:`~airflow_repro.core.ports.VersionedDataStore` through its
public methods (so on lakeFS too): it walks every branch and tag, every commit on them, reads
every distinct object to its end (the store's reader checks the content hash there), and parses
the task and DAG-run manifests against the digests their commits recorded. A store that can say
more about its own files (:class:`~airflow_repro.core.ports.ChecksLayout`: the local store's
``repository.json`` and ref files, which listings skip) adds that. It reads only: nothing is
repaired, moved or written.

``damaged_outputs`` re-reads the outputs of recorded tasks the same way (``verify --deep``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from airflow_repro.core import metadata_keys as keys
from airflow_repro.core.manifest import DataOutput, TaskManifest, load_dag_run_manifest, load_task_manifest
from airflow_repro.core.ports import (
    ChecksLayout,
    CollectsGarbage,
    Commit,
    GarbageReport,
    ObjectInfo,
    Problem,
    ProblemKind,
    VersionedDataStore,
)
from airflow_repro.core.runs import DAG_RUN_MANIFEST_PATH
from airflow_repro.errors import ManifestError, ObjectNotFound, RefNotFound, StoreCorruption

_READ_CHUNK = 1024 * 1024
#: What reading a damaged or vanished object raises (ObjectGone is an ObjectNotFound).
_DAMAGE = (StoreCorruption, ObjectNotFound)


@dataclass
class IntegrityReport:
    """What ``check_store`` looked at, and the problems it found (none: the store is intact)."""

    repositories: list[str] = field(default_factory=list)
    refs: int = 0
    commits: int = 0
    objects: int = 0  # distinct contents read and found intact
    bytes: int = 0
    manifests: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems


@dataclass
class _Walk:
    """One check in progress: the result per content hash (None: intact), locations reported."""

    store: VersionedDataStore
    report: IntegrityReport
    hashes: dict[str, str | None] = field(default_factory=dict)
    reported: set[tuple[str, str, str]] = field(default_factory=set)

    def problem(
        self,
        kind: ProblemKind,
        repository: str,
        detail: str,
        *,
        ref: str | None = None,
        commit_id: str | None = None,
        path: str | None = None,
    ) -> None:
        self.report.problems.append(Problem(kind, repository, detail, ref=ref, commit_id=commit_id, path=path))


def check_store(store: VersionedDataStore, repositories: Sequence[str] | None = None) -> IntegrityReport:
    """Check every repository (or the named ones; an unknown name raises ``RepositoryNotFound``)."""
    layout = store.check_layout(repositories) if isinstance(store, ChecksLayout) else []
    unreadable = {p.repository for p in layout if p.kind == "repository"}
    if repositories:
        names = list(dict.fromkeys(repositories))
        for name in names:
            if name not in unreadable:
                store.get_repository(name)
    else:
        names = [r.name for r in store.list_repositories()]
    walk = _Walk(store, IntegrityReport(repositories=sorted(set(names) | unreadable), problems=list(layout)))
    for name in names:
        if name not in unreadable:
            _check_repository(walk, name)
    return walk.report


def _check_repository(walk: _Walk, repository: str) -> None:
    try:
        refs = {
            **walk.store.list_branches(repository),
            **{f"tags/{tag}": commit for tag, commit in walk.store.list_tags(repository).items()},
        }
    except StoreCorruption as exc:
        walk.problem("ref", repository, str(exc))
        return
    seen: set[str] = set()
    for ref, head in sorted(refs.items()):
        walk.report.refs += 1
        try:
            for commit in walk.store.log(repository, head):
                if commit.id in seen:
                    break  # the rest of this first-parent history was checked from another ref
                seen.add(commit.id)
                walk.report.commits += 1
                _check_commit(walk, repository, ref, commit)
        except (StoreCorruption, RefNotFound) as exc:
            walk.problem("commit", repository, str(exc), ref=ref)


def _check_commit(walk: _Walk, repository: str, ref: str, commit: Commit) -> None:
    try:
        objects = walk.store.list_objects(repository, commit.id)
    except StoreCorruption as exc:
        walk.problem("tree", repository, str(exc), ref=ref, commit_id=commit.id)
        return
    for info in objects:
        detail = _rehash(walk, repository, commit.id, info)
        location = (repository, info.path, info.content_hash)
        if detail is not None and location not in walk.reported:
            walk.reported.add(location)
            walk.problem("object", repository, detail, ref=ref, commit_id=commit.id, path=info.path)
    _check_manifests(walk, repository, ref, commit)


def _rehash(walk: _Walk, repository: str, commit_id: str, info: ObjectInfo) -> str | None:
    """Each distinct content is read once: None if intact, else what is wrong."""
    if info.content_hash not in walk.hashes:
        walk.hashes[info.content_hash] = read_problem(walk.store, repository, commit_id, info.path)
        if walk.hashes[info.content_hash] is None:
            walk.report.objects += 1
            walk.report.bytes += info.size
    return walk.hashes[info.content_hash]


def read_problem(store: VersionedDataStore, repository: str, ref: str, path: str) -> str | None:
    """Read ``path`` at ``ref`` to its end (the store checks its hash there): None if intact."""
    buffer = bytearray(_READ_CHUNK)
    try:
        with store.open_object(repository, ref, path) as reader:
            while reader.readinto(buffer):  # type: ignore[attr-defined]
                pass
    except _DAMAGE as exc:
        return str(exc)
    return None


def _check_manifests(walk: _Walk, repository: str, ref: str, commit: Commit) -> None:
    """Parse the manifests this commit wrote against the digests its metadata recorded."""
    meta = commit.metadata
    path, digest = meta.get(keys.MANIFEST_PATH), meta.get(keys.MANIFEST_DIGEST)
    if path and digest:
        _parse(walk, repository, ref, commit, path, lambda data: load_task_manifest(data, expected_digest=digest))
    run_digest = meta.get(keys.DAG_RUN_MANIFEST_DIGEST)
    if run_digest:
        _parse(walk, repository, ref, commit, DAG_RUN_MANIFEST_PATH, lambda data: _dag_run_manifest(data, run_digest))


def _dag_run_manifest(data: bytes, digest: str) -> None:
    manifest = load_dag_run_manifest(data)
    if manifest.digest != digest:
        raise ManifestError(f"DAG-run manifest digest mismatch: recorded {digest}, content hashes to {manifest.digest}")


def _parse(walk: _Walk, repository: str, ref: str, commit: Commit, path: str, parse: Callable[[bytes], object]) -> None:
    try:
        with walk.store.open_object(repository, commit.id, path) as reader:
            parse(reader.read())
    except ManifestError as exc:
        walk.problem("manifest", repository, str(exc), ref=ref, commit_id=commit.id, path=path)
    except StoreCorruption:
        pass  # damaged content: the object check has reported it
    except ObjectNotFound as exc:
        walk.problem(
            "manifest",
            repository,
            f"the manifest this commit names is missing: {exc}",
            ref=ref,
            commit_id=commit.id,
            path=path,
        )
    else:
        walk.report.manifests += 1


@dataclass(frozen=True, slots=True)
class DamagedOutput:
    """An output of a recorded task whose stored content is not what its manifest recorded."""

    task_id: str
    map_index: int
    path: str
    content_hash: str
    size: int
    detail: str


def damaged_outputs(
    store: VersionedDataStore, repository: str, tasks: Sequence[tuple[str, TaskManifest]]
) -> list[DamagedOutput]:
    """Re-read and re-hash the outputs of recorded tasks, given as ``(commit id, manifest)``."""
    damaged = []
    for commit_id, manifest in tasks:
        for output in manifest.outputs:
            detail = _output_problem(store, repository, commit_id, output)
            if detail is not None:
                damaged.append(
                    DamagedOutput(
                        manifest.identity.task_id,
                        manifest.identity.map_index,
                        output.path,
                        output.content_hash,
                        output.size,
                        detail,
                    )
                )
    return damaged


def _output_problem(store: VersionedDataStore, repository: str, commit_id: str, output: DataOutput) -> str | None:
    try:
        stored = store.stat_object(repository, commit_id, output.path)
    except _DAMAGE as exc:
        return str(exc)
    if stored.content_hash != output.content_hash:
        return (
            f"commit {commit_id} holds {stored.content_hash} at {output.path!r}, not the "
            f"{output.content_hash} its manifest recorded"
        )
    return read_problem(store, repository, commit_id, output.path)


__all__ = [
    "ChecksLayout",
    "CollectsGarbage",
    "DamagedOutput",
    "GarbageReport",
    "IntegrityReport",
    "Problem",
    "check_store",
    "damaged_outputs",
    "read_problem",
]
