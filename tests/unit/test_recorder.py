"""The record path's core against the embedded store: pins before, one commit after, never partial."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.core import metadata_keys as keys
from airflow_repro.core.naming import run_branch_name
from airflow_repro.core.recorder import TaskRecorder, manifest_path
from airflow_repro.core.runs import close_run, load_run
from airflow_repro.core.spec import Input, TaskSpec
from airflow_repro.errors import (
    ObjectNotFound,
    OutputError,
    ParamsNotSerializableError,
    RefNotFound,
    RepositoryNotFound,
)
from tests.support.recording import environment, run_task


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def recorder(store: LocalStore, tmp_path: Path) -> TaskRecorder:
    return TaskRecorder(store, None, default_repository="repro", default_branch="main", work_root=tmp_path / "work")


BRANCH = run_branch_name("dag", "manual__1")


def test_outputs_and_manifest_land_in_one_commit_and_inputs_pin_to_it(
    recorder: TaskRecorder, store: LocalStore
) -> None:
    first = run_task(recorder, TaskSpec(task_id="a", outputs=("data/x.csv",)), {"data/x.csv": b"1,2\n"})
    assert store.resolve_ref("repro", BRANCH) == first.commit.id
    assert {o.path for o in store.list_objects("repro", first.commit.id)} == {"data/x.csv", manifest_path("a", -1)}
    assert first.commit.metadata[keys.MANIFEST_DIGEST] == first.manifest.digest

    spec = TaskSpec(task_id="b", inputs={"x": Input("data/x.csv")}, outputs=("y.txt",))
    second = run_task(recorder, spec, {"y.txt": b"y"})
    (pinned,) = second.manifest.inputs
    assert pinned.commit_id == first.commit.id and pinned.ref == BRANCH
    assert second.commit.parents == (first.commit.id,)

    close_run(store, "dag", "manual__1", "success")
    run = load_run(store, "dag", "manual__1")
    assert run.closed and [t.commit_id for t in run.tasks] == [first.commit.id, second.commit.id]
    assert close_run(store, "dag", "manual__1", "success") == run.head_commit, "closing twice is a no-op"


def test_inputs_can_pin_other_refs(recorder: TaskRecorder, store: LocalStore, tmp_path: Path) -> None:
    store.create_repository("reference-data")
    source = tmp_path / "labels.csv"
    source.write_bytes(b"labels")
    staged = store.stage_file("reference-data", source)
    commit = store.commit("reference-data", "main", {"labels.csv": staged}, message="labels v1")
    store.create_tag("reference-data", "v1", commit.id)
    spec = TaskSpec(
        task_id="t", inputs={"l": Input("labels.csv", repository="reference-data", ref="v1")}, outputs=("o",)
    )
    recorded = run_task(recorder, spec, {"o": b"o"})
    assert recorded.manifest.inputs[0].commit_id == commit.id and recorded.manifest.inputs[0].ref == "v1"


@pytest.mark.parametrize(
    ("declared", "error", "message"),
    [
        (Input("missing.csv"), ObjectNotFound, "task t: input 'x'.*missing.csv.*upstream"),
        (Input("a.csv", repository="no-such-repo"), RepositoryNotFound, "task t: input 'x'.*no-such-repo"),
        (Input("a.csv", ref="no-such-branch"), RefNotFound, "task t: input 'x'.*no-such-branch"),
    ],
)
def test_bad_inputs_fail_before_the_task_naming_it(
    recorder: TaskRecorder, store: LocalStore, declared: Input, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        recorder.prepare(TaskSpec(task_id="t", inputs={"x": declared}), environment("t"))
    assert [c.message for c in store.log("repro", BRANCH)] == ["Repository created"]


def test_params_that_are_not_json_are_refused(recorder: TaskRecorder) -> None:
    env = environment("t", op_kwargs={"when": object()})
    with pytest.raises(ParamsNotSerializableError, match="task t: op_kwargs cannot be recorded"):
        recorder.prepare(TaskSpec(task_id="t"), env)


@pytest.mark.parametrize(
    ("outputs", "written", "message"),
    [
        (("a.txt", "b.txt"), {"a.txt": b"a"}, r"did not write: \['b.txt'\]"),
        (("a.txt",), {"a.txt": b"a", "extra.txt": b"e"}, r"undeclared outputs \['extra.txt'\]"),
    ],
)
def test_output_mismatch_commits_nothing(
    recorder: TaskRecorder, store: LocalStore, outputs: tuple[str, ...], written: dict[str, bytes], message: str
) -> None:
    with pytest.raises(OutputError, match=message):
        run_task(recorder, TaskSpec(task_id="t", outputs=outputs), written)
    head = store.resolve_ref("repro", BRANCH)
    assert store.list_objects("repro", head) == []


def test_folder_outputs_and_abort(recorder: TaskRecorder, store: LocalStore) -> None:
    recorded = run_task(
        recorder, TaskSpec(task_id="t", outputs=("plots/",)), {"plots/a.png": b"a", "plots/b/c.png": b"c"}
    )
    assert [o.path for o in recorded.manifest.outputs] == ["plots/a.png", "plots/b/c.png"]
    prepared = recorder.prepare(TaskSpec(task_id="u", outputs=("u.txt",)), environment("u"))
    (prepared.output_dir / "u.txt").write_bytes(b"half")
    recorder.abort(prepared, RuntimeError("boom"))
    assert not prepared.workdir.exists()
    assert store.resolve_ref("repro", BRANCH) == recorded.commit.id


def test_a_retry_with_identical_outputs_reuses_the_commit_and_a_changed_one_does_not(
    recorder: TaskRecorder, store: LocalStore
) -> None:
    spec = TaskSpec(task_id="t", outputs=("o.txt",))
    first = run_task(recorder, spec, {"o.txt": b"same"}, try_number=1)
    again = run_task(recorder, spec, {"o.txt": b"same"}, try_number=2)
    assert again.reused_commit and again.commit.id == first.commit.id
    changed = run_task(recorder, spec, {"o.txt": b"different"}, try_number=3)
    assert not changed.reused_commit and changed.commit.parents == (first.commit.id,)
