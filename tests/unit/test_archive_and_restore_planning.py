"""The archive (content-addressed, stored once, verified on read) and how planning decides what
a pinned replay restores: pure core, a real LocalStore, a fake of the planner's outside checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.core.archive import (
    ARCHIVE_BRANCH,
    ArchiveObject,
    archive_path,
    ensure_archived,
    load_archived,
)
from airflow_repro.core.code_snapshot import CodeSnapshot
from airflow_repro.core.environment_record import Distribution, EnvironmentRecord
from airflow_repro.core.replay import Drift, DriftKind, plan_replay
from airflow_repro.errors import ArchiveCorrupt, ArchiveMissing
from tests.unit.test_replay_core import current_of, record_pipeline

REPO = "repro"


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "store")
    store.create_repository(REPO, exist_ok=True)
    return store


def test_an_object_is_stored_once_however_many_tasks_archive_it(store: LocalStore) -> None:
    code = ArchiveObject("code", b'{"files":{}}')
    env = ArchiveObject("environment", b'{"distributions":[]}')
    assert ensure_archived(store, REPO, [code, env], default_branch="main") == sorted([code.path, env.path])
    head = store.list_branches(REPO)[ARCHIVE_BRANCH]
    for _ in range(3):
        assert ensure_archived(store, REPO, [code, env], default_branch="main") == []
    assert store.list_branches(REPO)[ARCHIVE_BRANCH] == head, "nothing committed when everything is stored"
    assert load_archived(store, REPO, "code", code.digest) == code.data
    assert code.path == f"_repro/archive/code/{code.digest.removeprefix('sha256:')}"


def test_a_missing_or_damaged_object_is_named_never_restored_from(store: LocalStore) -> None:
    obj = ArchiveObject("lockfile", b"six==1.16.0\n")
    with pytest.raises(ArchiveMissing, match="not in repository 'repro'"):
        load_archived(store, REPO, "lockfile", obj.digest)
    ensure_archived(store, REPO, [obj], default_branch="main")
    info = store.stat_object(REPO, ARCHIVE_BRANCH, obj.path)
    object_file = store.object_path(info.content_hash)
    object_file.chmod(0o644)
    object_file.write_bytes(b"six==9.9.9\n")
    with pytest.raises(ArchiveCorrupt, match="archived lockfile .* is damaged"):
        load_archived(store, REPO, "lockfile", obj.digest)
    with pytest.raises(ArchiveMissing, match="not an archive address"):
        archive_path("code", "sha256:abc")


def test_a_second_writer_of_the_same_object_is_not_an_error(store: LocalStore) -> None:
    """Two tasks archive the same object at once: the later commit changes nothing, which is fine."""
    obj = ArchiveObject("script", b"print('hi')\n")
    store.create_branch(REPO, ARCHIVE_BRANCH, "main", exist_ok=True)
    store.commit(REPO, ARCHIVE_BRANCH, {obj.path: store.stage_bytes(REPO, obj.data)}, message="first writer")
    real_stat = store.stat_object
    calls = {"n": 0}

    def stale_stat(repository: str, ref: str, path: str):  # the first look predates the other commit
        calls["n"] += 1
        if calls["n"] == 1:
            from airflow_repro.errors import ObjectNotFound

            raise ObjectNotFound(path)
        return real_stat(repository, ref, path)

    store.stat_object = stale_stat  # type: ignore[method-assign]
    assert ensure_archived(store, REPO, [obj], default_branch="main") == [obj.path]
    assert load_archived(store, REPO, "script", obj.digest) == obj.data


# -- planning ---------------------------------------------------------------------------------------
def _snapshot(text: str) -> CodeSnapshot:
    return CodeSnapshot(dag_file="pipeline.py", files={"pipeline.py": text, "helpers.py": "X = 1\n"})


def _record(version: str, *, editable: bool = False) -> EnvironmentRecord:
    source = {"kind": "editable", "url": "file:///src/numpy"} if editable else {}
    return EnvironmentRecord(
        python="CPython 3.11.7",
        python_version="3.11.7",
        platform="linux",
        machine="x86_64",
        distributions=[Distribution(name="numpy", version=version, **({"source": source} if source else {}))],
    )


@dataclasses.dataclass
class FakeChecks:
    """The planner's outside checks, as ArchiveChecks answers them, over in-memory archives."""

    code: dict[str, CodeSnapshot]
    environments: dict[str, EnvironmentRecord]
    current: CodeSnapshot | None
    now: EnvironmentRecord | None
    problems: list[str] = dataclasses.field(default_factory=list)

    def current_code(self, *recorded: object) -> CodeSnapshot | None:
        return self.current

    def archived_code(self, repository: str, digest: str) -> CodeSnapshot:
        if digest not in self.code:
            raise ArchiveMissing(f"the archived code {digest} is not in repository {repository!r}")
        return self.code[digest]

    def archived_environment(self, repository: str, digest: str) -> EnvironmentRecord:
        if digest not in self.environments:
            raise ArchiveMissing(f"the archived environment {digest} is not in repository {repository!r}")
        return self.environments[digest]

    def check_archived(self, repository: str, kind: str, digest: str) -> None:
        raise ArchiveMissing(f"no {kind}")

    def current_environment(self) -> EnvironmentRecord | None:
        return self.now

    def environment_problems(self, record: EnvironmentRecord) -> list[str]:
        return self.problems


def _recorded_run(tmp_path: Path, snapshot: CodeSnapshot, environment: EnvironmentRecord):
    from tests.unit import test_replay_core as core_tests

    store = LocalStore(tmp_path / "plan-store")
    recorder = core_tests.TaskRecorder(
        store, None, default_repository=REPO, default_branch="main", work_root=tmp_path / "work"
    )
    run = record_pipeline(recorder, "r1")
    tasks = []
    for task in run.tasks:
        m = task.manifest
        code = m.code.model_copy(update={"snapshot": snapshot.digest})
        pin = m.environment.model_copy(update={"kind": "fingerprint", "digest": environment.digest})
        tasks.append(dataclasses.replace(task, manifest=m.model_copy(update={"code": code, "environment": pin})))
    return dataclasses.replace(run, tasks=tasks), store


def test_drift_that_the_archive_can_restore_does_not_block_a_pinned_replay(tmp_path: Path) -> None:
    before, after = _snapshot("def train():\n    return 1\n"), _snapshot("def train():\n    return 2\n")
    was, now = _record("2.4.6"), _record("2.5.0")
    run, store = _recorded_run(tmp_path, before, was)
    current = {k: dataclasses.replace(v, code_snapshot=after.digest) for k, v in current_of(run).items()}
    checks = FakeChecks({before.digest: before}, {was.digest: was}, after, now)
    plan = plan_replay(run, current, store, mode="pinned", replay_run_id="replay__x", restore=checks)
    kinds = {(d.kind, d.task_id) for d in plan.drift}
    assert {(DriftKind.CODE_CHANGED, "train"), (DriftKind.ENVIRONMENT_CHANGED, "train")} <= kinds
    assert plan.blocking_drift == []
    code = next(d for d in plan.drift if d.kind is DriftKind.CODE_CHANGED and d.task_id == "train")
    assert code.restorable and code.detail == "code the task imports changed: pipeline.py (changed)"
    assert code.diff is not None and "-    return 1" in code.diff and "+    return 2" in code.diff
    env = next(d for d in plan.drift if d.kind is DriftKind.ENVIRONMENT_CHANGED and d.task_id == "train")
    assert env.restorable and env.changes == ["numpy 2.4.6 -> 2.5.0"] and "planning process" in (env.restore_note or "")


@pytest.mark.parametrize("what", ["code archive missing", "distribution not installable"])
def test_drift_that_cannot_be_restored_blocks_a_pinned_replay_only(tmp_path: Path, what: str) -> None:
    before, after = _snapshot("A = 1\n"), _snapshot("A = 2\n")
    was, now = _record("2.4.6"), _record("2.5.0")
    run, store = _recorded_run(tmp_path, before, was)
    current = {k: dataclasses.replace(v, code_snapshot=after.digest) for k, v in current_of(run).items()}
    archived = {} if what == "code archive missing" else {before.digest: before}
    problems = [] if what == "code archive missing" else ["numpy==2.4.6 is not served by the index"]
    checks = FakeChecks(archived, {was.digest: was}, after, now, problems)
    plan = plan_replay(run, current, store, mode="pinned", replay_run_id="replay__x", restore=checks)
    blocking = plan.blocking_drift
    assert blocking and all(
        d.restorable is False and (d.restore_note or "").startswith("not restorable") for d in blocking
    )
    expected = DriftKind.CODE_CHANGED if what == "code archive missing" else DriftKind.ENVIRONMENT_CHANGED
    assert {d.kind for d in blocking} == {expected}
    assert "not restorable" in plan.refusal_message()
    latest = plan_replay(run, current, store, mode="latest-code", replay_run_id="replay__y", restore=checks)
    assert latest.blocking_drift == []


def test_restorable_drift_is_still_drift_where_it_cannot_be_restored() -> None:
    """A task added is never restorable; a restorable code change does not block pinned."""
    added = Drift(kind=DriftKind.TASK_ADDED, task_id="t", detail="d", restorable=False)
    code = Drift(kind=DriftKind.CODE_CHANGED, task_id="t", detail="d", restorable=True)
    params = Drift(kind=DriftKind.PARAMS_CHANGED, task_id="t", detail="d", restorable=True)
    assert added.blocks("pinned") and not added.blocks("latest-code")
    assert not code.blocks("pinned") and not code.blocks("latest-code")
    assert params.blocks("pinned") and params.blocks("latest-code"), "data and params are never 'restored'"
