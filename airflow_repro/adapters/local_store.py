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
"""

from __future__ import annotations

import errno
import functools
import getpass
import hashlib
import io
import json
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Literal

import filelock

from airflow_repro.core.hashing import (
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
    ObjectInfo,
    Repository,
    StagedObject,
)
from airflow_repro.errors import (
    AlreadyExistsError,
    InvalidNameError,
    NotFoundError,
    ObjectGone,
    ObjectNotFound,
    RefNotFound,
    RepositoryNotFound,
    ReproUserError,
    StoreCorruption,
    StoreUnavailable,
)

INITIAL_COMMIT_MESSAGE = "Repository created"
DEFAULT_LOCK_TIMEOUT_S = 30.0
READ_ONLY = 0o444

_REPOSITORY_FILE = "repository.json"
_LOCK_FILE = ".lock"
_BRANCHES = "branches"
_TAGS = "tags"
RefKind = Literal["branches", "tags"]

_Tree = Mapping[str, tuple[str, int]]  # path -> (content hash, size)


# --------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------


def validate_object_path(path: str) -> str:
    """An object path is a relative POSIX path: ``data/train.csv``."""
    bad = (
        not isinstance(path, str)
        or not path
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(segment in ("", ".", "..") for segment in path.split("/"))
    )
    if bad:
        raise InvalidNameError(
            f"invalid object path {path!r}: use a relative POSIX path such as 'data/train.csv' "
            "(no leading '/', no '.', '..' or empty segments, no backslashes)"
        )
    return path


def _checked(validator: Callable[[str], str], name: str) -> str:
    """Run a naming validator, also refusing the final newline that a regex ``$`` lets through.

    A name ending in a newline would otherwise become a file name ending in one.
    """
    if isinstance(name, str) and name.endswith("\n"):
        raise InvalidNameError(f"invalid name {name!r}: names must not end with a newline")
    return validator(name)


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


def _validate_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ReproUserError(
            f"commit metadata must be a mapping of str to str, got {type(metadata).__name__}"
        )
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise ReproUserError(f"commit metadata keys must be non-empty strings, got {key!r}")
        if not isinstance(value, str):
            raise ReproUserError(
                f"commit metadata value for {key!r} must be a string (lakeFS stores strings only), "
                f"got {type(value).__name__} {value!r}; convert it, e.g. with str() or json.dumps()"
            )
    return dict(metadata)


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


@dataclass(frozen=True, slots=True)
class _CommitRecord:
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
    def from_json(cls, data: dict) -> _CommitRecord:
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

    def __init__(self, raw: BinaryIO, expected_hash: str, expected_size: int, what: str) -> None:
        super().__init__()
        self._raw = raw
        self._expected_hash = expected_hash
        self._expected_size = expected_size
        self._what = what
        self._hasher = new_hasher()
        self._size = 0
        self._verified = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._raw.readinto(buffer)
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
    ) -> None:
        self.root = Path(root).absolute()
        self.lock_timeout = lock_timeout
        self.committer = _default_committer() if committer is None else committer
        self._objects = self.root / "objects"
        self._tmp = self.root / "tmp"
        self._repos = self.root / "repos"
        for directory in (self._objects, self._tmp, self._repos):
            directory.mkdir(parents=True, exist_ok=True)
        self._tmp_device = self._tmp.stat().st_dev
        # Commits and trees are immutable and named by their hash, so caching them is always safe.
        self._cached_commit = functools.lru_cache(maxsize=4096)(self._read_commit_record)
        self._cached_tree = functools.lru_cache(maxsize=64)(self._read_tree)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    # ---- repositories ------------------------------------------------------------------------

    def create_repository(
        self, name: str, *, default_branch: str = "main", exist_ok: bool = False
    ) -> Repository:
        """Create a repository; its default branch starts at one empty "Repository created" commit.

        The whole repository is built in ``tmp/`` and published by one directory rename.
        """
        _checked(validate_repository_name, name)
        _checked(validate_branch_name, default_branch)
        final = self._repos / name
        if not (final / _REPOSITORY_FILE).is_file():
            staging = self._build_repository(name, default_branch)
            try:
                # One rename publishes the whole repository; it fails if another process won.
                os.rename(staging, final)
            except OSError as exc:
                shutil.rmtree(staging, ignore_errors=True)
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
            else:
                _fsync_dir(self._repos)
                return self.get_repository(name)
        if not exist_ok:
            raise AlreadyExistsError(f"repository {name!r} already exists in {self.root}")
        return self.get_repository(name)

    def get_repository(self, name: str) -> Repository:
        repo_dir = self._repo_dir(name)
        data = self._read_json(repo_dir / _REPOSITORY_FILE)
        return Repository(
            name=data["name"], default_branch=data["default_branch"], created_at=data["created_at"]
        )

    def list_repositories(self) -> list[Repository]:
        names = sorted(p.name for p in self._repos.iterdir() if (p / _REPOSITORY_FILE).is_file())
        return [self.get_repository(name) for name in names]

    # ---- refs --------------------------------------------------------------------------------

    def create_branch(
        self, repository: str, name: str, source_ref: str, *, exist_ok: bool = False
    ) -> str:
        """Create ``name`` at ``source_ref``; ``exist_ok`` returns an existing branch's head."""
        repo_dir = self._repo_dir(repository)
        _checked(validate_branch_name, name)
        _checked(validate_ref, source_ref)
        with self._repository_lock(repository, repo_dir):
            head = self._read_ref(repo_dir, _BRANCHES, name)
            if head is not None:
                if exist_ok:
                    return head
                raise AlreadyExistsError(
                    f"branch {name!r} already exists in repository {repository!r} (at {head})"
                )
            commit_id = self._resolve(repository, repo_dir, source_ref)
            self._set_ref(repo_dir, _BRANCHES, name, commit_id)
            return commit_id

    def list_branches(self, repository: str) -> dict[str, str]:
        return self._list_refs(self._repo_dir(repository), _BRANCHES)

    def create_tag(self, repository: str, tag: str, ref: str, *, exist_ok: bool = False) -> str:
        """Create an immutable tag; ``exist_ok`` accepts an existing tag on the same commit."""
        repo_dir = self._repo_dir(repository)
        _checked(validate_tag_name, tag)
        _checked(validate_ref, ref)
        with self._repository_lock(repository, repo_dir):
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

    def list_tags(self, repository: str) -> dict[str, str]:
        return self._list_refs(self._repo_dir(repository), _TAGS)

    def resolve_ref(self, repository: str, ref: str) -> str:
        """A full commit id (that exists), else a branch, else a tag -> the full commit id."""
        repo_dir = self._repo_dir(repository)
        _checked(validate_ref, ref)
        return self._resolve(repository, repo_dir, ref)

    # ---- staging and committing --------------------------------------------------------------

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

    def stage_bytes(self, repository: str, data: bytes) -> StagedObject:
        """Store in-memory content (a manifest, say) as an object, like ``stage_file``."""
        self._repo_dir(repository)
        content_hash = hash_bytes(data)
        if self._holds_object(self.object_path(content_hash), len(data)):
            return StagedObject(content_hash, len(data))
        tmp = self._new_tmp_path()
        try:
            _write_new_file_durably(tmp, data)
        except BaseException:
            with suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return self._place_object(tmp, content_hash, len(data))

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
        repo_dir = self._repo_dir(repository)
        _checked(validate_branch_name, branch)
        if not isinstance(message, str):
            raise ReproUserError(f"commit message must be a string, got {type(message).__name__}")
        clean_metadata = _validate_metadata(metadata)
        clean_changes = self._validate_changes(changes)
        with self._repository_lock(repository, repo_dir):
            # The parent is the head read under the lock: this keeps concurrent commits safe.
            parent_id = self._read_ref(repo_dir, _BRANCHES, branch)
            if parent_id is None:
                raise RefNotFound(self._missing_ref_message(repository, branch, kind="branch"))
            parent = self._cached_commit(repository, parent_id)
            tree = self._apply_changes(
                repository, branch, self._cached_tree(repository, parent.tree), clean_changes
            )
            tree_bytes = _canonical_json(
                {path: {"hash": h, "size": s} for path, (h, s) in tree.items()}
            )
            tree_id = _sha256_hex(tree_bytes)
            if tree_id == parent.tree and not allow_empty:
                raise ReproUserError(
                    f"no changes to commit on branch {branch!r} of repository {repository!r}: "
                    "the changes leave every path as it is (pass allow_empty=True to commit anyway)"
                )
            self._write_immutable(repo_dir / "trees" / f"{tree_id}.json", tree_bytes)
            record = _CommitRecord(
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

    def get_commit(self, repository: str, ref: str) -> Commit:
        commit_id = self.resolve_ref(repository, ref)
        return self._cached_commit(repository, commit_id).to_commit(commit_id, repository)

    def log(self, repository: str, ref: str, *, limit: int | None = None) -> Iterator[Commit]:
        """Commits reachable from ``ref`` by first parents, newest first."""
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ReproUserError(f"log limit must be a non-negative integer or None, got {limit!r}")
        # Resolve now, so an unknown ref fails at the call and not at the first next().
        commit_id = self.resolve_ref(repository, ref)
        return self._first_parent_chain(repository, commit_id, limit)

    # ---- reading data ------------------------------------------------------------------------

    def list_objects(self, repository: str, ref: str, prefix: str = "") -> list[ObjectInfo]:
        tree = self._tree_at(repository, ref)
        return [
            ObjectInfo(path, h, s)
            for path, (h, s) in sorted(tree.items())
            if path.startswith(prefix)
        ]

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

    def open_object(self, repository: str, ref: str, path: str) -> BinaryIO:
        """A binary reader of ``path`` at ``ref``; ``StoreCorruption`` at EOF on a mismatch."""
        info = self.stat_object(repository, ref, path)
        raw = self._open_object_file(info.content_hash)
        what = f"object {path!r} of repository {repository!r} at ref {ref!r}"
        reader = _VerifyingReader(raw, info.content_hash, info.size, what)
        return io.BufferedReader(reader, buffer_size=1024 * 1024)

    def materialize(
        self, repository: str, ref: str, path: str, destination: Path, *, link: bool = False
    ) -> ObjectInfo:
        """Place the verified content of ``path`` at ``destination``, read-only.

        A copy by default: task code (root ignores read-only bits) can then never alter what was
        recorded. ``link=True`` hard-links the object instead (no copy) where the filesystem
        allows; the linked file shares the object's inode and must not be edited.
        """
        info = self.stat_object(repository, ref, path)
        destination = Path(destination).absolute()
        destination.parent.mkdir(parents=True, exist_ok=True)
        what = f"object {path!r} of repository {repository!r} at ref {ref!r}"
        # Build the result next to the destination, then rename: never a half-written destination.
        staging = destination.parent / f".{destination.name}.{uuid.uuid4().hex}.repro-tmp"
        try:
            self._link_or_copy_verified(info, staging, what, link=link)
            os.replace(staging, destination)
        finally:
            # Also covers rename(2)'s no-op when both names already link the same inode.
            with suppress(FileNotFoundError):
                os.unlink(staging)
        return info

    def diff(
        self, repository: str, left_ref: str, right_ref: str, prefix: str = ""
    ) -> list[DiffEntry]:
        """Two-dot diff: the paths whose content differs between the two trees, sorted."""
        return _diff_trees(
            self._tree_at(repository, left_ref), self._tree_at(repository, right_ref), prefix
        )

    # ---- objects -----------------------------------------------------------------------------

    def object_path(self, content_hash: str) -> Path:
        """Where the content with this hash is (or would be) stored."""
        digest = parse_content_hash(content_hash)
        return self._objects / digest[:2] / digest[2:]

    def verify_object(self, content_hash: str) -> int:
        """Re-hash a stored object: its size, or ``StoreCorruption`` / ``ObjectNotFound``."""
        path = self.object_path(content_hash)
        try:
            with open(path, "rb", buffering=0) as stream:
                actual, size = hash_stream(stream)
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {content_hash} in the store at {self.root}") from None
        if actual != content_hash:
            raise StoreCorruption(
                f"object file {path} holds {actual}, not {content_hash}: it was modified or damaged"
            )
        return size

    # ---- internals: repositories, locks, refs ------------------------------------------------

    def _repo_dir(self, name: str) -> Path:
        """The directory of an existing repository."""
        _checked(validate_repository_name, name)
        repo_dir = self._repos / name
        if not (repo_dir / _REPOSITORY_FILE).is_file():
            existing = ", ".join(r.name for r in self.list_repositories()) or "none"
            raise RepositoryNotFound(
                f"repository {name!r} does not exist in the store at {self.root} "
                f"(existing: {existing}); create it with create_repository({name!r})"
            )
        return repo_dir

    def _build_repository(self, name: str, default_branch: str) -> Path:
        """Write a complete repository in ``tmp/``, ready to be renamed into ``repos/``."""
        staging = self._tmp / f"repo-{uuid.uuid4().hex}"
        for sub in ("trees", "commits", f"refs/{_BRANCHES}", f"refs/{_TAGS}"):
            (staging / sub).mkdir(parents=True)
        created_at = _utc_now()
        info = {"name": name, "default_branch": default_branch, "created_at": created_at}
        empty_tree = _canonical_json({})
        empty_tree_id = _sha256_hex(empty_tree)
        record = _CommitRecord(
            empty_tree_id, (), INITIAL_COMMIT_MESSAGE, {}, created_at, self.committer
        )
        commit_bytes = record.canonical_bytes()
        commit_id = _sha256_hex(commit_bytes)
        _write_new_file_durably(staging / _REPOSITORY_FILE, _canonical_json(info))
        _write_new_file_durably(staging / "trees" / f"{empty_tree_id}.json", empty_tree)
        _write_new_file_durably(staging / "commits" / f"{commit_id}.json", commit_bytes)
        _write_new_file_durably(
            staging / "refs" / _BRANCHES / default_branch, f"{commit_id}\n".encode()
        )
        for directory in ("trees", "commits", f"refs/{_BRANCHES}", f"refs/{_TAGS}", "refs", "."):
            _fsync_dir(staging / directory)
        return staging

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
        if not is_commit_id(commit_id):
            raise StoreCorruption(
                f"ref file {self._ref_file(repo_dir, kind, name)} does not hold a commit id"
            )
        return commit_id

    def _set_ref(self, repo_dir: Path, kind: RefKind, name: str, commit_id: str) -> None:
        """Point a ref at a commit: the single step that publishes a commit. Call under the lock."""
        self._write_atomic(self._ref_file(repo_dir, kind, name), f"{commit_id}\n".encode())

    def _list_refs(self, repo_dir: Path, kind: RefKind) -> dict[str, str]:
        refs = {}
        for ref_file in sorted((repo_dir / "refs" / kind).iterdir()):
            commit_id = self._read_ref(repo_dir, kind, ref_file.name)
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

    def _write_commit(self, repo_dir: Path, record: _CommitRecord) -> str:
        data = record.canonical_bytes()
        commit_id = _sha256_hex(data)
        self._write_immutable(self._commit_file(repo_dir, commit_id), data)
        return commit_id

    def _read_commit_record(self, repository: str, commit_id: str) -> _CommitRecord:
        path = self._commit_file(self._repos / repository, commit_id)
        data = self._read_verified_bytes(path, commit_id)
        try:
            return _CommitRecord.from_json(json.loads(data))
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
    def _read_json(path: Path) -> dict:
        try:
            return json.loads(path.read_bytes())
        except ValueError as exc:
            raise StoreCorruption(f"{path} is not valid JSON: {exc}") from exc

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

    def _first_parent_chain(
        self, repository: str, commit_id: str, limit: int | None
    ) -> Iterator[Commit]:
        count = 0
        next_id: str | None = commit_id
        while next_id is not None and (limit is None or count < limit):
            record = self._cached_commit(repository, next_id)
            yield record.to_commit(next_id, repository)
            count += 1
            next_id = record.parents[0] if record.parents else None

    def _validate_changes(
        self, changes: Mapping[str, StagedObject | None]
    ) -> dict[str, tuple[str, int] | None]:
        """Check paths and staged objects before taking the lock: path -> (hash, size) | None."""
        if not isinstance(changes, Mapping):
            raise ReproUserError(
                "changes must be a mapping of path to StagedObject or None, "
                f"got {type(changes).__name__}"
            )
        clean: dict[str, tuple[str, int] | None] = {}
        for path, staged in changes.items():
            validate_object_path(path)
            if staged is None:
                clean[path] = None
                continue
            if not isinstance(staged, StagedObject):
                raise ReproUserError(
                    f"change for {path!r} must be a StagedObject (from stage_file) or None"
                )
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
                    f"cannot delete {path!r}: it does not exist on branch {branch!r} "
                    f"of repository {repository!r}"
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
        """Write a content-addressed file unless it is already there (same name, same bytes)."""
        if not final.exists():
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
            stat.S_ISREG(source_stat.st_mode)
            and source_stat.st_nlink == 1
            and source_stat.st_dev == self._tmp_device
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
        except BaseException:
            os.rename(tmp, source)  # give the file back untouched
            raise
        return self._place_object(tmp, content_hash, size)

    def _stage_by_copy(self, source: Path) -> StagedObject:
        tmp = self._new_tmp_path()
        try:
            with open(tmp, "xb", buffering=0) as out:
                content_hash, size = copy_and_hash(source, out)
                os.fsync(out.fileno())
        except BaseException:
            with suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return self._place_object(tmp, content_hash, size)

    def _place_object(self, tmp: Path, content_hash: str, size: int) -> StagedObject:
        """Move a hashed temp file to its content address, unless that content is already stored."""
        final = self.object_path(content_hash)
        if self._holds_object(final, size):
            tmp.unlink()  # deduplicated: identical content is stored once
            return StagedObject(content_hash, size)
        os.chmod(tmp, READ_ONLY)
        if not final.parent.is_dir():
            final.parent.mkdir(exist_ok=True)
            _fsync_dir(self._objects)
        # Two processes staging the same content race harmlessly: both files hold the same bytes.
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        return StagedObject(content_hash, size)

    @staticmethod
    def _holds_object(final: Path, size: int) -> bool:
        # A size mismatch means a damaged object file: overwrite it with the good content.
        try:
            return final.stat().st_size == size
        except FileNotFoundError:
            return False

    def _open_object_file(self, content_hash: str) -> BinaryIO:
        path = self.object_path(content_hash)
        try:
            return open(path, "rb", buffering=0)
        except FileNotFoundError:
            raise StoreCorruption(
                f"object file {path} for {content_hash} is missing from the store"
            ) from None

    def _link_or_copy_verified(self, info: ObjectInfo, target: Path, what: str, *, link: bool) -> None:
        """Copy (or hard-link) the object to ``target``, checking its hash in one read."""
        source = self.object_path(info.content_hash)
        if not source.exists():
            raise StoreCorruption(f"{what}: object file {source} is missing from the store")
        linked = False
        if link:
            try:
                os.link(source, target)
                linked = True
            except OSError:  # another filesystem, or links not supported: copy instead
                linked = False
        if linked:
            with open(target, "rb", buffering=0) as stream:
                actual, size = hash_stream(stream)
        else:
            with open(target, "xb", buffering=0) as out:
                actual, size = copy_and_hash(source, out)
            os.chmod(target, READ_ONLY)
        if actual != info.content_hash or size != info.size:
            raise StoreCorruption(
                f"{what}: object file {source} holds {actual} ({size} bytes), not the recorded "
                f"{info.content_hash} ({info.size} bytes); it was modified or damaged"
            )


__all__ = ["INITIAL_COMMIT_MESSAGE", "LocalStore", "validate_object_path"]
