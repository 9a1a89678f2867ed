"""Damage is found where users look, is not spread by deduplication, and stays where it is.

A flipped byte in a stored output, a damaged ``repository.json`` or ref file, and a store on a
file system that refuses writes: each is reported naming what is damaged, and affects nothing else.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.cli import main
from airflow_repro.core.hashing import hash_file
from airflow_repro.core.naming import run_branch_name
from airflow_repro.core.replay import plan_replay, save_plan
from airflow_repro.core.runs import close_run, load_run
from airflow_repro.core.verify import save_report, verify_replay
from airflow_repro.errors import RepositoryNotFound, ReproUserError, StoreCorruption, StoreUnavailable
from tests.support.recording import DAG, REPO, RUN, record


def flip_a_byte(store: LocalStore, content_hash: str) -> None:
    """Damage as a disk or a stray write would: same size, one byte different."""
    path = store.object_path(content_hash)
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    path.chmod(0o444)


def output_hash(store: LocalStore, run_id: str, path: str) -> str:
    return store.stat_object(REPO, run_branch_name(DAG, run_id), path).content_hash


def tree_snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def store(home: Path) -> LocalStore:
    return LocalStore(home / "store")


def fsck(home: Path, *args: str):
    return CliRunner().invoke(main, ["fsck", "--home", str(home), *args])


# ---- deduplication never spreads damage ---------------------------------------------------------


def test_staging_the_same_bytes_again_repairs_a_damaged_object_instead_of_referencing_it(store, home):
    record(store, home, RUN, {"model.bin": b"weights v1"})
    damaged = output_hash(store, RUN, "model.bin")
    flip_a_byte(store, damaged)

    record(store, home, "manual__2", {"model.bin": b"weights v1"})  # a later task, the same bytes
    second = run_branch_name(DAG, "manual__2")
    with store.open_object(REPO, second, "model.bin") as reader:
        assert reader.read() == b"weights v1"
    with store.open_object(REPO, run_branch_name(DAG, RUN), "model.bin") as reader:
        assert reader.read() == b"weights v1", "the first run's output is whole again too"
    assert fsck(home).exit_code == 0


def test_stage_bytes_repairs_a_damaged_object_too(store):
    store.create_repository(REPO)
    staged = store.stage_bytes(REPO, b'{"manifest": 1}')
    flip_a_byte(store, staged.content_hash)
    assert store.stage_bytes(REPO, b'{"manifest": 1}') == staged
    assert hash_file(store.object_path(staged.content_hash)) == (staged.content_hash, len(b'{"manifest": 1}'))


# ---- fsck ----------------------------------------------------------------------------------------


def test_fsck_names_a_flipped_byte_that_show_cannot_see(store, home):
    record(store, home, RUN, {"a.txt": b"alpha", "b.txt": b"beta"})
    close_run(store, DAG, RUN, "success")
    assert fsck(home).exit_code == 0
    flip_a_byte(store, output_hash(store, RUN, "b.txt"))

    shown = CliRunner().invoke(main, ["show", DAG, RUN, "--home", str(home)])
    assert shown.exit_code == 0  # show prints what was recorded; it does not re-read the data
    before = tree_snapshot(home)
    result = fsck(home)
    assert result.exit_code == 1, result.output
    assert "b.txt" in result.output and "a.txt" not in result.output
    report = json.loads(fsck(home, "--json").output)
    assert report["clean"] is False
    problems = {(p["kind"], p["repository"], p["path"]) for p in report["problems"]}
    assert problems == {("object", REPO, "b.txt")}
    (problem,) = report["problems"]
    run_commits = {c.id for c in store.log(REPO, run_branch_name(DAG, RUN))}
    assert problem["commit_id"] in run_commits and problem["ref"]
    assert tree_snapshot(home) == before, "fsck only reads"


def test_fsck_of_one_repository_and_of_an_unknown_one(store, home):
    record(store, home, RUN, {"a.txt": b"alpha"})
    store.create_repository("other-repo")
    result = fsck(home, "--repository", "other-repo", "--json")
    assert result.exit_code == 0 and json.loads(result.output)["repositories"] == ["other-repo"]
    unknown = fsck(home, "--repository", "nope")
    assert unknown.exit_code == 2 and "nope" in unknown.output


def test_fsck_finds_a_tampered_manifest_and_a_damaged_ref(store, home):
    record(store, home, RUN, {"a.txt": b"alpha"})
    repo_dir = store.root / "repos" / REPO
    (repo_dir / "refs" / "branches" / "main").write_text("not a commit id\n")
    from airflow_repro.core.integrity import check_store

    report = check_store(LocalStore(store.root))
    assert [(p.kind, p.ref) for p in report.problems] == [("ref", "main")]
    assert "refs/branches/main" in report.problems[0].detail
    assert report.commits > 0 and report.manifests == 1  # the other refs were still checked


def test_missing_home_is_a_user_error_and_creates_nothing(tmp_path):
    for command in (["fsck"], ["gc"], ["show", DAG, RUN], ["diff", DAG, RUN, "manual__2"]):
        result = CliRunner().invoke(main, [*command, "--home", str(tmp_path / "nope")])
        assert result.exit_code == 2, (command, result.output)
        assert "no store" in result.output
    assert list(tmp_path.iterdir()) == []


# ---- verify --deep --------------------------------------------------------------------------------


@pytest.fixture
def replayed(store: LocalStore, home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An original run and a replay that reproduced it (same bytes), verified and stored."""
    from airflow_repro.airflow import replay as service
    from airflow_repro.config import ReproSettings

    record(store, home, RUN, {"model.bin": b"weights"})
    original = load_run(store, DAG, RUN)
    replay_id = f"replay__1__of__{RUN}"
    save_plan(
        store, plan_replay(original, {}, store, mode="latest-code", replay_run_id=replay_id), default_branch="main"
    )
    record(store, home, replay_id, {"model.bin": b"weights"})
    save_report(store, REPO, verify_replay(original, load_run(store, DAG, replay_id)))

    settings = ReproSettings.from_env({"AIRFLOW__REPRO__HOME": str(home)})
    backends = service.Backends(settings=settings, store=store)
    monkeypatch.setattr("airflow_repro.cli._backends", lambda: backends)
    monkeypatch.setattr(service, "dag_run_state", lambda dag_id, run_id: None)  # no Airflow DB here
    monkeypatch.setattr(service, "_tracker_or_none", lambda backends: None)
    monkeypatch.setattr("airflow_repro.airflow.lineage.emit_verdict", lambda *args: 0)
    return replay_id


def verify(*args: str):
    return CliRunner().invoke(main, ["verify", DAG, *args])


def test_verify_deep_re_hashes_both_runs_and_names_the_damaged_object(store, replayed):
    assert verify(replayed, "--deep").exit_code == 0
    flip_a_byte(store, output_hash(store, replayed, "model.bin"))

    assert verify(replayed).exit_code == 0  # recorded hashes still agree: not a deep check
    assert verify(replayed, "--stored").exit_code == 0
    for args in ([replayed, "--deep"], [replayed, "--stored", "--deep"]):
        result = verify(*args, "--json")
        assert result.exit_code == 1, result.output
        report = json.loads(result.output)
        assert report["verdict"] == "differs"
        (task,) = report["tasks"]
        assert task["status"] == "differs"
        changes = {(o["path"], o["change"]) for o in task["objects"]}
        # one object file holds both runs' identical output: both sides are damaged
        assert changes == {("model.bin", "damaged_in_original"), ("model.bin", "damaged_in_replay")}
        assert all("model.bin" in o["detail"] for o in task["objects"])
    table = verify(replayed, "--deep")
    assert "DIFFERS" in table.output and "damaged_in_replay: model.bin" in table.output


# ---- one damaged repository.json ----------------------------------------------------------------


def test_a_damaged_repository_file_affects_only_its_repository_and_names_the_file(store, home):
    record(store, home, RUN, {"a.txt": b"alpha"})
    for name in ("aa-broken", "zz-other"):
        store.create_repository(name)
    broken = store.root / "repos" / "aa-broken" / "repository.json"
    broken.write_bytes(b'{"name": "aa-bro')

    fresh = LocalStore(store.root)
    assert [r.name for r in fresh.list_repositories()] == [REPO, "zz-other"]
    assert [t.manifest.identity.task_id for t in load_run(fresh, DAG, RUN).tasks] == ["a"]
    assert CliRunner().invoke(main, ["show", DAG, RUN, "--home", str(home)]).exit_code == 0
    for touch in (
        lambda: fresh.get_repository("aa-broken"),
        lambda: fresh.list_branches("aa-broken"),
        lambda: fresh.create_repository("aa-broken", exist_ok=True),
    ):
        with pytest.raises(StoreCorruption, match=str(broken)):
            touch()
    result = fsck(home, "--json")
    assert result.exit_code == 1
    (problem,) = json.loads(result.output)["problems"]
    assert (problem["kind"], problem["repository"]) == ("repository", "aa-broken")
    assert str(broken) in problem["detail"]


# ---- store faults -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.EROFS, "read-only file system"),
        (errno.ENOSPC, "no space left"),
        (errno.EACCES, "permission denied"),
    ],
)
def test_os_errors_of_the_store_are_store_unavailable_naming_the_folder_and_the_fix(
    store, tmp_path, monkeypatch, code, words
):
    store.create_repository(REPO)
    source = tmp_path / "out.bin"
    source.write_bytes(b"data")
    real_open = builtins.open

    def failing_open(path, *args, **kwargs):
        if str(path).startswith(str(store.root / "tmp")):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", failing_open)
    with pytest.raises(StoreUnavailable, match=words) as caught:
        store.stage_bytes(REPO, b"manifest")
    assert str(store.root) in str(caught.value)
    with pytest.raises(StoreUnavailable, match=words):
        store.stage_file(REPO, source)
    assert source.read_bytes() == b"data"
    monkeypatch.undo()
    assert store.stage_file(REPO, source).size == 4


def test_a_source_the_caller_cannot_read_is_a_user_error(store, tmp_path, monkeypatch):
    store.create_repository(REPO)
    source = tmp_path / "secret.bin"
    source.write_bytes(b"x")
    real_open = builtins.open

    def denied(path, *args, **kwargs):
        if str(path) == str(source):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denied)
    with pytest.raises(ReproUserError, match="secret.bin"):
        store.stage_file(REPO, source)


def test_unknown_repository_still_lists_the_existing_ones(store):
    store.create_repository(REPO)
    with pytest.raises(RepositoryNotFound, match=REPO):
        store.check_layout(["nope"])
