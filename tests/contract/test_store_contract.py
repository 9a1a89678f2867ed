"""One contract for the versioned-data-store port, run on the embedded store and on lakeFS.

Whatever a pipeline relies on (branches, commits with metadata, tags, reads at any ref, two-dot
diffs, errors, retries, concurrent commits) must behave the same on both, so a DAG that works on a
laptop works against lakeFS in production.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import blake3
import pytest

from airflow_repro.core.ports import Commit, StagedObject, VersionedDataStore
from airflow_repro.errors import (
    AlreadyExistsError,
    InvalidNameError,
    ObjectGone,
    ObjectNotFound,
    RefNotFound,
    RepositoryNotFound,
    ReproUserError,
)
from tests.support.stores import Backend


@pytest.fixture
def repo(backend: Backend) -> str:
    backend.store.create_repository(backend.repo)
    return backend.repo


def put(store: VersionedDataStore, repo: str, data: bytes, tmp_path: Path) -> StagedObject:
    source = tmp_path / f"incoming-{uuid.uuid4().hex}"
    source.write_bytes(data)
    return store.stage_file(repo, source, move=True)


def commit_files(
    store: VersionedDataStore,
    repo: str,
    branch: str,
    files: dict[str, bytes | None],
    tmp_path: Path,
    message: str = "c",
    **kwargs: object,
) -> Commit:
    changes = {path: None if data is None else put(store, repo, data, tmp_path) for path, data in files.items()}
    return store.commit(repo, branch, changes, message=message, **kwargs)  # type: ignore[arg-type]


def read(store: VersionedDataStore, repo: str, ref: str, path: str) -> bytes:
    with store.open_object(repo, ref, path) as reader:
        return reader.read()


def blake(data: bytes) -> str:
    return "blake3:" + blake3.blake3(data).hexdigest()


# ---- repositories ----------------------------------------------------------------------------


def test_implements_the_port(store):
    assert isinstance(store, VersionedDataStore)


def test_new_repository_has_one_empty_commit_on_its_default_branch(store, backend):
    created = store.create_repository(backend.repo, default_branch="trunk")
    assert (created.name, created.default_branch) == (backend.repo, "trunk")
    assert created.created_at
    assert store.get_repository(backend.repo) == created
    assert backend.repo in [r.name for r in store.list_repositories()]
    [initial] = store.log(backend.repo, "trunk")
    assert initial.message == "Repository created"
    assert initial.parents == ()
    assert len(initial.id) == 64
    assert store.list_branches(backend.repo) == {"trunk": initial.id}
    assert store.list_objects(backend.repo, "trunk") == []


def test_creating_an_existing_repository(store, repo):
    head = store.resolve_ref(repo, "main")
    with pytest.raises(AlreadyExistsError, match=repo):
        store.create_repository(repo)
    assert store.create_repository(repo, exist_ok=True) == store.get_repository(repo)
    assert store.resolve_ref(repo, "main") == head


@pytest.mark.parametrize("name", ["ML", "ab", "-abc", "a_b_c", "a/bc", "a" * 64, "abc\n"])
def test_repository_names_follow_lakefs_rules(store, name):
    with pytest.raises(InvalidNameError):
        store.create_repository(name)


def test_unknown_repository(store, repo):
    with pytest.raises(RepositoryNotFound, match="no-such-repo"):
        store.resolve_ref("no-such-repo", "main")
    with pytest.raises(RepositoryNotFound):
        store.get_repository("no-such-repo")
    with pytest.raises(RepositoryNotFound):
        store.list_branches("no-such-repo")
    with pytest.raises(RepositoryNotFound):
        store.commit("no-such-repo", "main", {}, message="x", allow_empty=True)


# ---- commits ---------------------------------------------------------------------------------


def test_commit_records_files_message_and_metadata(store, repo, tmp_path):
    base = store.resolve_ref(repo, "main")
    a, b = put(store, repo, b"alpha", tmp_path), put(store, repo, b"beta!", tmp_path)
    commit = store.commit(
        repo,
        "main",
        {"data/b.txt": b, "data/a.txt": a, "readme": a},
        message="add data",
        metadata={"run_id": "r1", "score": "0.9"},
    )
    assert commit.parents == (base,)  # one parent: the branch's previous head
    assert len(commit.id) == 64 and commit.id != base
    assert (commit.message, dict(commit.metadata)) == ("add data", {"run_id": "r1", "score": "0.9"})
    assert store.resolve_ref(repo, "main") == commit.id
    assert store.get_commit(repo, "main") == commit
    assert [o.path for o in store.list_objects(repo, "main")] == ["data/a.txt", "data/b.txt", "readme"]
    assert [o.path for o in store.list_objects(repo, "main", prefix="data/")] == ["data/a.txt", "data/b.txt"]
    info = store.stat_object(repo, commit.id, "data/a.txt")
    assert (info.content_hash, info.size) == (blake(b"alpha"), 5)
    assert store.list_objects(repo, commit.id)[0] == info
    assert read(store, repo, "main", "data/b.txt") == b"beta!"


def test_stage_bytes_and_stage_file_name_the_same_content(store, repo, tmp_path):
    staged = store.stage_bytes(repo, b'{"manifest": 1}')
    assert staged == put(store, repo, b'{"manifest": 1}', tmp_path) == StagedObject(blake(b'{"manifest": 1}'), 15)
    store.commit(repo, "main", {"_repro/manifest.json": staged}, message="m")
    assert read(store, repo, "main", "_repro/manifest.json") == b'{"manifest": 1}'


def test_stage_file_move_takes_the_file_and_copy_leaves_it(store, repo, tmp_path):
    moved, copied = tmp_path / "moved.bin", tmp_path / "copied.bin"
    moved.write_bytes(b"moved")
    copied.write_bytes(b"copied")
    staged_moved = store.stage_file(repo, moved, move=True)
    staged_copied = store.stage_file(repo, copied)
    assert not moved.exists()
    copied.write_bytes(b"changed later")  # what was staged must not follow the source
    store.commit(repo, "main", {"m": staged_moved, "c": staged_copied}, message="m")
    assert (read(store, repo, "main", "m"), read(store, repo, "main", "c")) == (b"moved", b"copied")


def test_commit_deletes_paths_given_none(store, repo, tmp_path):
    commit_files(store, repo, "main", {"a": b"1", "b": b"2"}, tmp_path)
    commit_files(store, repo, "main", {"a": None}, tmp_path)
    assert [o.path for o in store.list_objects(repo, "main")] == ["b"]
    with pytest.raises(ObjectNotFound, match="'a'"):
        store.stat_object(repo, "main", "a")


def test_deleting_a_missing_path_fails_and_leaves_the_branch_alone(store, repo, tmp_path):
    head = commit_files(store, repo, "main", {"a": b"1"}, tmp_path).id
    with pytest.raises(ObjectNotFound, match="nope"):
        store.commit(repo, "main", {"a": None, "nope": None}, message="x")
    assert store.resolve_ref(repo, "main") == head
    assert read(store, repo, "main", "a") == b"1"


def test_a_commit_that_changes_nothing_needs_allow_empty(store, repo, tmp_path):
    head = commit_files(store, repo, "main", {"a": b"1"}, tmp_path).id
    with pytest.raises(ReproUserError, match="no changes to commit"):
        store.commit(repo, "main", {"a": put(store, repo, b"1", tmp_path)}, message="again")
    with pytest.raises(ReproUserError, match="no changes to commit"):
        store.commit(repo, "main", {}, message="nothing")
    assert store.resolve_ref(repo, "main") == head
    empty = store.commit(repo, "main", {}, message="marker", metadata={"kind": "marker"}, allow_empty=True)
    assert empty.parents == (head,)
    assert dict(empty.metadata) == {"kind": "marker"}
    assert store.list_objects(repo, empty.id) == store.list_objects(repo, head)


@pytest.mark.parametrize("metadata", [{"epochs": 3}, {"ok": True}, {"x": None}, {1: "one"}, {"": "v"}])
def test_metadata_values_must_be_strings(store, repo, tmp_path, metadata):
    head = store.resolve_ref(repo, "main")
    with pytest.raises(ReproUserError, match="metadata"):
        store.commit(repo, "main", {"a": put(store, repo, b"1", tmp_path)}, message="m", metadata=metadata)
    assert store.resolve_ref(repo, "main") == head


@pytest.mark.parametrize("path", ["/abs/path", "a/../b", "..", "a//b", "a/", "./a", "a\\b", ""])
def test_object_paths_must_be_relative_posix_paths(store, repo, tmp_path, path):
    with pytest.raises(InvalidNameError, match="invalid object path"):
        store.commit(repo, "main", {path: put(store, repo, b"1", tmp_path)}, message="m")


def test_committing_content_that_was_never_staged_fails(store, repo):
    with pytest.raises(ObjectNotFound, match="stage_file"):
        store.commit(repo, "main", {"a": StagedObject("blake3:" + "0" * 64, 3)}, message="m")


def test_commit_to_an_unknown_branch_fails(store, repo, tmp_path):
    with pytest.raises(RefNotFound, match="nope"):
        store.commit(repo, "nope", {"a": put(store, repo, b"1", tmp_path)}, message="m")


def test_log_follows_first_parents_newest_first(store, repo, tmp_path):
    c1 = commit_files(store, repo, "main", {"a": b"1"}, tmp_path, "one")
    c2 = commit_files(store, repo, "main", {"a": b"2"}, tmp_path, "two")
    c3 = commit_files(store, repo, "main", {"a": b"3"}, tmp_path, "three")
    assert [c.message for c in store.log(repo, "main")] == ["three", "two", "one", "Repository created"]
    assert [c.id for c in store.log(repo, "main", limit=2)] == [c3.id, c2.id]
    assert [c.id for c in store.log(repo, c2.id)][:2] == [c2.id, c1.id]
    with pytest.raises(RefNotFound):
        store.log(repo, "nope")  # fails at the call, not at the first next()


# ---- branches, tags and refs -----------------------------------------------------------------


def test_branches_are_independent(store, repo, tmp_path):
    base = commit_files(store, repo, "main", {"a": b"main-1"}, tmp_path).id
    assert store.create_branch(repo, "feature", "main") == base
    commit_files(store, repo, "feature", {"a": b"feature-1"}, tmp_path)
    assert read(store, repo, "main", "a") == b"main-1"
    assert read(store, repo, "feature", "a") == b"feature-1"
    assert set(store.list_branches(repo)) == {"main", "feature"}


def test_create_branch_when_it_exists(store, repo, tmp_path):
    store.create_branch(repo, "feature", "main")
    feature_head = commit_files(store, repo, "feature", {"a": b"1"}, tmp_path).id
    with pytest.raises(AlreadyExistsError, match="feature"):
        store.create_branch(repo, "feature", "main")
    # exist_ok returns the branch where it is: a retried task never moves it back.
    assert store.create_branch(repo, "feature", "main", exist_ok=True) == feature_head
    assert store.resolve_ref(repo, "feature") == feature_head


@pytest.mark.parametrize("name", ["feature/x", "a.b", "a:b", "a+b", "-a", "", "a b", "main\n"])
def test_branch_names_follow_lakefs_rules(store, repo, name):
    with pytest.raises(InvalidNameError):
        store.create_branch(repo, name, "main")


def test_create_branch_from_an_unknown_ref(store, repo):
    with pytest.raises(RefNotFound, match="nope"):
        store.create_branch(repo, "feature", "nope")
    assert "feature" not in store.list_branches(repo)


def test_resolve_ref_accepts_branch_tag_and_full_commit_id(store, repo, tmp_path):
    commit = commit_files(store, repo, "main", {"a": b"1"}, tmp_path)
    store.create_tag(repo, "v1.0", "main")
    assert store.resolve_ref(repo, "main") == commit.id
    assert store.resolve_ref(repo, "v1.0") == commit.id
    assert store.resolve_ref(repo, commit.id) == commit.id
    assert store.resolve_ref(repo, commit.parents[0]) == commit.parents[0]


@pytest.mark.parametrize("ref", ["a..b", "with space", "x/y", "", "-x", "main\n"])
def test_resolve_ref_rejects_malformed_refs(store, repo, ref):
    with pytest.raises(InvalidNameError):
        store.resolve_ref(repo, ref)


def test_unknown_refs_and_commit_id_prefixes_are_not_found(store, repo):
    commit_id = store.resolve_ref(repo, "main")
    for unknown in ("nope", "v9.9", "f" * 64, commit_id[:12]):  # ids are never abbreviated
        with pytest.raises(RefNotFound) as caught:
            store.resolve_ref(repo, unknown)
        assert repr(unknown) in str(caught.value) and repo in str(caught.value)
        assert "list_branches" in str(caught.value)


def test_a_branch_wins_over_a_tag_of_the_same_name(store, backend, repo, tmp_path):
    if backend.name.startswith("lakefs"):
        pytest.skip("lakeFS refuses a branch and a tag of the same name (next test)")
    tagged = store.resolve_ref(repo, "main")
    store.create_tag(repo, "release", "main")
    store.create_branch(repo, "release", "main")
    moved = commit_files(store, repo, "release", {"a": b"1"}, tmp_path).id
    assert store.resolve_ref(repo, "release") == moved != tagged


def test_lakefs_refuses_a_branch_and_a_tag_of_the_same_name(store, backend, repo):
    if not backend.name.startswith("lakefs"):
        pytest.skip("the embedded store lets a branch and a tag share a name (the branch wins)")
    head = store.resolve_ref(repo, "main")
    store.create_tag(repo, "release", "main")
    for exist_ok in (False, True):  # exist_ok never hides the clash
        with pytest.raises(AlreadyExistsError, match="share a name"):
            store.create_branch(repo, "release", "main", exist_ok=exist_ok)
    store.create_branch(repo, "feature", "main")
    with pytest.raises(AlreadyExistsError, match="share a name"):
        store.create_tag(repo, "feature", "main", exist_ok=True)
    assert store.list_tags(repo) == {"release": head} and "release" not in store.list_branches(repo)


def test_tags_are_immutable_and_idempotent(store, repo, tmp_path):
    first = commit_files(store, repo, "main", {"a": b"1"}, tmp_path).id
    assert store.create_tag(repo, "v1", "main") == first
    second = commit_files(store, repo, "main", {"a": b"2"}, tmp_path).id
    assert store.resolve_ref(repo, "v1") == first  # the tag does not follow the branch
    with pytest.raises(AlreadyExistsError, match="immutable"):
        store.create_tag(repo, "v1", second, exist_ok=True)
    with pytest.raises(AlreadyExistsError):
        store.create_tag(repo, "v1", first)
    assert store.create_tag(repo, "v1", first, exist_ok=True) == first
    assert store.list_tags(repo) == {"v1": first}
    assert read(store, repo, "v1", "a") == b"1"


@pytest.mark.parametrize("tag", ["a..b", "v1.", "v1.lock", "a/b", ".hidden", "v 1"])
def test_tag_names_follow_lakefs_rules(store, repo, tag):
    with pytest.raises(InvalidNameError):
        store.create_tag(repo, tag, "main")
    assert store.list_tags(repo) == {}


# ---- reading at refs, diff ---------------------------------------------------------------------


def test_reading_at_an_older_ref_returns_the_old_content(store, repo, tmp_path):
    old = commit_files(store, repo, "main", {"model.bin": b"version 1", "gone.txt": b"x"}, tmp_path).id
    store.create_tag(repo, "v1", old)
    commit_files(store, repo, "main", {"model.bin": b"version 2", "gone.txt": None}, tmp_path)
    assert read(store, repo, "main", "model.bin") == b"version 2"
    assert read(store, repo, old, "model.bin") == b"version 1"
    assert read(store, repo, "v1", "gone.txt") == b"x"
    destination = tmp_path / "restore" / "model.bin"
    info = store.materialize(repo, "v1", "model.bin", destination)
    assert destination.read_bytes() == b"version 1"
    assert (info.content_hash, info.size) == (blake(b"version 1"), 9)
    assert destination.stat().st_mode & 0o222 == 0  # read-only
    with pytest.raises(ObjectNotFound, match=r"gone\.txt"):
        store.open_object(repo, "main", "gone.txt")


def test_large_objects_read_in_pieces(store, repo, tmp_path):
    data = bytes(range(256)) * (40 * 1024) + b"tail"  # ~10 MiB: more than one read chunk
    commit_files(store, repo, "main", {"big": data, "empty": b""}, tmp_path)
    assert read(store, repo, "main", "big") == data
    assert read(store, repo, "main", "empty") == b""
    assert store.stat_object(repo, "main", "empty").content_hash == blake(b"")


def test_diff_two_dot(store, repo, tmp_path):
    left = commit_files(store, repo, "main", {"keep": b"k", "change": b"1", "remove": b"r", "sub/x": b"x"}, tmp_path).id
    right = commit_files(store, repo, "main", {"change": b"2", "remove": None, "add": b"a", "sub/y": b"y"}, tmp_path).id
    entries = store.diff(repo, left, right)
    assert [(e.path, e.type) for e in entries] == [
        ("add", "added"),
        ("change", "changed"),
        ("remove", "removed"),
        ("sub/y", "added"),
    ]
    change = entries[1]
    assert (change.left.content_hash, change.right.content_hash) == (blake(b"1"), blake(b"2"))
    assert (change.left.size, change.right.size) == (1, 1)
    assert entries[0].left is None and entries[2].right is None
    assert [e.path for e in store.diff(repo, left, right, prefix="sub/")] == ["sub/y"]
    assert [(e.path, e.type) for e in store.diff(repo, right, left)] == [
        ("add", "removed"),
        ("change", "changed"),
        ("remove", "added"),
        ("sub/y", "removed"),
    ]
    assert store.diff(repo, "main", right) == []


# ---- availability (garbage collection) ---------------------------------------------------------


def test_collected_data_is_gone_and_says_so(store, backend, repo, tmp_path):
    if backend.make_gone is None:
        pytest.skip(f"{backend.name}: no way to garbage-collect one object on demand")
    commit = commit_files(store, repo, "main", {"data.csv": b"1,2,3"}, tmp_path)
    store.check_available(repo, commit.id, "data.csv", blake(b"1,2,3"))
    backend.make_gone(commit.id, "data.csv")
    with pytest.raises(ObjectGone, match="data.csv|garbage collection"):
        store.check_available(repo, commit.id, "data.csv", blake(b"1,2,3"))
    with pytest.raises(ObjectGone):
        read(store, repo, commit.id, "data.csv")
    # A stat may answer from metadata, which lakeFS GC keeps; if it answers, it answers truly.
    try:
        info = store.stat_object(repo, commit.id, "data.csv")
    except ObjectGone:
        return
    assert (info.content_hash, info.size) == (blake(b"1,2,3"), 5)


def test_an_empty_pinned_input_is_checked_by_reading_it(store, backend, repo, tmp_path):
    commit = commit_files(store, repo, "main", {"empty.csv": b""}, tmp_path)
    store.check_available(repo, commit.id, "empty.csv", blake(b""))
    if backend.make_gone is None:
        return
    backend.make_gone(commit.id, "empty.csv")
    with pytest.raises(ObjectGone):
        store.check_available(repo, commit.id, "empty.csv", blake(b""))


def test_check_available_of_unknown_commit_or_path(store, repo, tmp_path):
    commit = commit_files(store, repo, "main", {"a": b"1"}, tmp_path)
    with pytest.raises(RefNotFound):
        store.check_available(repo, "e" * 64, "a", blake(b"1"))
    with pytest.raises(RepositoryNotFound):
        store.check_available("no-such-repo", commit.id, "a", blake(b"1"))


# ---- concurrency -------------------------------------------------------------------------------


def test_concurrent_commits_to_one_branch_never_lose_a_commit(store, repo, tmp_path):
    base = store.resolve_ref(repo, "main")
    workers, per_worker = 4, 4
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for seq in range(per_worker):
                staged = put(store, repo, f"worker {worker} commit {seq}".encode(), tmp_path)
                store.commit(
                    repo,
                    "main",
                    {f"w{worker}/c{seq}.txt": staged},
                    message=f"w{worker} c{seq}",
                    metadata={"worker": str(worker), "seq": str(seq)},
                )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    log = list(store.log(repo, "main"))
    assert log[-1].id == base
    assert {c.message for c in log[:-1]} == {f"w{w} c{s}" for w in range(workers) for s in range(per_worker)}
    for newer, older in zip(log, log[1:], strict=False):
        assert newer.parents == (older.id,)
    assert len(store.list_objects(repo, "main")) == workers * per_worker


# ---- the record path on the port ----------------------------------------------------------------


def test_a_retried_task_finds_its_own_commit_instead_of_making_a_second(store, backend, tmp_path):
    from airflow_repro.core.environment import fingerprint_pin, hardware, versions
    from airflow_repro.core.manifest import AirflowIdentity, CodeVersion, Parameters
    from airflow_repro.core.naming import run_branch_name
    from airflow_repro.core.recorder import TaskEnvironment, TaskRecorder
    from airflow_repro.core.spec import TaskSpec

    recorder = TaskRecorder(
        store, None, default_repository=backend.repo, default_branch="main", work_root=tmp_path / "work"
    )
    spec = TaskSpec(task_id="fit", outputs=("model.bin",))

    def attempt(try_number: int):
        env = TaskEnvironment(
            identity=AirflowIdentity(
                dag_id="dag", run_id="manual__2026-01-01T00:00:00+00:00", task_id="fit", try_number=try_number
            ),
            code=CodeVersion(source_hash="sha256:" + "0" * 64),
            environment=fingerprint_pin(),
            parameters=Parameters(seed=1),
            versions=versions("test"),
            hardware=hardware(),
        )
        prepared = recorder.prepare(spec, env)
        (prepared.output_dir / "model.bin").write_bytes(b"weights")
        return recorder.finish(prepared)

    first, retried = attempt(1), attempt(2)
    assert retried.reused_commit and retried.commit.id == first.commit.id
    branch = run_branch_name("dag", "manual__2026-01-01T00:00:00+00:00")
    assert store.resolve_ref(backend.repo, branch) == first.commit.id
    assert [c.id for c in store.log(backend.repo, branch, limit=1)] == [first.commit.id]


# ---- integrity (fsck) on the port ----------------------------------------------------------------


def test_check_store_reads_every_object_and_names_the_one_whose_data_is_gone(store, backend, repo, tmp_path):
    from airflow_repro.core.integrity import check_store

    if backend.make_gone is None:
        pytest.skip(f"{backend.name}: no way to garbage-collect one object on demand")
    commit = commit_files(store, repo, "main", {"a.csv": b"1,2", "b.csv": b"3,4"}, tmp_path)
    store.create_tag(repo, "v1", "main")
    clean = check_store(store, [repo])
    assert clean.clean and (clean.refs, clean.objects, clean.bytes) == (2, 2, 6)
    backend.make_gone(commit.id, "b.csv")
    report = check_store(store, [repo])
    assert [(p.kind, p.repository, p.path, p.commit_id) for p in report.problems] == [
        ("object", repo, "b.csv", commit.id)
    ]
    assert "b.csv" in report.problems[0].detail
