"""The embedded versioned data store: lakeFS semantics on a local directory.

``LocalStore(root)`` implements :class:`~airflow_repro.core.ports.VersionedDataStore` with the same
vocabulary and rules as lakeFS (repositories, branches, immutable tags, commits with string
metadata, reads at any ref, two-dot diffs) so a pipeline that works locally works on lakeFS too.

On-disk layout under ``root``::

    objects/<2 hex>/<62 hex>            content, named by its BLAKE3 digest; stored once for the
                                        whole store (all repositories), read-only (0o444)
    tmp/                                temp files; inside root so it is on the same filesystem and
                                        every ``os.replace`` into place is atomic
    repos/<name>/repository.json        {"name", "default_branch", "created_at"}
    repos/<name>/trees/<sha256>.json    sorted mapping path -> {"hash", "size"}; named by the
                                        SHA-256 of its canonical JSON (the file's exact bytes)
    repos/<name>/commits/<sha256>.json  {"tree", "parents", "message", "metadata", "created_at",
                                        "committer"}; the commit id is the SHA-256 of these bytes
    repos/<name>/refs/branches/<name>   a commit id
    repos/<name>/refs/tags/<name>       a commit id (tags never move)
    repos/<name>/.lock                  a ``filelock.FileLock`` taken for every ref update
    .gc.lock, .gc.queue                 store-wide lock: writers share it, ``collect_garbage`` takes
                                        it alone (``flock(2)``; ``.gc.queue`` makes new writers wait
                                        behind a waiting collector, so it cannot starve)

Consistency rules:

* Every file is written to ``tmp/``, flushed, fsync'd, then ``os.replace``'d to its final name and
  its directory fsync'd: no partial file is ever visible under a final name.
* Objects, trees and commits are content-addressed and immutable, so writing them needs no lock.
  Only refs move, and only under the repository lock: a commit reads the branch head *under the
  lock* and makes it the parent, so concurrent committers (threads or OS processes) serialise and
  no commit is lost.
* The ref is moved last. A process killed before that leaves the branch on its previous commit;
  the orphan objects, trees and commits it wrote are never reachable and are harmless.
* A new repository is built in ``tmp/`` and renamed into ``repos/`` in one step.
* Reads verify: commit and tree files are checked against their ids when loaded, ``open_object``
  checks the BLAKE3 hash at EOF, ``materialize`` checks it before handing the file over.
  ``StoreCorruption`` is raised on any mismatch.
* An object already stored is never trusted when the same content is staged again: the bytes just
  hashed replace it (a rename, no extra read), so a damaged object is repaired rather than
  referenced by the new commit.
* A damaged ``repository.json`` or ref file affects only what names it: listings skip it (with a
  warning), reading it raises ``StoreCorruption`` naming the file, ``check_layout`` reports it.
* Garbage: a killed writer leaves temp files, unreferenced objects and orphan commits and trees.
  ``collect_garbage`` removes those older than a grace period. Every writer (staging, commit,
  branch, tag, repository) holds the store lock shared while it checks or places objects and moves
  a ref; the collector marks, then re-marks and deletes holding it alone, so a commit either
  finished before the final mark (its objects are marked) or validates its objects after the
  deletion (and fails cleanly instead of publishing a dangling reference). The grace period
  (counted from each file's last change: placing an object renames it, which updates its ctime)
  keeps objects staged for a commit not yet made.
* A failed commit removes the objects its own staging brought in, unless another writer placed
  the same content since or a commit references it (checked holding the store lock alone).
* ``OSError`` (read-only or full file system, permission denied, I/O errors) is translated at the
  public methods: ``StoreUnavailable`` naming the store folder and the fix, ``StoreCorruption`` for
  a store file that is missing, ``ReproUserError`` for the caller's own files.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import getpass
import hashlib
import io
import json
import logging
import os
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeVar, cast

import filelock

from airflow_repro.core.hashing import (
    HASH_PREFIX,
    copy_and_hash,
    format_content_hash,
    hash_bytes,
    hash_stream,
    is_content_hash,
    new_hasher,
    parse_content_hash,
)
from airflow_repro.core.naming import (
    BRANCH_RE,
    TAG_RE,
    is_commit_id,
    validate_branch_name,
    validate_ref,
    validate_repository_name,
    validate_tag_name,
)
from airflow_repro.core.ports import (
    Commit,
    DiffEntry,
    GarbageReport,
    ObjectInfo,
    Problem,
    Repository,
    StagedObject,
)
from airflow_repro.core.store_rules import checked_name, validate_commit_metadata, validate_object_path
from airflow_repro.errors import (
    AlreadyExistsError,
    ConfigError,
    InvalidNameError,
    NotFoundError,
    ObjectGone,
    ObjectNotFound,
    RefNotFound,
    RepositoryNotFound,
    ReproError,
    ReproUserError,
    StoreCorruption,
    StoreNotFound,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

INITIAL_COMMIT_MESSAGE = "Repository created"
DEFAULT_LOCK_TIMEOUT_S = 30.0
DEFAULT_GC_GRACE_S = 3600.0
READ_ONLY = 0o444
#: A failed commit looks for commits referencing its objects made since it staged them, minus this
#: margin for wall-clock adjustments (commit times are wall-clock).
_CLOCK_SLACK_S = 300.0
#: How long a failed commit waits for the store lock to remove its objects (else gc does it later).
_DISCARD_LOCK_TIMEOUT_S = 2.0

_REPOSITORY_FILE = "repository.json"
_LOCK_FILE = ".lock"
_GC_LOCK_FILE = ".gc.lock"
_GC_QUEUE_FILE = ".gc.queue"
RefKind = Literal["branches", "tags"]
_BRANCHES: RefKind = "branches"
_TAGS: RefKind = "tags"

_Tree = Mapping[str, tuple[str, int]]  # path -> (content hash, size)


# --------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------


def _canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _default_committer() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no user name here (e.g. a container with an arbitrary uid)
        return ""


def _fsync_dir(directory: Path) -> None:
    """Make a rename or a new entry in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_new_file_durably(path: Path, data: bytes) -> None:
    with open(path, "xb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _diff_trees(left: _Tree, right: _Tree, prefix: str) -> list[DiffEntry]:
    entries = []
    for path in sorted(p for p in left.keys() | right.keys() if p.startswith(prefix)):
        before, after = left.get(path), right.get(path)
        left_info = ObjectInfo(path, *before) if before else None
        right_info = ObjectInfo(path, *after) if after else None
        if before is None:
            entries.append(DiffEntry(path, "added", None, right_info))
        elif after is None:
            entries.append(DiffEntry(path, "removed", left_info, None))
        elif before[0] != after[0]:
            entries.append(DiffEntry(path, "changed", left_info, right_info))
    return entries


# --------------------------------------------------------------------------------------------
# OS errors, the store-wide lock, objects not yet published
# --------------------------------------------------------------------------------------------

_FULL = (errno.ENOSPC, errno.EDQUOT)
_DENIED = (errno.EACCES, errno.EPERM)
_MISSING = (errno.ENOENT, errno.ENOTDIR)


def _is_inside(root: Path, path: str | bytes | os.PathLike[Any]) -> bool:
    return Path(os.fsdecode(path)).absolute().is_relative_to(root)


def store_os_error(root: Path, exc: OSError) -> ReproError:
    """What an ``OSError`` means for the store at ``root``, and what to do about it."""
    where = os.fsdecode(exc.filename) if exc.filename is not None else str(root)
    inside = exc.filename is None or _is_inside(root, exc.filename)
    reason = exc.strerror or type(exc).__name__
    if exc.errno == errno.EROFS:
        return StoreUnavailable(
            f"the store at {root} is on a read-only file system ({where}): remount it read-write, "
            "or point [repro] home (or store_uri, or --home) at a writable folder"
        )
    if exc.errno in _FULL:
        return StoreUnavailable(
            f"no space left for the store at {root} ({reason}: {where}): free space there "
            "('airflow-repro gc --delete' removes unreferenced data) or move the store"
        )
    if exc.errno in _DENIED and inside:
        return StoreUnavailable(
            f"permission denied on {where} in the store at {root}: run as the user owning the store "
            "folder, or give that user write access to it"
        )
    if not inside:
        return ReproUserError(f"cannot use {where}: {reason}")
    if exc.errno in _MISSING:
        return StoreCorruption(
            f"{where} is missing from the store at {root} ({reason}); run 'airflow-repro fsck' to see "
            "what else is damaged"
        )
    return StoreUnavailable(f"the store at {root} failed: {reason} ({where}); retry, and check the disk if it persists")


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _os_errors_translated(method: _Method) -> _Method:
    """Public store methods raise the project's errors, never a raw ``OSError``."""

    @functools.wraps(method)
    def wrapper(self: LocalStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except OSError as exc:
            raise store_os_error(self.root, exc) from exc

    return cast(_Method, wrapper)


def _flock(path: Path, mode: int, deadline: float, busy: Callable[[], ReproError]) -> int:
    """Open ``path`` and take ``flock(mode)`` on it before ``deadline``; the fd holds the lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise busy() from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        except BaseException:
            os.close(fd)
            raise


class _StoreLock:
    """Store-wide reader/writer lock: writers share it, the garbage collector takes it alone.

    ``flock`` locks belong to an open file, so threads and processes are treated alike. Taking it
    goes through the queue lock first: a collector waiting there holds back new writers, so
    a steady stream of commits cannot starve it.
    """

    def __init__(self, root: Path) -> None:
        self._root = root
        self._lock = root / _GC_LOCK_FILE
        self._queue = root / _GC_QUEUE_FILE

    @contextmanager
    def held(self, *, exclusive: bool, timeout: float) -> Iterator[None]:
        deadline = time.monotonic() + timeout
        queue = _flock(self._queue, fcntl.LOCK_EX, deadline, lambda: self._busy(timeout))
        try:
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            fd = _flock(self._lock, mode, deadline, lambda: self._busy(timeout))
        finally:
            os.close(queue)
        try:
            yield
        finally:
            os.close(fd)  # closing the file releases the lock

    def _busy(self, timeout: float) -> StoreUnavailable:
        return StoreUnavailable(
            f"the store at {self._root} stayed locked for more than {timeout:g}s (a garbage collection "
            f"or many writers at once; lock file {self._lock}); retry"
        )


@dataclass
class _Unpublished:
    """Objects this store object placed and no commit of its own has published yet.

    Keyed by content hash: the (device, inode) of the file placed, and when (wall clock).
    """

    placed: dict[str, tuple[tuple[int, int], float]] = field(default_factory=dict)
    guard: threading.Lock = field(default_factory=threading.Lock)

    def add(self, content_hash: str, identity: tuple[int, int]) -> None:
        with self.guard:
            self.placed[content_hash] = (identity, time.time())

    def take(self, hashes: Iterable[str]) -> dict[str, tuple[tuple[int, int], float]]:
        with self.guard:
            return {h: self.placed.pop(h) for h in set(hashes) if h in self.placed}


@dataclass
class _Marks:
    """What garbage collection found reachable: commits and trees per repository, and objects."""

    commits: set[tuple[str, str]] = field(default_factory=set)
    trees: set[tuple[str, str]] = field(default_factory=set)
    objects: dict[str, int] = field(default_factory=dict)  # content hash -> size


@dataclass(frozen=True, slots=True)
class _Garbage:
    """A file (or temp folder) garbage collection may remove."""

    kind: Literal["object", "temp", "commit", "tree"]
    path: Path
    size: int
    key: tuple[str, str] | str | None  # content hash, (repository, id), or None for temp files


def _age_basis(path: Path) -> float:
    """When ``path`` last changed: a rename (placing an object, taking a file) updates ctime."""
    st = path.lstat()
    return max(st.st_mtime, st.st_ctime)


def _size_of(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir())
    return path.lstat().st_size


def _parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _size_or_zero(path: Path) -> int:
    try:
        return _size_of(path)
    except FileNotFoundError:
        return 0


def _is_valid_repository_name(name: str) -> bool:
    try:
        checked_name(validate_repository_name, name)
    except InvalidNameError:
        return False
    return True


def _staged_hashes(changes: object) -> list[str]:
    if not isinstance(changes, Mapping):
        return []
    return [staged.content_hash for staged in changes.values() if isinstance(staged, StagedObject)]


def _garbage_report(
    garbage: Sequence[_Garbage], marks: _Marks, *, grace_s: float, deleted: bool, recent: int
) -> GarbageReport:
    def total(*kinds: str) -> tuple[int, int]:
        items = [g for g in garbage if g.kind in kinds]
        return len(items), sum(g.size for g in items)

    objects, object_bytes = total("object")
    temps, temp_bytes = total("temp")
    metadata, metadata_bytes = total("commit", "tree")
    return GarbageReport(
        deleted=deleted,
        grace_s=grace_s,
        objects=objects,
        object_bytes=object_bytes,
        temp_entries=temps,
        temp_bytes=temp_bytes,
        metadata_files=metadata,
        metadata_bytes=metadata_bytes,
        recent_unreferenced_objects=recent,
        referenced_objects=len(marks.objects),
        referenced_bytes=sum(marks.objects.values()),
    )


@dataclass(frozen=True, slots=True)
class _StoredCommit:
    """A commit as stored: the fields its id is computed from."""

    tree: str
    parents: tuple[str, ...]
    message: str
    metadata: Mapping[str, str]
    created_at: str
    committer: str

    def canonical_bytes(self) -> bytes:
        return _canonical_json(
            {
                "tree": self.tree,
                "parents": list(self.parents),
                "message": self.message,
                "metadata": dict(self.metadata),
                "created_at": self.created_at,
                "committer": self.committer,
            }
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _StoredCommit:
        return cls(
            tree=data["tree"],
            parents=tuple(data["parents"]),
            message=data["message"],
            metadata=dict(data["metadata"]),
            created_at=data["created_at"],
            committer=data["committer"],
        )

    def to_commit(self, commit_id: str, repository: str) -> Commit:
        return Commit(
            id=commit_id,
            repository=repository,
            parents=self.parents,
            message=self.message,
            metadata=dict(self.metadata),
            created_at=self.created_at,
            committer=self.committer,
        )


class _VerifyingReader(io.RawIOBase):
    """Reads an object file and checks its BLAKE3 hash and size when EOF is reached."""

    def __init__(
        self,
        raw: BinaryIO,
        expected_hash: str,
        expected_size: int,
        what: str,
        on_os_error: Callable[[OSError], ReproError],
    ) -> None:
        super().__init__()
        self._raw = raw
        self._on_os_error = on_os_error
        self._expected_hash = expected_hash
        self._expected_size = expected_size
        self._what = what
        self._hasher = new_hasher()
        self._size = 0
        self._verified = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            n: int = self._raw.readinto(buffer)  # type: ignore[attr-defined]  # raw file objects have it
        except OSError as exc:
            raise self._on_os_error(exc) from exc
        if n:
            with memoryview(buffer) as view:
                self._hasher.update(view[:n])
            self._size += n
        else:
            self._verify()
        return n

    def _verify(self) -> None:
        if self._verified:
            return
        actual = format_content_hash(self._hasher.hexdigest())
        if actual != self._expected_hash or self._size != self._expected_size:
            raise StoreCorruption(
                f"{self._what}: content read ({self._size} bytes, {actual}) does not match the "
                f"recorded {self._expected_hash} ({self._expected_size} bytes); the object file "
                "was modified or damaged"
            )
        self._verified = True

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


class LocalStore:
    """A git-like versioned data store in a local directory (see the module docstring).

    Safe for concurrent use by threads and by OS processes sharing ``root`` on one machine.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
        committer: str | None = None,
        create: bool = True,
    ) -> None:
        """Open the store at ``root``; ``create=False`` (for commands that only read) never creates
        a folder and raises ``StoreNotFound`` where there is no store."""
        self.root = Path(root).absolute()
        self.lock_timeout = lock_timeout
        self.committer = _default_committer() if committer is None else committer
        self._objects = self.root / "objects"
        self._tmp = self.root / "tmp"
        self._repos = self.root / "repos"
        try:
            self._open_layout(create)
            self._tmp_device = self._tmp.stat().st_dev
        except OSError as exc:
            raise self._layout_error(exc) from exc
        self._lock = _StoreLock(self.root)
        self._unpublished = _Unpublished()
        self._healthy_repositories: set[str] = set()  # repository.json files read and valid
        # Commits and trees are immutable and named by their hash, so caching them is always safe.
        self._cached_commit = functools.lru_cache(maxsize=4096)(self._read_commit_record)
        self._cached_tree = functools.lru_cache(maxsize=64)(self._read_tree)

    def _open_layout(self, create: bool) -> None:
        folders = (self._objects, self._tmp, self._repos)
        if create:
            for directory in folders:
                directory.mkdir(parents=True, exist_ok=True)
        elif not all(directory.is_dir() for directory in folders):
            file = next((p for p in (self.root, *self.root.parents) if p.is_file()), None)
            what = f"{file} is a file, not a folder" if file else f"there is no store at {self.root}"
            raise StoreNotFound(
                f"{what}; check --home / [repro] home (or store_uri): the store is created by the first recorded task"
            )

    def _layout_error(self, exc: OSError) -> ReproError:
        if exc.errno in (errno.ENOTDIR, errno.EEXIST):
            return ConfigError(
                f"cannot create the store at {self.root}: {os.fsdecode(exc.filename or self.root)} is not a "
                "folder; point [repro] home (or store_uri, or --home) at a folder"
            )
        return store_os_error(self.root, exc)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    # ---- repositories ------------------------------------------------------------------------

    @_os_errors_translated
    def create_repository(self, name: str, *, default_branch: str = "main", exist_ok: bool = False) -> Repository:
        """Create a repository; its default branch starts at one empty "Repository created" commit.

        The whole repository is built in ``tmp/`` and published by one directory rename.
        """
        checked_name(validate_repository_name, name)
        checked_name(validate_branch_name, default_branch)
        final = self._repos / name
        if not (final / _REPOSITORY_FILE).is_file() and self._publish_repository(name, default_branch):
            return self.get_repository(name)
        if not exist_ok:
            raise AlreadyExistsError(f"repository {name!r} already exists in {self.root}")
        return self.get_repository(name)

    def _publish_repository(self, name: str, default_branch: str) -> bool:
        """Build the repository in ``tmp/`` and rename it into place; False if another process won."""
        with self._lock.held(exclusive=False, timeout=self.lock_timeout):
            staging = self._build_repository(name, default_branch)
            try:
                # One rename publishes the whole repository; it fails if another process won.
                os.rename(staging, self._repos / name)
            except OSError as exc:
                shutil.rmtree(staging, ignore_errors=True)
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                return False
        _fsync_dir(self._repos)
        return True

    @_os_errors_translated
    def get_repository(self, name: str) -> Repository:
        return self._repository_info(self._repo_dir(name))

    @_os_errors_translated
    def list_repositories(self) -> list[Repository]:
        """Every readable repository; one whose ``repository.json`` is damaged is skipped (with a
        warning), so that the others stay usable. ``check_layout`` reports it."""
        repositories = []
        for name in self._repository_dir_names():
            try:
                repositories.append(self.get_repository(name))
            except StoreCorruption as exc:
                log.warning("repository %r skipped: %s", name, exc)
        return repositories

    def _repository_dir_names(self) -> list[str]:
        """Folders holding a repository file, under a valid name (no API makes other ones)."""
        names = sorted(p.name for p in self._repos.iterdir() if (p / _REPOSITORY_FILE).is_file())
        return [name for name in names if _is_valid_repository_name(name)]

    # ---- refs --------------------------------------------------------------------------------

    @_os_errors_translated
    def create_branch(self, repository: str, name: str, source_ref: str, *, exist_ok: bool = False) -> str:
        """Create ``name`` at ``source_ref``; ``exist_ok`` returns an existing branch's head."""
        repo_dir = self._repo_dir(repository)
        checked_name(validate_branch_name, name)
        checked_name(validate_ref, source_ref)
        with self._ref_update(repository, repo_dir):
            head = self._read_ref(repo_dir, _BRANCHES, name)
            if head is not None:
                if exist_ok:
                    return head
                raise AlreadyExistsError(f"branch {name!r} already exists in repository {repository!r} (at {head})")
            commit_id = self._resolve(repository, repo_dir, source_ref)
            self._set_ref(repo_dir, _BRANCHES, name, commit_id)
            return commit_id

    @_os_errors_translated
    def list_branches(self, repository: str) -> dict[str, str]:
        return self._list_refs(self._repo_dir(repository), _BRANCHES)

    @_os_errors_translated
    def create_tag(self, repository: str, tag: str, ref: str, *, exist_ok: bool = False) -> str:
        """Create an immutable tag; ``exist_ok`` accepts an existing tag on the same commit."""
        repo_dir = self._repo_dir(repository)
        checked_name(validate_tag_name, tag)
        checked_name(validate_ref, ref)
        with self._ref_update(repository, repo_dir):
            commit_id = self._resolve(repository, repo_dir, ref)
            existing = self._read_ref(repo_dir, _TAGS, tag)
            if existing is not None:
                if exist_ok and existing == commit_id:
                    return existing
                raise AlreadyExistsError(
                    f"tag {tag!r} already exists in repository {repository!r} at commit {existing}"
                    + ("" if existing == commit_id else f", not {commit_id}; tags are immutable")
                )
            self._set_ref(repo_dir, _TAGS, tag, commit_id)
            return commit_id

    @_os_errors_translated
    def list_tags(self, repository: str) -> dict[str, str]:
        return self._list_refs(self._repo_dir(repository), _TAGS)

    @_os_errors_translated
    def resolve_ref(self, repository: str, ref: str) -> str:
        """A full commit id (that exists), else a branch, else a tag -> the full commit id."""
        repo_dir = self._repo_dir(repository)
        checked_name(validate_ref, ref)
        return self._resolve(repository, repo_dir, ref)

    # ---- staging and committing --------------------------------------------------------------

    @_os_errors_translated
    def stage_file(self, repository: str, source: Path, *, move: bool = False) -> StagedObject:
        """Hash ``source`` (one streaming read) and store its content under ``objects/``.

        With ``move`` a plain file on the same filesystem is renamed in, never copied; otherwise
        it is copied and hashed in the same pass (and the source removed when ``move``).
        """
        self._repo_dir(repository)
        source = Path(source)
        source_stat = self._stat_source(source)
        if move and self._can_take_by_rename(source_stat):
            taken = self._take_file(source)
            if taken is not None:
                return self._stage_taken_file(taken, source)
        staged = self._stage_by_copy(source)
        if move:
            source.unlink()
        return staged

    @_os_errors_translated
    def stage_bytes(self, repository: str, data: bytes) -> StagedObject:
        """Store in-memory content (a manifest, say) as an object, like ``stage_file``."""
        self._repo_dir(repository)
        content_hash = hash_bytes(data)
        tmp = self._new_tmp_path()
        try:
            _write_new_file_durably(tmp, data)
            return self._place_object(tmp, content_hash, len(data))
        except BaseException:
            with suppress(FileNotFoundError):
                tmp.unlink()
            raise

    @_os_errors_translated
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
        """Apply ``changes`` (path -> staged object, or ``None`` to delete) in one commit.

        If it fails, the objects that this store object's staging brought in for it are removed.
        """
        hashes = _staged_hashes(changes)
        try:
            commit = self._commit(repository, branch, changes, message, metadata, allow_empty)
        except Exception:
            self._discard_unpublished(self._unpublished.take(hashes))
            raise
        self._unpublished.take(hashes)
        return commit

    def _commit(
        self,
        repository: str,
        branch: str,
        changes: Mapping[str, StagedObject | None],
        message: str,
        metadata: Mapping[str, str] | None,
        allow_empty: bool,
    ) -> Commit:
        repo_dir = self._repo_dir(repository)
        checked_name(validate_branch_name, branch)
        if not isinstance(message, str):
            raise ReproUserError(f"commit message must be a string, got {type(message).__name__}")
        clean_metadata = validate_commit_metadata(metadata)
        # Objects are checked holding the store lock: garbage collection cannot remove them
        # between this check and the ref update.
        with self._ref_update(repository, repo_dir):
            clean_changes = self._validate_changes(changes)
            # The parent is the head read under the lock: this keeps concurrent commits safe.
            parent_id = self._read_ref(repo_dir, _BRANCHES, branch)
            if parent_id is None:
                raise RefNotFound(self._missing_ref_message(repository, branch, kind="branch"))
            parent = self._cached_commit(repository, parent_id)
            tree = self._apply_changes(repository, branch, self._cached_tree(repository, parent.tree), clean_changes)
            tree_bytes = _canonical_json({path: {"hash": h, "size": s} for path, (h, s) in tree.items()})
            tree_id = _sha256_hex(tree_bytes)
            if tree_id == parent.tree and not allow_empty:
                raise ReproUserError(
                    f"no changes to commit on branch {branch!r} of repository {repository!r}: "
                    "the changes leave every path as it is (pass allow_empty=True to commit anyway)"
                )
            self._write_immutable(repo_dir / "trees" / f"{tree_id}.json", tree_bytes)
            record = _StoredCommit(
                tree=tree_id,
                parents=(parent_id,),
                message=message,
                metadata=clean_metadata,
                created_at=_utc_now(),
                committer=self.committer,
            )
            commit_id = self._write_commit(repo_dir, record)
            self._set_ref(repo_dir, _BRANCHES, branch, commit_id)
        return record.to_commit(commit_id, repository)

    # ---- history -----------------------------------------------------------------------------

    @_os_errors_translated
    def get_commit(self, repository: str, ref: str) -> Commit:
        commit_id = self.resolve_ref(repository, ref)
        return self._cached_commit(repository, commit_id).to_commit(commit_id, repository)

    @_os_errors_translated
    def log(self, repository: str, ref: str, *, limit: int | None = None) -> Iterator[Commit]:
        """Commits reachable from ``ref`` by first parents, newest first."""
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ReproUserError(f"log limit must be a non-negative integer or None, got {limit!r}")
        # Resolve now, so an unknown ref fails at the call and not at the first next().
        commit_id = self.resolve_ref(repository, ref)
        return self._first_parent_chain(repository, commit_id, limit)

    # ---- reading data ------------------------------------------------------------------------

    @_os_errors_translated
    def list_objects(self, repository: str, ref: str, prefix: str = "") -> list[ObjectInfo]:
        tree = self._tree_at(repository, ref)
        return [ObjectInfo(path, h, s) for path, (h, s) in sorted(tree.items()) if path.startswith(prefix)]

    @_os_errors_translated
    def stat_object(self, repository: str, ref: str, path: str) -> ObjectInfo:
        validate_object_path(path)
        commit_id = self.resolve_ref(repository, ref)
        entry = self._tree_of_commit(repository, commit_id).get(path)
        if entry is None:
            raise ObjectNotFound(
                f"path {path!r} does not exist in repository {repository!r} at ref {ref!r} "
                f"(commit {commit_id}); see list_objects({repository!r}, {ref!r})"
            )
        info = ObjectInfo(path, *entry)
        if not self.object_path(info.content_hash).exists():
            raise ObjectGone(
                f"the data of {path!r} in repository {repository!r} at commit {commit_id} is gone "
                f"(object {info.content_hash} was deleted, e.g. by garbage collection)"
            )
        return info

    @_os_errors_translated
    def check_available(self, repository: str, commit_id: str, path: str, content_hash: str) -> None:
        """Content-addressed, so the data is available iff the commit and the object file exist;
        no tree is read (a tree is the size of the whole repository at that commit)."""
        validate_object_path(path)
        repo_dir = self._repo_dir(repository)
        if not is_commit_id(commit_id) or not self._commit_file(repo_dir, commit_id).exists():
            raise RefNotFound(f"commit {commit_id} does not exist in repository {repository!r}")
        parse_content_hash(content_hash)
        if not self.object_path(content_hash).exists():
            raise ObjectGone(
                f"the data of {path!r} in repository {repository!r} at commit {commit_id} is gone "
                f"(object {content_hash} was deleted, e.g. by garbage collection)"
            )

    @_os_errors_translated
    def open_object(self, repository: str, ref: str, path: str) -> BinaryIO:
        """A binary reader of ``path`` at ``ref``; ``StoreCorruption`` at EOF on a mismatch."""
        info = self.stat_object(repository, ref, path)
        raw = self._open_object_file(info.content_hash)
        what = f"object {path!r} of repository {repository!r} at ref {ref!r}"
        reader = _VerifyingReader(raw, info.content_hash, info.size, what, functools.partial(store_os_error, self.root))
        return io.BufferedReader(reader, buffer_size=1024 * 1024)

    @_os_errors_translated
    def materialize(self, repository: str, ref: str, path: str, destination: Path) -> ObjectInfo:
        """Place the verified content of ``path`` at ``destination``, read-only.

        Always a copy, never a link: task code (root ignores read-only bits) can then never alter
        what was recorded.
        """
        info = self.stat_object(repository, ref, path)
        destination = Path(destination).absolute()
        destination.parent.mkdir(parents=True, exist_ok=True)
        what = f"object {path!r} of repository {repository!r} at ref {ref!r}"
        # Build the result next to the destination, then rename: never a half-written destination.
        staging = destination.parent / f".{destination.name}.{uuid.uuid4().hex}.repro-tmp"
        try:
            self._copy_verified(info, staging, what)
            os.replace(staging, destination)
        finally:
            # Also covers rename(2)'s no-op when both names already link the same inode.
            with suppress(FileNotFoundError):
                os.unlink(staging)
        return info

    @_os_errors_translated
    def diff(self, repository: str, left_ref: str, right_ref: str, prefix: str = "") -> list[DiffEntry]:
        """Two-dot diff: the paths whose content differs between the two trees, sorted."""
        return _diff_trees(self._tree_at(repository, left_ref), self._tree_at(repository, right_ref), prefix)

    # ---- objects -----------------------------------------------------------------------------

    def object_path(self, content_hash: str) -> Path:
        """Where the content with this hash is (or would be) stored."""
        digest = parse_content_hash(content_hash)
        return self._objects / digest[:2] / digest[2:]

    # ---- maintenance: layout check, garbage collection ---------------------------------------

    @_os_errors_translated
    def check_layout(self, repositories: Sequence[str] | None = None) -> list[Problem]:
        """Damage in the store's own files that listings skip: ``repository.json`` and ref files.

        Reads only. ``core.integrity.check_store`` adds these to what it finds through the port.
        """
        names = self._repository_dir_names() if repositories is None else list(repositories)
        problems = []
        for name in names:
            repo_dir = self._repos / checked_name(validate_repository_name, name)
            if not (repo_dir / _REPOSITORY_FILE).is_file():
                self._repo_dir(name)  # raises RepositoryNotFound, listing the existing ones
            try:
                self._repository_info(repo_dir)
            except StoreCorruption as exc:
                problems.append(Problem("repository", name, str(exc), path=_REPOSITORY_FILE))
                continue
            problems.extend(self._ref_problems(repo_dir))
        return problems

    def _ref_problems(self, repo_dir: Path) -> list[Problem]:
        problems = []
        for kind in (_BRANCHES, _TAGS):
            for ref_file in sorted((repo_dir / "refs" / kind).iterdir()):
                try:
                    self._read_ref(repo_dir, kind, ref_file.name)
                except StoreCorruption as exc:
                    label = ref_file.name if kind == _BRANCHES else f"tags/{ref_file.name}"
                    problems.append(Problem("ref", repo_dir.name, str(exc), ref=label))
        return problems

    @_os_errors_translated
    def collect_garbage(
        self, *, grace_s: float = DEFAULT_GC_GRACE_S, delete: bool = False, lock_timeout: float | None = None
    ) -> GarbageReport:
        """Find what no ref reaches and nothing changed for ``grace_s`` seconds: objects, temp
        files, orphan commits and trees (left by killed writers). ``delete`` removes them.

        Safe while others commit (module docstring): the bulk of the marking runs unlocked; the
        final mark and the deletion hold the store lock alone, re-checking every file first.
        A damaged ref, commit or tree stops it before anything is deleted (``StoreCorruption``).
        """
        if not (isinstance(grace_s, int | float) and 0 <= grace_s < float("inf")):
            raise ReproUserError(f"grace period must be a finite number of seconds >= 0, got {grace_s!r}")
        cutoff = time.time() - grace_s
        marks = _Marks()
        self._mark(marks)
        garbage, recent = self._find_garbage(marks, cutoff)
        if delete:
            with self._lock.held(exclusive=True, timeout=lock_timeout or self.lock_timeout):
                self._mark(marks)  # what was committed meanwhile: only new history is read
                garbage = [g for g in garbage if self._still_garbage(g, marks, cutoff)]
                for item in garbage:
                    self._remove(item)
        return _garbage_report(garbage, marks, grace_s=grace_s, deleted=delete, recent=recent)

    def _mark(self, marks: _Marks) -> None:
        """Mark every commit, tree and object reachable from any ref of any repository folder
        (also one whose repository.json is damaged: its data is still referenced)."""
        try:
            for repo_dir in sorted(p for p in self._repos.iterdir() if p.is_dir()):
                for kind in (_BRANCHES, _TAGS):
                    for ref_file in (repo_dir / "refs" / kind).iterdir():
                        head = self._read_ref(repo_dir, kind, ref_file.name)
                        if head is not None:
                            self._mark_history(repo_dir.name, head, marks)
        except StoreCorruption as exc:
            raise StoreCorruption(
                f"garbage collection stopped before deleting anything: {exc}. Repair the store first "
                "('airflow-repro fsck' lists what is damaged)"
            ) from exc

    def _mark_history(self, repository: str, head: str, marks: _Marks) -> None:
        pending = [head]
        while pending:
            commit_id = pending.pop()
            if (repository, commit_id) in marks.commits:
                continue  # its whole history is marked already
            record = self._cached_commit(repository, commit_id)
            if (repository, record.tree) not in marks.trees:
                for content_hash, size in self._cached_tree(repository, record.tree).values():
                    marks.objects[content_hash] = size
                marks.trees.add((repository, record.tree))
            marks.commits.add((repository, commit_id))
            pending.extend(record.parents)

    def _find_garbage(self, marks: _Marks, cutoff: float) -> tuple[list[_Garbage], int]:
        """Unreferenced files older than ``cutoff``, and how many unreferenced objects are younger."""
        garbage: list[_Garbage] = []
        recent = 0
        for item in self._unreferenced(marks):
            with suppress(FileNotFoundError):  # removed meanwhile (a failed commit's own objects)
                if _age_basis(item.path) < cutoff:
                    garbage.append(item)
                elif item.kind == "object":
                    recent += 1
        return garbage, recent

    def _unreferenced(self, marks: _Marks) -> Iterator[_Garbage]:
        for fan_out in sorted(self._objects.iterdir()):
            for path in sorted(fan_out.iterdir()) if fan_out.is_dir() else ():
                content_hash = f"{HASH_PREFIX}{fan_out.name}{path.name}"
                if is_content_hash(content_hash) and content_hash not in marks.objects:
                    yield _Garbage("object", path, _size_or_zero(path), content_hash)
        for path in sorted(self._tmp.iterdir()):
            yield _Garbage("temp", path, _size_or_zero(path), None)
        for repo_dir in sorted(p for p in self._repos.iterdir() if p.is_dir()):
            garbage_kinds: tuple[tuple[Literal["commit", "tree"], set[tuple[str, str]]], ...] = (
                ("commit", marks.commits),
                ("tree", marks.trees),
            )
            for kind, seen in garbage_kinds:
                for path in sorted((repo_dir / f"{kind}s").glob("*.json")):
                    if is_commit_id(path.stem) and (repo_dir.name, path.stem) not in seen:
                        yield _Garbage(kind, path, _size_or_zero(path), (repo_dir.name, path.stem))

    @staticmethod
    def _still_garbage(item: _Garbage, marks: _Marks, cutoff: float) -> bool:
        """Re-checked holding the store lock alone: unchanged since it was found, still unreferenced."""
        try:
            if _age_basis(item.path) >= cutoff:
                return False
        except FileNotFoundError:
            return False
        if item.kind == "object":
            return item.key not in marks.objects
        if item.kind in ("commit", "tree"):
            return item.key not in (marks.commits if item.kind == "commit" else marks.trees)
        return True

    @staticmethod
    def _remove(item: _Garbage) -> None:
        if item.path.is_dir() and not item.path.is_symlink():
            shutil.rmtree(item.path)
        else:
            with suppress(FileNotFoundError):
                item.path.unlink()

    def _discard_unpublished(self, placed: Mapping[str, tuple[tuple[int, int], float]]) -> None:
        """After a failed commit, remove the objects that only its own staging brought in.

        Holding the store lock alone, an object is removed only if it is still the file this
        store object placed (nobody staged the same content since) and no commit made since then
        references it. Best effort: whatever stays is garbage-collected later.
        """
        if not placed:
            return
        try:
            with self._lock.held(exclusive=True, timeout=_DISCARD_LOCK_TIMEOUT_S):
                since = min(placed_at for _, placed_at in placed.values()) - _CLOCK_SLACK_S
                referenced = self._objects_committed_since(since)
                for content_hash, (identity, _) in placed.items():
                    path = self.object_path(content_hash)
                    with suppress(FileNotFoundError):
                        st = path.lstat()
                        if (st.st_dev, st.st_ino) == identity and content_hash not in referenced:
                            path.unlink()
        except (ReproError, OSError) as exc:
            log.info("objects of a failed commit are left for garbage collection: %s", exc)

    def _objects_committed_since(self, since: float) -> set[str]:
        """Objects referenced by a commit made after ``since`` (wall clock) on any ref."""
        cutoff = datetime.fromtimestamp(since, UTC)
        objects: set[str] = set()
        for repo_dir in (p for p in self._repos.iterdir() if p.is_dir()):
            for kind in (_BRANCHES, _TAGS):
                for ref_file in (repo_dir / "refs" / kind).iterdir():
                    commit_id = self._read_ref(repo_dir, kind, ref_file.name)
                    while commit_id is not None:
                        record = self._cached_commit(repo_dir.name, commit_id)
                        if _parse_utc(record.created_at) < cutoff:
                            break
                        objects.update(h for h, _ in self._cached_tree(repo_dir.name, record.tree).values())
                        commit_id = record.parents[0] if record.parents else None
        return objects

    # ---- internals: repositories, locks, refs ------------------------------------------------

    def _repo_dir(self, name: str) -> Path:
        """The directory of an existing repository; ``StoreCorruption`` if its file is damaged."""
        checked_name(validate_repository_name, name)
        repo_dir = self._repos / name
        if not (repo_dir / _REPOSITORY_FILE).is_file():
            existing = ", ".join(r.name for r in self.list_repositories()) or "none"
            raise RepositoryNotFound(
                f"repository {name!r} does not exist in the store at {self.root} "
                f"(existing: {existing}); create it with create_repository({name!r})"
            )
        if name not in self._healthy_repositories:
            self._repository_info(repo_dir)  # written once and never changed: checked once
        return repo_dir

    def _repository_info(self, repo_dir: Path) -> Repository:
        path = repo_dir / _REPOSITORY_FILE
        try:
            data = json.loads(path.read_bytes())
            info = Repository(name=data["name"], default_branch=data["default_branch"], created_at=data["created_at"])
            if not all(isinstance(v, str) for v in (info.name, info.default_branch, info.created_at)):
                raise TypeError("name, default_branch and created_at must be strings")
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreCorruption(self._damaged_repository_message(repo_dir, exc)) from exc
        if info.name != repo_dir.name:
            raise StoreCorruption(self._damaged_repository_message(repo_dir, f"it names {info.name!r}"))
        self._healthy_repositories.add(repo_dir.name)
        return info

    def _damaged_repository_message(self, repo_dir: Path, reason: object) -> str:
        branches = sorted(p.name for p in (repo_dir / "refs" / _BRANCHES).glob("*"))
        return (
            f"repository {repo_dir.name!r} is damaged: {repo_dir / _REPOSITORY_FILE} is not a valid "
            f"repository file ({reason}); restore it from a backup, or rewrite it as "
            f'{{"name": "{repo_dir.name}", "default_branch": <one of {branches}>, "created_at": <ISO time>}}'
        )

    def _build_repository(self, name: str, default_branch: str) -> Path:
        """Write a complete repository in ``tmp/``, ready to be renamed into ``repos/``."""
        staging = self._tmp / f"repo-{uuid.uuid4().hex}"
        for sub in ("trees", "commits", f"refs/{_BRANCHES}", f"refs/{_TAGS}"):
            (staging / sub).mkdir(parents=True)
        created_at = _utc_now()
        info = {"name": name, "default_branch": default_branch, "created_at": created_at}
        empty_tree = _canonical_json({})
        empty_tree_id = _sha256_hex(empty_tree)
        record = _StoredCommit(empty_tree_id, (), INITIAL_COMMIT_MESSAGE, {}, created_at, self.committer)
        commit_bytes = record.canonical_bytes()
        commit_id = _sha256_hex(commit_bytes)
        _write_new_file_durably(staging / _REPOSITORY_FILE, _canonical_json(info))
        _write_new_file_durably(staging / "trees" / f"{empty_tree_id}.json", empty_tree)
        _write_new_file_durably(staging / "commits" / f"{commit_id}.json", commit_bytes)
        _write_new_file_durably(staging / "refs" / _BRANCHES / default_branch, f"{commit_id}\n".encode())
        for directory in ("trees", "commits", f"refs/{_BRANCHES}", f"refs/{_TAGS}", "refs", "."):
            _fsync_dir(staging / directory)
        return staging

    @contextmanager
    def _ref_update(self, repository: str, repo_dir: Path) -> Iterator[None]:
        """Held while a ref moves: the store lock shared (no garbage collection meanwhile), then
        the repository's own lock (one ref update at a time)."""
        with (
            self._lock.held(exclusive=False, timeout=self.lock_timeout),
            self._repository_lock(repository, repo_dir),
        ):
            yield

    @contextmanager
    def _repository_lock(self, repository: str, repo_dir: Path) -> Iterator[None]:
        lock = filelock.FileLock(repo_dir / _LOCK_FILE, timeout=self.lock_timeout)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise StoreUnavailable(
                f"repository {repository!r} stayed locked by another process for more than "
                f"{self.lock_timeout:g}s (lock file {repo_dir / _LOCK_FILE}); retry, or raise "
                "lock_timeout if many processes commit at once"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def _ref_file(self, repo_dir: Path, kind: RefKind, name: str) -> Path:
        return repo_dir / "refs" / kind / name

    def _read_ref(self, repo_dir: Path, kind: RefKind, name: str) -> str | None:
        try:
            commit_id = self._ref_file(repo_dir, kind, name).read_text().strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except UnicodeDecodeError:
            commit_id = ""
        if not is_commit_id(commit_id):
            raise StoreCorruption(
                f"ref file {self._ref_file(repo_dir, kind, name)} does not hold a commit id: the "
                f"{'tag' if kind == _TAGS else 'branch'} {name!r} of repository {repo_dir.name!r} is damaged; "
                "restore the file from a backup ('airflow-repro fsck' lists every damaged file)"
            )
        return commit_id

    def _set_ref(self, repo_dir: Path, kind: RefKind, name: str, commit_id: str) -> None:
        """Point a ref at a commit: the single step that publishes a commit. Call under the lock."""
        self._write_atomic(self._ref_file(repo_dir, kind, name), f"{commit_id}\n".encode())

    def _list_refs(self, repo_dir: Path, kind: RefKind) -> dict[str, str]:
        """Every readable ref; a damaged ref file is skipped with a warning (reading that ref
        raises ``StoreCorruption``; ``check_layout`` reports it), so the others stay usable."""
        refs = {}
        for ref_file in sorted((repo_dir / "refs" / kind).iterdir()):
            try:
                commit_id = self._read_ref(repo_dir, kind, ref_file.name)
            except StoreCorruption as exc:
                log.warning("%s skipped: %s", kind[:-1] if kind == _TAGS else "branch", exc)
                continue
            if commit_id is not None:
                refs[ref_file.name] = commit_id
        return refs

    def _resolve(self, repository: str, repo_dir: Path, ref: str) -> str:
        if is_commit_id(ref) and self._commit_file(repo_dir, ref).is_file():
            return ref
        if BRANCH_RE.match(ref) and (head := self._read_ref(repo_dir, _BRANCHES, ref)):
            return head
        if TAG_RE.match(ref) and (tagged := self._read_ref(repo_dir, _TAGS, ref)):
            return tagged
        raise RefNotFound(self._missing_ref_message(repository, ref, kind="branch, tag or commit"))

    def _missing_ref_message(self, repository: str, ref: str, *, kind: str) -> str:
        return (
            f"{kind} {ref!r} not found in repository {repository!r}; see the existing ones "
            f"with list_branches({repository!r}), list_tags({repository!r}) "
            f"or log({repository!r}, <branch>)"
        )

    # ---- internals: commits and trees --------------------------------------------------------

    def _commit_file(self, repo_dir: Path, commit_id: str) -> Path:
        return repo_dir / "commits" / f"{commit_id}.json"

    def _write_commit(self, repo_dir: Path, record: _StoredCommit) -> str:
        data = record.canonical_bytes()
        commit_id = _sha256_hex(data)
        self._write_immutable(self._commit_file(repo_dir, commit_id), data)
        return commit_id

    def _read_commit_record(self, repository: str, commit_id: str) -> _StoredCommit:
        path = self._commit_file(self._repos / repository, commit_id)
        data = self._read_verified_bytes(path, commit_id)
        try:
            return _StoredCommit.from_json(json.loads(data))
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreCorruption(f"commit file {path} is not a valid commit: {exc}") from exc

    def _read_tree(self, repository: str, tree_id: str) -> _Tree:
        path = self._repos / repository / "trees" / f"{tree_id}.json"
        data = self._read_verified_bytes(path, tree_id)
        try:
            entries = json.loads(data)
            tree = {p: (e["hash"], int(e["size"])) for p, e in entries.items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreCorruption(f"tree file {path} is not a valid tree: {exc}") from exc
        if not all(is_content_hash(h) for h, _ in tree.values()):
            raise StoreCorruption(f"tree file {path} holds a malformed content hash")
        return tree

    @staticmethod
    def _read_verified_bytes(path: Path, expected_sha256: str) -> bytes:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise StoreCorruption(f"{path} is missing although a ref or commit names it") from None
        if _sha256_hex(data) != expected_sha256:
            raise StoreCorruption(f"{path} does not match its id: the file was modified or damaged")
        return data

    def _tree_of_commit(self, repository: str, commit_id: str) -> _Tree:
        return self._cached_tree(repository, self._cached_commit(repository, commit_id).tree)

    def _tree_at(self, repository: str, ref: str) -> _Tree:
        return self._tree_of_commit(repository, self.resolve_ref(repository, ref))

    def _first_parent_chain(self, repository: str, commit_id: str, limit: int | None) -> Iterator[Commit]:
        count = 0
        next_id: str | None = commit_id
        while next_id is not None and (limit is None or count < limit):
            try:
                record = self._cached_commit(repository, next_id)
            except OSError as exc:  # a generator: the public method's translation is over by now
                raise store_os_error(self.root, exc) from exc
            yield record.to_commit(next_id, repository)
            count += 1
            next_id = record.parents[0] if record.parents else None

    def _validate_changes(self, changes: Mapping[str, StagedObject | None]) -> dict[str, tuple[str, int] | None]:
        """Check paths and staged objects before taking the lock: path -> (hash, size) | None."""
        if not isinstance(changes, Mapping):
            raise ReproUserError(
                f"changes must be a mapping of path to StagedObject or None, got {type(changes).__name__}"
            )
        clean: dict[str, tuple[str, int] | None] = {}
        for path, staged in changes.items():
            validate_object_path(path)
            if staged is None:
                clean[path] = None
                continue
            if not isinstance(staged, StagedObject):
                raise ReproUserError(f"change for {path!r} must be a StagedObject (from stage_file) or None")
            clean[path] = (staged.content_hash, self._stored_size(path, staged))
        return clean

    def _stored_size(self, path: str, staged: StagedObject) -> int:
        try:
            size = self.object_path(staged.content_hash).stat().st_size
        except FileNotFoundError:
            raise ObjectNotFound(
                f"content {staged.content_hash} for {path!r} is not in the store at {self.root}; "
                "stage the file with stage_file() first"
            ) from None
        if size != staged.size:
            raise ReproUserError(
                f"staged object for {path!r} says {staged.size} bytes but the stored content "
                f"{staged.content_hash} has {size}; stage the file again with stage_file()"
            )
        return size

    def _apply_changes(
        self,
        repository: str,
        branch: str,
        tree: _Tree,
        changes: Mapping[str, tuple[str, int] | None],
    ) -> dict[str, tuple[str, int]]:
        new_tree = dict(tree)
        for path, entry in changes.items():
            if entry is not None:
                new_tree[path] = entry
            elif new_tree.pop(path, None) is None:
                raise ObjectNotFound(
                    f"cannot delete {path!r}: it does not exist on branch {branch!r} of repository {repository!r}"
                )
        return new_tree

    # ---- internals: files and objects --------------------------------------------------------

    def _new_tmp_path(self) -> Path:
        return self._tmp / f"{uuid.uuid4().hex}.tmp"

    def _write_atomic(self, final: Path, data: bytes) -> None:
        """Write ``final`` all at once: temp file, fsync, rename, fsync the directory."""
        tmp = self._new_tmp_path()
        try:
            _write_new_file_durably(tmp, data)
            os.replace(tmp, final)
        except BaseException:
            with suppress(FileNotFoundError):
                tmp.unlink()
            raise
        _fsync_dir(final.parent)

    def _write_immutable(self, final: Path, data: bytes) -> None:
        """Write a content-addressed file unless it already holds these bytes; one that was
        damaged is rewritten, never referenced again as it is."""
        with suppress(FileNotFoundError):
            if final.read_bytes() == data:
                return
        self._write_atomic(final, data)

    @staticmethod
    def _stat_source(source: Path) -> os.stat_result:
        """``lstat`` of a file to stage, which must be (or link to) a regular file."""
        try:
            link_stat = source.lstat()
            target_stat = source.stat()  # a dangling symlink is as missing as a missing file
        except FileNotFoundError:
            raise NotFoundError(f"cannot stage {source}: no such file") from None
        if not stat.S_ISREG(target_stat.st_mode):
            raise ReproUserError(f"cannot stage {source}: it is not a regular file")
        return link_stat

    def _can_take_by_rename(self, source_stat: os.stat_result) -> bool:
        # Only a plain file with no other name can become an object: through a symlink or a
        # second hard link someone could still change the stored content.
        return (
            stat.S_ISREG(source_stat.st_mode) and source_stat.st_nlink == 1 and source_stat.st_dev == self._tmp_device
        )

    def _take_file(self, source: Path) -> Path | None:
        """Rename ``source`` into ``tmp/``; ``None`` if it is on another mount after all."""
        tmp = self._new_tmp_path()
        try:
            os.rename(source, tmp)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                return None
            raise
        return tmp

    def _stage_taken_file(self, tmp: Path, source: Path) -> StagedObject:
        # The file was taken before hashing, so nobody can change it between hashing and placing.
        try:
            with open(tmp, "rb", buffering=0) as stream:
                content_hash, size = hash_stream(stream)
                os.fsync(stream.fileno())  # the object must be durable before a commit names it
            return self._place_object(tmp, content_hash, size)
        except BaseException:
            with suppress(OSError):  # give the file back (unless it was placed already)
                os.rename(tmp, source)
            raise

    def _stage_by_copy(self, source: Path) -> StagedObject:
        tmp = self._new_tmp_path()
        try:
            with open(tmp, "xb", buffering=0) as out:
                content_hash, size = copy_and_hash(source, out)
                os.fsync(out.fileno())
            return self._place_object(tmp, content_hash, size)
        except BaseException:
            with suppress(FileNotFoundError):
                tmp.unlink()
            raise

    def _place_object(self, tmp: Path, content_hash: str, size: int) -> StagedObject:
        """Move a hashed temp file to its content address.

        A file already there is replaced, never trusted: these bytes were just hashed, that one
        may have been damaged since. The rename repairs it and costs no extra read; identical
        content is still stored once.
        """
        final = self.object_path(content_hash)
        os.chmod(tmp, READ_ONLY)
        identity = os.stat(tmp)
        with self._lock.held(exclusive=False, timeout=self.lock_timeout):
            if not final.parent.is_dir():
                final.parent.mkdir(exist_ok=True)
                _fsync_dir(self._objects)
            created = self._install(tmp, final)
        _fsync_dir(final.parent)
        if created:
            self._unpublished.add(content_hash, (identity.st_dev, identity.st_ino))
        return StagedObject(content_hash, size)

    @staticmethod
    def _install(tmp: Path, final: Path) -> bool:
        """Put ``tmp`` at ``final``; True if no object was there (a hard link fails if one is, so
        of two writers placing the same new content exactly one is its creator)."""
        try:
            os.link(tmp, final)
        except FileExistsError:
            os.replace(tmp, final)
            return False
        except OSError:  # a file system without hard links
            created = not final.exists()
            os.replace(tmp, final)
            return created
        tmp.unlink()
        return True

    def _open_object_file(self, content_hash: str) -> BinaryIO:
        path = self.object_path(content_hash)
        try:
            return open(path, "rb", buffering=0)
        except FileNotFoundError:
            raise StoreCorruption(f"object file {path} for {content_hash} is missing from the store") from None

    def _copy_verified(self, info: ObjectInfo, target: Path, what: str) -> None:
        """Copy the object to ``target``, checking its hash in the same read."""
        source = self.object_path(info.content_hash)
        if not source.exists():
            raise StoreCorruption(f"{what}: object file {source} is missing from the store")
        with open(target, "xb", buffering=0) as out:
            actual, size = copy_and_hash(source, out)
        os.chmod(target, READ_ONLY)
        if actual != info.content_hash or size != info.size:
            raise StoreCorruption(
                f"{what}: object file {source} holds {actual} ({size} bytes), not the recorded "
                f"{info.content_hash} ({info.size} bytes); it was modified or damaged"
            )


__all__ = ["INITIAL_COMMIT_MESSAGE", "LocalStore", "validate_object_path"]
