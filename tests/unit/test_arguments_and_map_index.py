"""Positional arguments across process boundaries, ``{map_index}`` outputs, the no-retry exit status,
and the messages of the small fixes of issue 12 (without Airflow)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_repro import runtime
from airflow_repro.adapters.code_restore import run_restored
from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.adapters.local_venv import launcher_script, run_in_venv
from airflow_repro.core.code_snapshot import CodeSnapshot
from airflow_repro.core.manifest import Parameters, load_task_manifest
from airflow_repro.core.naming import run_branch_name
from airflow_repro.core.recorder import TaskRecorder
from airflow_repro.core.spec import Input, TaskSpec
from airflow_repro.errors import (
    InvalidNameError,
    ObjectNotFound,
    ParamsNotSerializableError,
    ReproUserError,
    RuntimeContextError,
    StoreUnavailable,
    TaskProcessError,
)
from airflow_repro.task_formats import NO_RETRY_EXIT_CODE, CallArguments, ContextFile, PodEnv, PodReport
from tests.support.recording import environment, run_task

BRANCH = run_branch_name("dag", "manual__1")


# -- the formats ---------------------------------------------------------------------------------------
def test_call_arguments_round_trip_and_read_the_plain_kwargs_format(tmp_path: Path) -> None:
    arguments = CallArguments(args=({"rows": 3}, "x"), kwargs={"epochs": 2})
    arguments.write(tmp_path / "a.json")
    assert json.loads((tmp_path / "a.json").read_text()) == {"args": [{"rows": 3}, "x"], "kwargs": {"epochs": 2}}
    assert CallArguments.read(tmp_path / "a.json") == arguments
    assert CallArguments.from_json({"greeting": "hi"}) == CallArguments(kwargs={"greeting": "hi"})
    assert CallArguments.from_json({"args": 1, "kwargs": {}}) == CallArguments(kwargs={"args": 1, "kwargs": {}})
    with pytest.raises(TypeError):
        CallArguments.from_json([1, 2])


def test_pod_env_carries_positional_arguments_and_the_map_index() -> None:
    env = PodEnv(task="d.t", args=([1, 2], "x"), kwargs={"k": 1}, map_index=3)
    written = env.to_env()
    assert json.loads(written["AIRFLOW_REPRO_ARGS"]) == [[1, 2], "x"] and written["AIRFLOW_REPRO_MAP_INDEX"] == "3"
    assert PodEnv.from_env(written) == env
    assert PodEnv.from_env({"AIRFLOW_REPRO_TASK": "d.t"}) == PodEnv(task="d.t")
    assert PodEnv(task="d.t").map_index == -1 and PodEnv(task="d.t").args == ()
    ctx = runtime.TaskContext.from_env(written)
    assert ctx.map_index == 3 and ctx._pod is not None and ctx._pod.args == ([1, 2], "x")
    with pytest.raises(RuntimeContextError, match="malformed"):
        runtime.TaskContext.from_env({"AIRFLOW_REPRO_TASK": "d.t", "AIRFLOW_REPRO_ARGS": "{}"})


def test_the_context_file_carries_the_map_index(tmp_path: Path) -> None:
    context = ContextFile(
        task="d.t", seed=1, output_dir=tmp_path, declared_outputs=("s/2.txt",), inputs={}, map_index=2
    )
    assert ContextFile.from_json(json.loads(json.dumps(context.to_json()))) == context
    older = {k: v for k, v in context.to_json().items() if k != "map_index"}  # written before the field
    assert ContextFile.from_json(older).map_index == -1
    pod = PodEnv.for_context(context)
    assert pod.map_index == 2
    ctx = runtime.TaskContext.from_context_file(context)
    assert ctx.map_index == 2
    assert ctx.output_path("s/{map_index}.txt") == ctx.output_path("s/2.txt") == tmp_path / "s" / "2.txt"
    with pytest.raises(RuntimeContextError, match="did not declare output 's/1.txt'"):
        ctx.output_path("s/1.txt")


def test_the_pod_report_says_when_not_to_retry() -> None:
    report = PodReport(outputs=1, no_retry="RuntimeContextError: undeclared")
    assert PodReport.from_message(report.to_message()) == report
    huge = dataclasses.replace(report, libraries={f"lib{i}": "1.0" * 40 for i in range(100)})
    assert PodReport.from_message(huge.to_message()).no_retry == report.no_retry  # kept when cut to 4 KiB
    assert PodReport.from_message(PodReport().to_message()).no_retry is None


def test_a_manifest_without_positional_arguments_keeps_its_digest(tmp_path: Path) -> None:
    """``op_args`` came after 1.0: a manifest written before it reads back to the same bytes and digest."""
    recorder = TaskRecorder(
        LocalStore(tmp_path / "store"), None, default_repository="repro", default_branch="main", work_root=tmp_path
    )
    manifest = run_task(recorder, TaskSpec(task_id="t"), {}).manifest
    assert manifest.parameters.op_args is None and b"op_args" not in manifest.canonical_json()
    before = json.loads(manifest.canonical_json())  # as a 1.0 manifest is stored
    assert load_task_manifest(json.dumps(before), expected_digest=manifest.digest).canonical_json() == (
        manifest.canonical_json()
    )
    with_args = manifest.model_copy(update={"parameters": Parameters(op_args=[1, "x"])})
    assert json.loads(with_args.canonical_json())["parameters"]["op_args"] == [1, "x"]
    assert load_task_manifest(with_args.canonical_json()).parameters.op_args == [1, "x"]


# -- the task's own process ------------------------------------------------------------------------------
def _positional(numbers, offset, params=None, repro=None, scale=1):
    return {"total": (sum(numbers) + offset) * scale, "params": params, "task": repro.task}


def _takes_params_positionally(params, repro=None):
    return {"params": params}


def _misuses(name):
    from airflow_repro import runtime

    runtime.current().output_path(name)


def _fails(x):
    raise ValueError(f"ordinary failure {x}")


@pytest.fixture
def context_file(tmp_path: Path) -> Path:
    path = tmp_path / "context.json"
    ContextFile(
        task="d.t", seed=3, output_dir=tmp_path / "out", declared_outputs=("a.txt",), inputs={}, params={"alpha": 1}
    ).write(path)
    return path


def _launch(function: object, arguments: object, tmp_path: Path, context_file: Path) -> subprocess.CompletedProcess:
    site = runtime.install_runtime(tmp_path / "site")
    (tmp_path / "args.json").write_text(json.dumps(arguments))
    script = launcher_script(
        function,  # type: ignore[arg-type]
        runtime_path=site,
        kwargs_file=tmp_path / "args.json",
        return_file=tmp_path / "result.json",
    )
    return subprocess.run(
        [sys.executable, "-S", "-c", script],
        env={runtime.CONTEXT_ENV: str(context_file)},
        capture_output=True,
        text=True,
        check=False,
    )


def test_run_callable_passes_positional_arguments(tmp_path: Path, context_file: Path) -> None:
    done = _launch(_positional, {"args": [[1, 2], 3], "kwargs": {"scale": 2}}, tmp_path, context_file)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "result.json").read_text()) == {"total": 12, "params": {"alpha": 1}, "task": "d.t"}
    # an argument given positionally is never replaced by the injected params
    done = _launch(_takes_params_positionally, {"args": [{"mine": True}], "kwargs": {}}, tmp_path, context_file)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "result.json").read_text()) == {"params": {"mine": True}}
    # the older file: keyword arguments only
    done = _launch(_positional, {"numbers": [1], "offset": 1}, tmp_path, context_file)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "result.json").read_text())["total"] == 2


def test_run_callable_exits_with_the_no_retry_status_when_the_task_misuses_the_runtime(
    tmp_path: Path, context_file: Path
) -> None:
    done = _launch(_misuses, {"args": ["b.txt"], "kwargs": {}}, tmp_path, context_file)
    assert done.returncode == NO_RETRY_EXIT_CODE
    assert "RuntimeContextError" in done.stderr and "did not declare output 'b.txt'" in done.stderr
    done = _launch(_fails, {"args": [1], "kwargs": {}}, tmp_path, context_file)
    assert done.returncode == 1 and "ordinary failure 1" in done.stderr


def test_a_lockfile_task_gets_positional_arguments_and_its_misuse_is_final(tmp_path: Path, context_file: Path) -> None:
    python = Path(sys.executable)  # any interpreter: the runtime comes from the workspace's shim
    (tmp_path / "w1").mkdir()
    assert run_in_venv(python, _positional, {"scale": 3}, context_file, tmp_path / "w1", args=([1], 1)) == {
        "total": 6,
        "params": {"alpha": 1},
        "task": "d.t",
    }
    (tmp_path / "w2").mkdir()
    with pytest.raises(RuntimeContextError, match="_misuses misused the runtime in its pinned environment"):
        run_in_venv(python, _misuses, {}, context_file, tmp_path / "w2", args=("b.txt",))
    (tmp_path / "w3").mkdir()
    with pytest.raises(TaskProcessError, match="failed in its pinned environment") as failed:
        run_in_venv(python, _fails, {"x": 1}, context_file, tmp_path / "w3")
    assert not isinstance(failed.value, RuntimeContextError)


RESTORED_DAG = """\
def add(numbers, offset, scale=1):
    return (sum(numbers) + offset) * scale


def misuses(name):
    from airflow_repro import runtime

    runtime.current().output_path(name)
"""


def test_a_restored_run_gets_positional_arguments_and_its_misuse_is_final(tmp_path: Path, context_file: Path) -> None:
    snapshot = CodeSnapshot(dag_file="mydag.py", files={"mydag.py": RESTORED_DAG})
    common = {"module_name": "mydag", "context_file": context_file, "env": {"PYTHONPATH": ":".join(sys.path)}}
    total = run_restored(
        Path(sys.executable),
        snapshot,
        qualname="add",
        args=([1, 2], 3),
        kwargs={"scale": 2},
        workdir=tmp_path / "a",
        **common,
    )
    assert total == 12
    with pytest.raises(RuntimeContextError, match="misuses misused the runtime running its archived code"):
        run_restored(
            Path(sys.executable),
            snapshot,
            qualname="misuses",
            args=("b.txt",),
            kwargs={},
            workdir=tmp_path / "b",
            **common,
        )


# -- declarations ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["shards/{n}.csv", "shards/{map_index.csv", "a}b.txt", "{{map_index}}.txt"])
def test_only_the_map_index_placeholder_may_stand_in_an_output(path: str) -> None:
    with pytest.raises(InvalidNameError, match=r"the only placeholder an output path may hold is \{map_index\}"):
        TaskSpec(task_id="t", outputs=(path,))


def test_outputs_are_expanded_per_map_index() -> None:
    spec = TaskSpec(task_id="t", outputs=("shards/{map_index}.csv", "models/{map_index}/", "m{map_index}/x"))
    assert spec.for_map_index(3).outputs == ("shards/3.csv", "models/3/", "m3/x")
    assert TaskSpec(task_id="t", outputs=("a.txt",)).for_map_index(-1).outputs == ("a.txt",)
    assert TaskSpec(task_id="t").for_map_index(5).outputs == ()


def test_a_mapped_instance_without_the_placeholder_is_refused_with_the_fix() -> None:
    with pytest.raises(ReproUserError) as refused:
        TaskSpec(task_id="shard", outputs=("shard.txt",)).for_map_index(0)
    assert str(refused.value) == (
        "task shard is mapped: its map indexes would overwrite each other's 'shard.txt'; "
        "declare outputs=['shard/{map_index}.txt'] (or any path with {map_index})"
    )
    with pytest.raises(
        ReproUserError, match=r"'models/'; declare outputs=\['a/\{map_index\}', 'models/\{map_index\}/'\]"
    ):
        TaskSpec(task_id="t", outputs=("a/{map_index}", "models/")).for_map_index(1)
    with pytest.raises(ReproUserError, match=r"task t is not mapped, but its outputs 'a/\{map_index\}' hold"):
        TaskSpec(task_id="t", outputs=("a/{map_index}",)).for_map_index(-1)


def test_a_folder_input_is_refused_as_a_folder() -> None:
    with pytest.raises(InvalidNameError) as refused:
        TaskSpec(task_id="t", inputs={"m": Input("models/")})
    assert str(refused.value) == (
        "task t: input 'm': inputs are single objects; a folder ('models/') cannot be an input: "
        "declare each file, e.g. Input('models/model.pt')"
    )


# -- the recorder ----------------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def recorder(store: LocalStore, tmp_path: Path) -> TaskRecorder:
    return TaskRecorder(store, None, default_repository="repro", default_branch="main", work_root=tmp_path / "work")


def _mapped(task_id: str, map_index: int):
    env = environment(task_id)
    return dataclasses.replace(env, identity=env.identity.model_copy(update={"map_index": map_index}))


def test_the_recorder_lays_out_one_map_indexs_outputs(recorder: TaskRecorder, store: LocalStore) -> None:
    spec = TaskSpec(task_id="shard", outputs=("shards/{map_index}.txt",))
    for map_index in (0, 1):
        prepared = recorder.prepare(spec, _mapped("shard", map_index))
        assert prepared.spec.outputs == (f"shards/{map_index}.txt",)
        assert prepared.context.map_index == map_index
        assert runtime.TaskContext.from_file(prepared.context_file).map_index == map_index
        (prepared.output_dir / "shards").mkdir()
        (prepared.output_dir / "shards" / f"{map_index}.txt").write_text(str(map_index))
        recorded = recorder.finish(prepared)
        assert [o.path for o in recorded.manifest.outputs] == [f"shards/{map_index}.txt"]
    assert {o.path for o in store.list_objects("repro", BRANCH) if o.path.startswith("shards/")} == {
        "shards/0.txt",
        "shards/1.txt",
    }


def test_a_clashing_mapped_task_is_refused_before_anything_is_made(recorder: TaskRecorder, store: LocalStore) -> None:
    with pytest.raises(ReproUserError, match="task shard is mapped"):
        recorder.prepare(TaskSpec(task_id="shard", outputs=("shard.txt",)), _mapped("shard", 2))
    assert store.list_repositories() == []


def test_positional_arguments_must_be_json_to_be_recorded(recorder: TaskRecorder) -> None:
    with pytest.raises(ParamsNotSerializableError, match="task t: op_args cannot be recorded"):
        recorder.prepare(TaskSpec(task_id="t"), environment("t", op_args=[object()]))
    prepared = recorder.prepare(TaskSpec(task_id="t"), environment("t", op_args=[1, "x"]))
    assert list(prepared.env.task_args) == [1, "x"]
    assert list(dataclasses.replace(prepared.env, runtime_args=("real",)).task_args) == ["real"]


def test_a_missing_input_names_the_declared_ref_and_its_commit_once(recorder: TaskRecorder, store: LocalStore) -> None:
    with pytest.raises(ObjectNotFound) as missing:
        recorder.prepare(TaskSpec(task_id="t", inputs={"x": Input("nowhere/data.csv")}), environment("t"))
    commit = store.resolve_ref("repro", BRANCH)
    message = str(missing.value)
    assert message.count(commit) == 1, message
    assert f"at ref '{BRANCH}' (commit {commit})" in message
    assert message.startswith("task t: input 'x': path 'nowhere/data.csv' does not exist in repository 'repro'")
    with pytest.raises(ObjectNotFound) as missing:
        recorder.prepare(TaskSpec(task_id="t", inputs={"x": Input("nowhere.csv", ref="main")}), environment("t"))
    main = store.resolve_ref("repro", "main")
    assert f"at ref 'main' (commit {main})" in str(missing.value) and str(missing.value).count(main) == 1
    with pytest.raises(ObjectNotFound) as missing:
        recorder.prepare(TaskSpec(task_id="t", inputs={"x": Input("nowhere.csv", ref=main)}), environment("t"))
    assert f"at commit {main};" in str(missing.value) and str(missing.value).count(main) == 2  # and in list_objects()


# -- the Airflow shell's rules (imported without running Airflow) ---------------------------------------------
def test_a_declaration_error_names_the_task_once() -> None:
    from airflow_repro.airflow.record import naming_the_task

    assert str(naming_the_task("x", ReproUserError("task x: seed must be ..."))) == "task x: seed must be ..."
    assert str(naming_the_task("x", ReproUserError("invalid output of task x 'a'"))) == "invalid output of task x 'a'"
    assert str(naming_the_task("x", ValueError("bad"))) == "task x: bad"
    wrapped = naming_the_task("x", InvalidNameError("task xy: other task"))
    assert isinstance(wrapped, InvalidNameError) and str(wrapped) == "task x: task xy: other task"


def test_a_wrapped_final_error_is_final() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_repro.airflow.record import raise_if_final

    try:
        try:
            raise RuntimeContextError("undeclared output")
        except RuntimeContextError as exc:
            raise ValueError("the task wrapped it") from exc
    except ValueError as wrapped:
        with pytest.raises(AirflowFailException, match="the task wrapped it"):
            raise_if_final(wrapped)
    try:
        try:
            raise RuntimeContextError("undeclared output")
        except RuntimeContextError:
            raise OSError("disk full while handling it")  # noqa: B904 - implicit context: not the cause
    except OSError as unrelated:
        raise_if_final(unrelated)  # returns: Airflow may retry
    raise_if_final(ValueError("x"))
    raise_if_final(StoreUnavailable("down"))  # an infrastructure fault: Airflow may retry
