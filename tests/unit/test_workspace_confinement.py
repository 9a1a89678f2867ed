"""Every path a task gives the recorder stays inside its workspace: nothing outside is read or moved."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.core.naming import run_branch_name
from airflow_repro.core.recorder import TaskRecorder
from airflow_repro.core.spec import Input, TaskSpec
from airflow_repro.errors import InvalidNameError, OutputError
from tests.support.recording import environment

BRANCH = run_branch_name("dag", "manual__1")


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def recorder(store: LocalStore, tmp_path: Path) -> TaskRecorder:
    return TaskRecorder(store, None, default_repository="repro", default_branch="main", work_root=tmp_path / "work")


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"someone else's data")
    return folder


def test_an_output_folder_replaced_by_a_symlink_moves_nothing(
    recorder: TaskRecorder, store: LocalStore, elsewhere: Path
) -> None:
    prepared = recorder.prepare(TaskSpec(task_id="t", outputs=("model.bin",)), environment("t"))
    prepared.output_dir.rmdir()
    prepared.output_dir.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(OutputError, match="symlink"):
        recorder.finish(prepared)
    assert (elsewhere / "model.bin").read_bytes() == b"someone else's data", "the folder's files stay where they are"
    assert store.resolve_ref("repro", BRANCH) == store.resolve_ref("repro", "main"), "nothing was committed"


def test_a_symlinked_subfolder_or_file_is_refused(recorder: TaskRecorder, elsewhere: Path) -> None:
    prepared = recorder.prepare(TaskSpec(task_id="t", outputs=("models/",)), environment("t"))
    (prepared.output_dir / "models").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(OutputError, match="symlink"):
        recorder.finish(prepared)
    assert (elsewhere / "model.bin").exists()

    prepared = recorder.prepare(TaskSpec(task_id="u", outputs=("model.bin",)), environment("u"))
    (prepared.output_dir / "model.bin").symlink_to(elsewhere / "model.bin")
    with pytest.raises(OutputError, match="symlink"):
        recorder.finish(prepared)
    assert (elsewhere / "model.bin").exists()


def test_a_hard_linked_output_is_copied_not_taken(recorder: TaskRecorder, store: LocalStore, elsewhere: Path) -> None:
    prepared = recorder.prepare(TaskSpec(task_id="t", outputs=("model.bin",)), environment("t"))
    os.link(elsewhere / "model.bin", prepared.output_dir / "model.bin")
    recorded = recorder.finish(prepared)
    (elsewhere / "model.bin").write_bytes(b"changed later by its owner")
    with store.open_object("repro", recorded.commit.id, "model.bin") as handle:
        assert handle.read() == b"someone else's data", "the store keeps its own copy"


@pytest.mark.parametrize("name", ["../../x", "/abs/dir", "a/b", "..", ".", "", ".hidden", "-x", "x" * 129, 7])
def test_input_names_are_one_plain_path_segment(name: object) -> None:
    with pytest.raises(InvalidNameError, match="input name"):
        TaskSpec(task_id="t", inputs={name: Input("data/x.csv")})  # type: ignore[dict-item]


def test_hostile_input_names_never_reach_the_file_system(recorder: TaskRecorder, tmp_path: Path) -> None:
    """Even a spec built around validation cannot make the recorder write outside the workspace."""
    spec = TaskSpec(task_id="w", outputs=("x.csv",))
    run = recorder.prepare(spec, environment("w"))
    (run.output_dir / "x.csv").write_bytes(b"1")
    recorder.finish(run)

    victim = tmp_path / "victim"
    victim.mkdir()
    spec = TaskSpec(task_id="r", inputs={"ok": Input("x.csv")})
    object.__setattr__(spec, "inputs", {"../../../../victim": Input("x.csv")})
    with pytest.raises(OutputError, match="outside the task's workspace"):
        recorder.prepare(spec, environment("r"))
    assert list(victim.iterdir()) == []


def test_valid_names_still_work(recorder: TaskRecorder) -> None:
    spec = TaskSpec(task_id="t", inputs={"raw_v1.2-final": Input("data/x.csv")})
    assert "raw_v1.2-final" in spec.inputs
