"""Running archived code: a snapshot written back and run in a real subprocess, ahead of the current code."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from airflow_repro.adapters.code_restore import materialize_snapshot, restored_launcher_script, run_restored
from airflow_repro.core.code_snapshot import CodeSnapshot
from airflow_repro.errors import ManifestError, TaskProcessError
from airflow_repro.task_formats import ContextFile

MYDAG = """\
import helpers

SCALE = 1


def task(x):
    return helpers.double(x) * SCALE


def pipeline():
    def nested(x, repro):
        return {"value": helpers.double(x), "seed": repro.seed, "module": __name__}

    return nested


def failing(x):
    raise ValueError("archived failure")
"""

ARCHIVED = CodeSnapshot(
    dag_file="mydag.py", files={"mydag.py": MYDAG, "helpers.py": "def double(x):\n    return 2 * x\n"}
)


@pytest.fixture
def context_file(tmp_path: Path) -> Path:
    """The context file the recorder writes before a task starts (what ``runtime.current()`` reads)."""
    path = tmp_path / "context.json"
    ContextFile(task="d.t", seed=5, output_dir=tmp_path / "out", declared_outputs=(), inputs={}).write(path)
    return path


@pytest.fixture
def worker(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A workdir whose cwd, and a PYTHONPATH entry, hold a *current* helpers module that triples."""
    workdir = tmp_path / "work"
    current = tmp_path / "current_code"
    for folder in (workdir, current):
        folder.mkdir()
        (folder / "helpers.py").write_text("def double(x):\n    return 3 * x\n")
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.pathsep.join([str(current), *sys.path])}
    return workdir, env


def _run(qualname: str, context_file: Path, worker: tuple[Path, dict[str, str]], **kwargs: object) -> object:
    workdir, env = worker
    return run_restored(
        Path(sys.executable),
        ARCHIVED,
        module_name="unusual_prefix_abc_mydag",
        qualname=qualname,
        kwargs=kwargs,
        context_file=context_file,
        workdir=workdir,
        env=env,
    )


def test_the_archived_helper_runs_not_the_current_one(context_file: Path, worker: tuple[Path, dict[str, str]]) -> None:
    assert _run("task", context_file, worker, x=7) == 14
    workdir, _ = worker
    assert (workdir / "restored_code" / "helpers.py").read_text() == "def double(x):\n    return 2 * x\n"


def test_a_function_nested_in_a_dag_function_runs_in_the_archived_module(
    context_file: Path, worker: tuple[Path, dict[str, str]]
) -> None:
    result = _run("pipeline.<locals>.nested", context_file, worker, x=4)
    assert result == {"value": 8, "seed": 5, "module": "unusual_prefix_abc_mydag"}


def test_a_failing_archived_function_raises_task_process_error(
    context_file: Path, worker: tuple[Path, dict[str, str]], capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(
        TaskProcessError,
        match=rf"failing failed running its archived code \(restored from snapshot {ARCHIVED.digest}\) with exit code 1",
    ):
        _run("failing", context_file, worker, x=1)
    traceback = capfd.readouterr().err
    assert "ValueError: archived failure" in traceback
    assert '<archived mydag.py: failing>", line 2, in failing' in traceback
    assert 'raise ValueError("archived failure")' in traceback or "raise ValueError('archived failure')" in traceback


def test_a_stale_module_of_an_earlier_restore_is_cleared(
    context_file: Path, worker: tuple[Path, dict[str, str]]
) -> None:
    workdir, _ = worker
    stale = workdir / "restored_code" / "stale.py"
    stale.parent.mkdir(parents=True)
    stale.write_text("")
    assert _run("task", context_file, worker, x=1) == 2
    assert not stale.exists()


@pytest.mark.parametrize("path", ["../evil.py", "/tmp/evil.py", "a/../../evil.py"])
def test_materialize_refuses_paths_outside_the_folder(tmp_path: Path, path: str) -> None:
    # model_construct skips validation, as a hand-made or older object could.
    snapshot = CodeSnapshot.model_construct(dag_file="d.py", files={"d.py": "", path: "BAD = 1\n"})
    with pytest.raises(ManifestError, match="refusing to restore"):
        materialize_snapshot(snapshot, tmp_path / "code")
    assert not (tmp_path / "evil.py").exists() and not (tmp_path / "code" / "d.py").exists()


def test_materialize_refuses_a_symlink_out_of_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "code"
    folder.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (folder / "pkg").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    snapshot = CodeSnapshot(dag_file="d.py", files={"d.py": "", "pkg/m.py": ""})
    with pytest.raises(ManifestError, match="outside"):
        materialize_snapshot(snapshot, folder)


def test_materialize_writes_the_files_exactly(tmp_path: Path) -> None:
    snapshot = CodeSnapshot(dag_file="d.py", files={"d.py": "x = 1\r\n", "pkg/sub/m.py": "é\n"})
    folder = materialize_snapshot(snapshot, tmp_path / "code")
    assert (folder / "d.py").read_bytes() == b"x = 1\r\n"
    assert (folder / "pkg" / "sub" / "m.py").read_text(encoding="utf-8") == "é\n"


def test_the_launcher_puts_the_code_then_the_runtime_first_on_the_path(tmp_path: Path) -> None:
    script = restored_launcher_script(
        code_dir=tmp_path / "code",
        dag_file="mydag.py",
        module_name="m",
        qualname="a.<locals>.f",
        function_source="def f():\n    return 1\n",
        kwargs_file=tmp_path / "k.json",
        return_file=tmp_path / "r.json",
        runtime_path=tmp_path / "shim",
    )
    assert f"sys.path[:0] = {[str(tmp_path / 'code'), str(tmp_path / 'shim')]!r}\n" in script
    assert "_function = _module.__dict__['f']\n" in script
    compile(script, "restored_main.py", "exec")
