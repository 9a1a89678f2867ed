"""Garbage is collected: what killed writers leave behind goes, and nothing anyone references does.

``collect_garbage`` (``airflow-repro gc``) removes unreferenced objects, temp files and orphan
commits and trees older than a grace period, safely while other processes commit; a commit that
fails removes what its own staging brought in.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import time
import uuid
from pathlib import Path

import pytest

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.core.ports import StagedObject
from airflow_repro.errors import RefNotFound, ReproUserError

REPO = "ml-data"


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "store")
    store.create_repository(REPO)
    return store


def put(store: LocalStore, data: bytes) -> StagedObject:
    source = store.root.parent / f"incoming-{uuid.uuid4().hex}"
    source.write_bytes(data)
    return store.stage_file(REPO, source, move=True)


def object_files(store: LocalStore) -> set[Path]:
    return {p for p in (store.root / "objects").rglob("*") if p.is_file()}


def stored_bytes(store: LocalStore) -> int:
    return sum(p.stat().st_size for p in object_files(store))


def everything(store: LocalStore) -> set[Path]:
    return {p for p in store.root.rglob("*") if p.is_file()}


def read_every_commit(store: LocalStore) -> int:
    """Read every object of every commit on every branch to its end (each read verifies)."""
    commits = 0
    for branch in store.list_branches(REPO):
        for commit in store.log(REPO, branch):
            commits += 1
            for info in store.list_objects(REPO, commit.id):
                with store.open_object(REPO, commit.id, info.path) as reader:
                    reader.read()
    return commits


# ---- what is garbage -----------------------------------------------------------------------------


def test_dry_run_reports_and_delete_removes_only_what_nothing_references(store):
    kept = store.commit(REPO, "main", {"kept.txt": put(store, b"kept")}, message="kept")
    put(store, b"staged, never committed")
    (store.root / "tmp" / "left-by-a-kill.tmp").write_bytes(b"half a file")
    before = everything(store)

    dry = store.collect_garbage(grace_s=0)
    assert (dry.deleted, dry.objects, dry.temp_entries) == (False, 1, 1)
    assert dry.object_bytes == len(b"staged, never committed") and dry.temp_bytes == len(b"half a file")
    assert everything(store) == before, "a dry run deletes nothing"

    done = store.collect_garbage(grace_s=0, delete=True)
    assert (done.deleted, done.objects, done.temp_entries, done.freed_bytes) == (True, 1, 1, dry.freed_bytes)
    assert stored_bytes(store) == done.referenced_bytes == len(b"kept")
    assert list((store.root / "tmp").iterdir()) == []
    assert store.resolve_ref(REPO, "main") == kept.id and read_every_commit(store) == 2


def test_the_grace_period_keeps_what_running_tasks_staged(store):
    staged = put(store, b"a running task's output")
    report = store.collect_garbage(grace_s=3600, delete=True)
    assert (report.objects, report.recent_unreferenced_objects) == (0, 1)
    store.commit(REPO, "main", {"out.bin": staged}, message="the task finishes after gc ran")
    assert read_every_commit(store) == 2


def test_an_old_file_taken_for_staging_is_not_mistaken_for_garbage(store, tmp_path):
    source = tmp_path / "written-long-ago.bin"
    source.write_bytes(b"output")
    long_ago = time.time() - 10 * 86400
    os.utime(source, (long_ago, long_ago))  # a task wrote it long before it finished
    staged = store.stage_file(REPO, source, move=True)
    assert store.collect_garbage(grace_s=3600, delete=True).objects == 0
    store.commit(REPO, "main", {"out.bin": staged}, message="m")


def test_gc_refuses_to_delete_anything_when_a_ref_is_damaged(store):
    put(store, b"garbage")
    (store.root / "repos" / REPO / "refs" / "branches" / "main").write_text("damaged\n")
    before = everything(store)
    with pytest.raises(Exception, match="stopped before deleting anything"):
        store.collect_garbage(grace_s=0, delete=True)
    assert everything(store) == before


@pytest.mark.parametrize("grace", ["-1s", "nan", "1e400", "soon", "1 week"])
def test_gc_refuses_a_grace_period_it_cannot_use(store, grace):
    from click.testing import CliRunner

    from airflow_repro.cli import main

    result = CliRunner().invoke(main, ["gc", "--home", str(store.root.parent), "--grace", grace])
    assert result.exit_code == 2 and "--grace" in result.output


# ---- a failed commit cleans up after itself ------------------------------------------------------


def test_a_failed_commit_removes_the_objects_its_staging_brought_in(store):
    existing = store.commit(REPO, "main", {"old.txt": put(store, b"old")}, message="m")
    new, old = put(store, b"new content"), put(store, b"old")
    with pytest.raises(RefNotFound):
        store.commit(REPO, "no-such-branch", {"new.txt": new, "old.txt": old}, message="fails")
    assert not store.object_path(new.content_hash).exists()
    assert store.object_path(old.content_hash).exists(), "referenced content stays"
    assert list((store.root / "tmp").iterdir()) == []
    assert store.resolve_ref(REPO, "main") == existing.id and read_every_commit(store) == 2


def test_a_failed_commit_keeps_what_another_writer_staged_or_committed_since(store):
    mine = put(store, b"shared content")
    other = LocalStore(store.root)
    theirs = other.stage_bytes(REPO, b"shared content")  # the same bytes, staged by someone else
    assert theirs == mine
    with pytest.raises(ReproUserError, match="metadata"):
        store.commit(REPO, "main", {"a": mine}, message="m", metadata={"x": 1})  # type: ignore[dict-item]
    assert other.commit(REPO, "main", {"a": theirs}, message="theirs").id
    assert read_every_commit(store) == 2

    lonely = put(store, b"committed by hand")
    other.commit(REPO, "main", {"b": StagedObject(lonely.content_hash, lonely.size)}, message="by hash")
    with pytest.raises(RefNotFound):
        store.commit(REPO, "nope", {"b": lonely}, message="fails")
    assert store.object_path(lonely.content_hash).exists(), "a commit references it now"


# ---- killed writers, and gc while others commit --------------------------------------------------


def _write_and_stage(store: LocalStore, root: str, name: str, size: int) -> StagedObject:
    source = Path(root).parent / f"{name}-{uuid.uuid4().hex}"
    source.write_bytes(os.urandom(size))
    return store.stage_file(REPO, source, move=True)


def _victim(root: str, branch: str, started) -> None:
    """Commits in a loop until the test kills it (SIGKILL: no cleanup of any kind)."""
    store = LocalStore(root, lock_timeout=120)
    started.set()
    for seq in range(10_000):
        staged = _write_and_stage(store, root, branch, random.randint(64 * 1024, 1024 * 1024))
        store.commit(REPO, branch, {f"{branch}/{seq}.bin": staged}, message=f"{branch} {seq}")


def _killed_while_staging(root: str) -> None:
    """Dies after the store took its output into tmp/, before the object is placed."""
    LocalStore._place_object = lambda *args: os.kill(os.getpid(), signal.SIGKILL)  # type: ignore[method-assign]
    _write_and_stage(LocalStore(root), root, "staging", 512 * 1024)


def _killed_between_stage_and_commit(root: str) -> None:
    store = LocalStore(root)
    _write_and_stage(store, root, "between", 256 * 1024)
    os.kill(os.getpid(), signal.SIGKILL)


def _killed_before_the_ref_moves(root: str) -> None:
    store = LocalStore(root)
    staged = _write_and_stage(store, root, "ref", 128 * 1024)
    LocalStore._set_ref = lambda *args: os.kill(os.getpid(), signal.SIGKILL)  # type: ignore[method-assign]
    store.commit(REPO, "main", {"never.bin": staged}, message="never published")


COMMITTERS, COMMITS_EACH = 3, 12


def _committer(root: str, worker: int, start) -> None:
    store = LocalStore(root, lock_timeout=120)
    start.wait(60)
    for seq in range(COMMITS_EACH):
        branch = "shared" if seq % 2 == 0 else f"own-{worker}"
        staged = _write_and_stage(store, root, f"w{worker}", random.randint(16 * 1024, 256 * 1024))
        store.commit(REPO, branch, {f"w{worker}/{seq}.bin": staged}, message=f"w{worker} {seq}")
        time.sleep(random.random() * 0.1)


def test_gc_after_killed_commits_returns_the_store_to_its_referenced_size_while_others_commit(store):
    from click.testing import CliRunner

    from airflow_repro.cli import main

    ctx = multiprocessing.get_context("spawn")
    root = str(store.root)
    for branch in ["shared", *(f"own-{w}" for w in range(COMMITTERS)), *(f"victim-{v}" for v in range(3))]:
        store.create_branch(REPO, branch, "main")
    for target in (_killed_while_staging, _killed_between_stage_and_commit, _killed_before_the_ref_moves):
        child = ctx.Process(target=target, args=(root,))
        child.start()
        child.join(60)
        assert child.exitcode == -signal.SIGKILL
    for victim in range(3):  # killed at a random point of their commit loop
        started = ctx.Event()
        child = ctx.Process(target=_victim, args=(root, f"victim-{victim}", started))
        child.start()
        assert started.wait(60)
        time.sleep(random.uniform(0.2, 0.8))
        child.kill()
        child.join(60)
    killed_at = time.time()

    grace = 3.0
    leftovers = store.collect_garbage(grace_s=0)
    assert leftovers.objects >= 2 and leftovers.temp_entries >= 1 and leftovers.metadata_files >= 2
    assert stored_bytes(store) > leftovers.referenced_bytes
    time.sleep(max(0.0, killed_at + grace + 0.5 - time.time()))  # the leftovers are older than the grace

    start = ctx.Event()
    committers = [ctx.Process(target=_committer, args=(root, w, start)) for w in range(COMMITTERS)]
    for process in committers:
        process.start()
    start.set()
    runs = []
    while any(p.is_alive() for p in committers) or not runs:
        result = CliRunner().invoke(
            main, ["gc", "--delete", "--grace", f"{grace}s", "--json", "--home", str(store.root.parent)]
        )
        assert result.exit_code == 0, result.output
        runs.append(json.loads(result.output))
        time.sleep(0.2)
    for process in committers:
        process.join(120)
    assert [p.exitcode for p in committers] == [0] * COMMITTERS, "no commit failed while gc ran"
    assert runs[0]["deleted"] and runs[0]["objects"] >= leftovers.objects and runs[0]["freed_bytes"] > 0

    final = store.collect_garbage(grace_s=0, delete=True)  # everyone is done: nothing may be pending
    assert (final.objects, final.temp_entries, final.metadata_files) == (0, 0, 0)
    assert stored_bytes(store) == final.referenced_bytes
    assert len(object_files(store)) == final.referenced_objects
    assert list((store.root / "tmp").iterdir()) == []
    shared = {c.message for c in store.log(REPO, "shared")}
    assert {f"w{w} {s}" for w in range(COMMITTERS) for s in range(0, COMMITS_EACH, 2)} <= shared
    assert read_every_commit(store) > COMMITTERS * COMMITS_EACH
