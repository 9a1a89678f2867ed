"""The embedded store beyond the port contract (tests/contract/ runs that on both stores): verified
reads, content addressing, several processes committing at once, crashes mid-commit."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import stat
import uuid
from pathlib import Path

import filelock
import pytest

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.core.ports import StagedObject, VersionedDataStore
from airflow_repro.errors import (
    NotFoundError,
    ReproUserError,
    StoreCorruption,
    StoreUnavailable,
)

REPO = "ml-data"


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def repo(store: LocalStore) -> str:
    store.create_repository(REPO)
    return REPO


def put(store: LocalStore, data: bytes, *, move: bool = True) -> StagedObject:
    """Write ``data`` to a fresh file next to the store and stage it."""
    incoming = store.root.parent / "incoming"
    incoming.mkdir(exist_ok=True)
    source = incoming / uuid.uuid4().hex
    source.write_bytes(data)
    return store.stage_file(REPO, source, move=move)


def commit_files(store: LocalStore, branch: str, files: dict[str, bytes | None], message: str = "c"):
    changes = {path: None if data is None else put(store, data) for path, data in files.items()}
    return store.commit(REPO, branch, changes, message=message)


def read(store: LocalStore, ref: str, path: str) -> bytes:
    with store.open_object(REPO, ref, path) as reader:
        return reader.read()


def object_files(store: LocalStore) -> list[Path]:
    return sorted(p for p in (store.root / "objects").rglob("*") if p.is_file())


# ---- repositories ----------------------------------------------------------------------------


def test_local_store_implements_the_port(store):
    assert isinstance(store, VersionedDataStore)


def test_a_second_store_object_on_the_same_root_sees_everything(store, repo):
    commit = commit_files(store, "main", {"a.txt": b"a"})
    reopened = LocalStore(store.root)
    assert reopened.resolve_ref(repo, "main") == commit.id
    assert read(reopened, "main", "a.txt") == b"a"


# ---- staging and dedup -----------------------------------------------------------------------


def test_identical_content_is_stored_once(store, repo):
    first = put(store, b"same bytes", move=True)
    second = put(store, b"same bytes", move=False)
    third = put(store, b"other bytes")
    assert first == second != third
    assert len(object_files(store)) == 2
    store.commit(repo, "main", {"a": first, "b": second}, message="m")
    other = store.create_repository("other-repo")
    assert other.name == "other-repo"
    assert put(store, b"same bytes") == first  # the object area is shared store-wide
    assert len(object_files(store)) == 2


def test_stage_bytes_stores_in_memory_content(store, repo):
    staged = store.stage_bytes(repo, b'{"manifest": 1}')
    assert staged == put(store, b'{"manifest": 1}')  # the same object as staging a file
    assert len(object_files(store)) == 1
    store.commit(repo, "main", {"_repro/manifest.json": staged}, message="m")
    assert read(store, "main", "_repro/manifest.json") == b'{"manifest": 1}'


def test_stage_file_move_of_a_hard_linked_file_copies_it(store, repo, tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(b"linked")
    other_name = tmp_path / "other-name.bin"
    os.link(source, other_name)
    staged = store.stage_file(repo, source, move=True)
    assert not source.exists()
    # The object must not share an inode that can still be written through another name.
    assert store.object_path(staged.content_hash).stat().st_ino != other_name.stat().st_ino


def test_staging_something_that_is_not_a_file(store, repo, tmp_path):
    with pytest.raises(NotFoundError, match="no such file"):
        store.stage_file(repo, tmp_path / "missing.bin")
    with pytest.raises(ReproUserError, match="not a regular file"):
        store.stage_file(repo, tmp_path)


# ---- verified reads ----------------------------------------------------------------------------


def tamper(store: LocalStore, content_hash: str, data: bytes) -> None:
    path = store.object_path(content_hash)
    path.chmod(0o644)
    path.write_bytes(data)


def test_materialize_places_verified_read_only_content(store, repo, tmp_path):
    commit_files(store, "main", {"data/x.csv": b"1,2,3\n"})
    destination = tmp_path / "work" / "deep" / "x.csv"
    info = store.materialize(repo, "main", "data/x.csv", destination)
    assert destination.read_bytes() == b"1,2,3\n"
    assert info.size == 6
    assert stat.S_IMODE(destination.stat().st_mode) == 0o444
    store.materialize(repo, "main", "data/x.csv", destination)  # again, onto itself
    assert destination.read_bytes() == b"1,2,3\n"
    assert [p.name for p in destination.parent.iterdir()] == ["x.csv"]  # no temp files left


def test_materialized_inputs_are_copies_a_task_cannot_use_to_alter_the_store(store, repo, tmp_path):
    commit_files(store, "main", {"a": b"payload"})
    destination = tmp_path / "work" / "a"
    store.materialize(repo, "main", "a", destination)
    destination.chmod(0o644)  # a task running as root could write anyway
    destination.write_bytes(b"overwritten by a task")
    with store.open_object(repo, "main", "a") as reader:
        assert reader.read() == b"payload"


@pytest.mark.parametrize("bad_content", [b"PAYLOAD", b"payload plus more", b""])
def test_a_tampered_object_is_detected_on_every_read(store, repo, tmp_path, monkeypatch, bad_content):
    commit_files(store, "main", {"a": b"payload"})
    info = store.stat_object(repo, "main", "a")
    tamper(store, info.content_hash, bad_content)

    with (
        store.open_object(repo, "main", "a") as reader,
        pytest.raises(StoreCorruption, match="'a'"),
    ):
        reader.read()

    destination = tmp_path / "out" / "a"
    with pytest.raises(StoreCorruption):
        store.materialize(repo, "main", "a", destination)
    assert not destination.exists()
    assert list(destination.parent.iterdir()) == []


def test_open_object_reads_in_pieces_and_verifies_at_eof(store, repo):
    data = os.urandom(3 * 1024 * 1024 + 5)
    commit_files(store, "main", {"big": data})
    with store.open_object(repo, "main", "big") as reader:
        pieces = []
        while piece := reader.read(100_000):
            pieces.append(piece)
    assert b"".join(pieces) == data


def test_a_tampered_commit_file_is_detected(store, repo):
    commit = commit_files(store, "main", {"a": b"1"})
    commit_file = store.root / "repos" / repo / "commits" / f"{commit.id}.json"
    commit_file.write_bytes(commit_file.read_bytes().replace(b'"c"', b'"C"'))
    with pytest.raises(StoreCorruption):
        LocalStore(store.root).get_commit(repo, "main")  # a fresh store: nothing cached


# ---- locking, concurrency, crashes -------------------------------------------------------------


def test_a_held_lock_times_out_as_store_unavailable(store, repo):
    head = store.resolve_ref(repo, "main")
    impatient = LocalStore(store.root, lock_timeout=0.2)
    staged = put(store, b"1")
    lock = filelock.FileLock(store.root / "repos" / repo / ".lock")
    with lock, pytest.raises(StoreUnavailable, match="locked"):
        impatient.commit(repo, "main", {"a": staged}, message="m")
    assert store.resolve_ref(repo, "main") == head
    assert impatient.commit(repo, "main", {"a": staged}, message="m").parents == (head,)


SHARED_BRANCH = "shared"
WORKERS = 4
COMMITS_PER_WORKER = 15


def _commit_worker(root: str, worker: int, start) -> None:
    """Child process: alternate commits between the shared branch and this worker's own branch."""
    store = LocalStore(root, lock_timeout=120)
    start.wait(60)
    for seq in range(COMMITS_PER_WORKER):
        branch = SHARED_BRANCH if seq % 2 == 0 else f"own-{worker}"
        source = Path(root).parent / f"w{worker}-{seq}.txt"
        source.write_text(f"worker {worker} commit {seq}")
        staged = store.stage_file(REPO, source, move=True)
        store.commit(
            REPO,
            branch,
            {f"w{worker}/c{seq}.txt": staged},
            message=f"w{worker} c{seq}",
            metadata={"worker": str(worker), "seq": str(seq)},
        )


def test_concurrent_processes_never_lose_a_commit(store, repo):
    base = store.resolve_ref(repo, "main")
    store.create_branch(repo, SHARED_BRANCH, "main")
    for worker in range(WORKERS):
        store.create_branch(repo, f"own-{worker}", "main")
    context = multiprocessing.get_context("spawn")  # fresh interpreters: nothing shared but disk
    start = context.Event()
    processes = [context.Process(target=_commit_worker, args=(str(store.root), w, start)) for w in range(WORKERS)]
    for process in processes:
        process.start()
    start.set()
    for process in processes:
        process.join(120)
    assert [p.exitcode for p in processes] == [0] * WORKERS

    shared_log = list(store.log(repo, SHARED_BRANCH))
    shared_expected = {f"w{w} c{s}" for w in range(WORKERS) for s in range(0, COMMITS_PER_WORKER, 2)}
    assert shared_log[-1].id == base
    assert len(shared_log) - 1 == len(shared_expected) == 32
    assert {c.message for c in shared_log[:-1]} == shared_expected
    for newer, older in itertools.pairwise(shared_log):
        assert newer.parents == (older.id,)
    shared_paths = {o.path for o in store.list_objects(repo, SHARED_BRANCH)}
    assert shared_paths == {f"{m.split()[0]}/{m.split()[1]}.txt" for m in shared_expected}

    for worker in range(WORKERS):
        own_log = list(store.log(repo, f"own-{worker}"))
        own_seqs = list(range(COMMITS_PER_WORKER - 2, 0, -2))  # odd seqs, newest first
        assert [c.metadata["seq"] for c in own_log[:-1]] == [str(s) for s in own_seqs]
        assert {c.metadata["worker"] for c in own_log[:-1]} == {str(worker)}
        assert own_log[-1].id == base


def _create_repository_worker(root: str) -> str:
    store = LocalStore(root)
    store.create_repository(REPO, exist_ok=True)
    return store.resolve_ref(REPO, "main")


def test_concurrent_create_repository_makes_exactly_one(store):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        heads = pool.map(_create_repository_worker, [str(store.root)] * 8)
    assert len(set(heads)) == 1  # every process sees the same repository
    assert [c.id for c in store.log(REPO, "main")] == heads[:1]
    assert list((store.root / "tmp").iterdir()) == []  # losers cleaned up their drafts


CRASH_EXIT_CODE = 17


def _crash_before_moving_the_ref(root: str, source: str) -> None:
    """Child process: write objects, tree and commit, then die where the ref would move."""
    store = LocalStore(root)
    staged = store.stage_file(REPO, Path(source), move=True)
    LocalStore._set_ref = lambda *args, **kwargs: os._exit(CRASH_EXIT_CODE)
    store.commit(REPO, "main", {"new.txt": staged, "keep.txt": None}, message="never published")
    os._exit(0)  # not reached when the crash happens where it should


def test_a_crash_before_the_ref_moves_leaves_the_store_consistent(store, repo, tmp_path):
    before = commit_files(store, "main", {"keep.txt": b"kept"}, "before")
    objects_before = store.list_objects(repo, "main")
    source = tmp_path / "new.txt"
    source.write_bytes(b"new content")

    child = multiprocessing.get_context("spawn").Process(
        target=_crash_before_moving_the_ref, args=(str(store.root), str(source))
    )
    child.start()
    child.join(60)
    assert child.exitcode == CRASH_EXIT_CODE

    # The child got as far as writing its commit file ...
    commit_files_on_disk = list((store.root / "repos" / repo / "commits").glob("*.json"))
    orphans = [p for p in commit_files_on_disk if b"never published" in p.read_bytes()]
    assert len(orphans) == 1
    # ... but nothing of it is visible: the branch, its log and its content are as before.
    assert store.resolve_ref(repo, "main") == before.id
    assert [c.id for c in store.log(repo, "main")] == [before.id, before.parents[0]]
    assert store.list_objects(repo, "main") == objects_before
    assert read(store, "main", "keep.txt") == b"kept"
    # Every file under its final name is complete and verifies against its id.
    for path in commit_files_on_disk:
        assert store.get_commit(repo, path.stem).id == path.stem
    # The lock died with the child: committing works at once and builds on the old head.
    after = LocalStore(store.root, lock_timeout=5).commit(
        repo, "main", {"other.txt": put(store, b"other")}, message="after"
    )
    assert after.parents == (before.id,)
    assert [o.path for o in store.list_objects(repo, "main")] == ["keep.txt", "other.txt"]
