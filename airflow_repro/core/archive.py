"""The archive: what a replay needs to restore a task's code and environment, content-addressed.

Each archived object (a code snapshot, an environment record, a lockfile, a pod's script) is
stored once per repository at ``_repro/archive/<kind>/<sha256 hex>`` on the :data:`ARCHIVE_BRANCH`,
and a manifest refers to it by its digest (``sha256:<hex>`` of the stored bytes). 1,000 tasks with
the same code and environment find both objects already there and add nothing: a stat per object.

Objects are committed before the task's outputs: a manifest never names an object that is not
stored, and an object archived by an attempt that then failed is simply one more (deduplicated)
archive entry. Reads verify the digest, so a damaged object is named, never restored from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from airflow_repro.core import metadata_keys as keys
from airflow_repro.core.ports import VersionedDataStore
from airflow_repro.errors import ArchiveCorrupt, ArchiveMissing, NotFoundError, ReproError, StoreCorruption

ARCHIVE_BRANCH = "repro-archive"
ARCHIVE_PREFIX = "_repro/archive"
ArchiveKind = Literal["code", "environment", "lockfile", "script"]
ARCHIVE_KINDS: tuple[str, ...] = ("code", "environment", "lockfile", "script")
_DIGEST_PREFIX = "sha256:"


def archive_digest(data: bytes) -> str:
    """The address of ``data`` in the archive: ``sha256:<hex>`` of its bytes."""
    return _DIGEST_PREFIX + hashlib.sha256(data).hexdigest()


def archive_path(kind: ArchiveKind, digest: str) -> str:
    if kind not in ARCHIVE_KINDS:
        raise ValueError(f"unknown archive kind {kind!r}")
    hex_digest = digest.removeprefix(_DIGEST_PREFIX)
    if not digest.startswith(_DIGEST_PREFIX) or len(hex_digest) != 64:
        raise ArchiveMissing(f"{digest!r} is not an archive address (sha256:<64 hex>)")
    return f"{ARCHIVE_PREFIX}/{kind}/{hex_digest}"


@dataclass(frozen=True)
class ArchiveObject:
    """Bytes to archive under ``kind``; ``digest`` is their address."""

    kind: ArchiveKind
    data: bytes

    @property
    def digest(self) -> str:
        return archive_digest(self.data)

    @property
    def path(self) -> str:
        return archive_path(self.kind, self.digest)


def ensure_archived(
    store: VersionedDataStore, repository: str, objects: Iterable[ArchiveObject], *, default_branch: str
) -> list[str]:
    """Store each object not stored yet, in one commit on the archive branch; return the paths added.

    Two tasks may archive the same object at once: whichever commits second finds it there (or
    its commit changes nothing), and both are right, since the content is the address.
    """
    wanted = {obj.path: obj for obj in objects}
    if not wanted:
        return []
    store.create_branch(repository, ARCHIVE_BRANCH, default_branch, exist_ok=True)
    missing = [path for path in sorted(wanted) if not _is_stored(store, repository, path)]
    if not missing:
        return []
    changes = {path: store.stage_bytes(repository, wanted[path].data) for path in missing}
    try:
        store.commit(
            repository,
            ARCHIVE_BRANCH,
            dict(changes),
            message=f"archive {len(missing)} object(s) a replay restores from",
            metadata={keys.KIND: "archive"},
        )
    except ReproError:
        if any(not _is_stored(store, repository, path) for path in missing):
            raise  # not a race with an identical commit: a real failure
    return missing


def load_archived(store: VersionedDataStore, repository: str, kind: ArchiveKind, digest: str) -> bytes:
    """The archived bytes at ``digest``; :class:`ArchiveMissing` or :class:`ArchiveCorrupt` otherwise."""
    path = archive_path(kind, digest)
    try:
        with store.open_object(repository, ARCHIVE_BRANCH, path) as handle:
            data = handle.read()
    except StoreCorruption as exc:  # the store's own hash check caught it first
        raise ArchiveCorrupt(f"the archived {kind} {digest} is damaged; it cannot be restored from: {exc}") from exc
    except NotFoundError as exc:
        raise ArchiveMissing(
            f"the archived {kind} {digest} is not in repository {repository!r} (branch {ARCHIVE_BRANCH}, "
            f"{path}): it was recorded before archiving existed, or the archive was deleted ({exc})"
        ) from exc
    if archive_digest(data) != digest:
        raise ArchiveCorrupt(
            f"the archived {kind} at {repository}@{ARCHIVE_BRANCH}:{path} is damaged: its content hashes to "
            f"{archive_digest(data)}, not {digest}; it cannot be restored from"
        )
    return data


def _is_stored(store: VersionedDataStore, repository: str, path: str) -> bool:
    try:
        store.stat_object(repository, ARCHIVE_BRANCH, path)
    except NotFoundError:
        return False
    return True


__all__ = [
    "ARCHIVE_BRANCH",
    "ARCHIVE_KINDS",
    "ARCHIVE_PREFIX",
    "ArchiveKind",
    "ArchiveObject",
    "archive_digest",
    "archive_path",
    "ensure_archived",
    "load_archived",
]
