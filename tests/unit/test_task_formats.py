"""The formats that cross a process boundary: one owner each, writer and reader agree (round
trips), the documented names are the ones written, and the runtime ships with what it imports."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_repro import probes, runtime
from airflow_repro.adapters import k8s_podspec as podspec
from airflow_repro.adapters.local_venv import launcher_script
from airflow_repro.core.manifest import AirflowIdentity
from airflow_repro.core.replay import REPLAY_CONF_KEY, REPLAY_PLAN_PATH, ReplayMarker
from airflow_repro.errors import ManifestError
from airflow_repro.task_formats import POD_ENV, ContextFile, PinnedInput, PodEnv, PodReport
from tests.support.kubernetes import documented_pod_variables

REPO_ROOT = Path(__file__).resolve().parents[2]
RAW = PinnedInput(
    name="raw", path=Path("/w/inputs/raw/raw.csv"), repository="repro", commit_id="c" * 64, store_path="raw/raw.csv"
)


def full_pod_env() -> PodEnv:
    """Every field the operator sets (it leaves ``output_dir`` to the pod's own scratch folder)."""
    return PodEnv(
        task="d.t",
        seed=42,
        inputs={"raw": RAW},
        declared_outputs=("model.pt", "plots/"),
        output_uri="file:///w/outputs",
        output_repository="repro",
        output_branch="run_d_x",
        params={"lr": 0.1},
        kwargs={"epochs": 3},
        metrics_file="/w/metrics.json",
        mlflow_run_id="abc",
        mlflow_tracking_uri="http://mlflow:5000",
        report_file=podspec.TERMINATION_MESSAGE_PATH,
        transfer_file=podspec.TRANSFER_FILE,  # the presigned transport's (it leaves output_uri unset)
    )


# -- round trips --------------------------------------------------------------------------------------
def test_the_context_file_round_trips(tmp_path: Path) -> None:
    context = ContextFile(
        task="d.t",
        seed=7,
        output_dir=tmp_path / "out",
        declared_outputs=("a.txt", "b/"),
        inputs={"raw": RAW},
        params={"alpha": 1, "nested": {"x": [1, 2]}},
        metrics_file=tmp_path / "metrics.json",
    )
    context.write(tmp_path / "context.json")
    assert ContextFile.read(tmp_path / "context.json") == context
    assert ContextFile.from_json(json.loads(json.dumps(context.to_json()))) == context
    ctx = runtime.TaskContext.from_file(tmp_path / "context.json")
    assert ctx.input("raw") == RAW and ctx.params == context.params and ctx.declared_outputs == ("a.txt", "b/")


def test_the_pod_environment_round_trips() -> None:
    env = full_pod_env()
    assert PodEnv.from_env(env.to_env()) == env
    assert PodEnv.from_env(PodEnv(task="d.t").to_env()) == PodEnv(task="d.t")
    ctx = runtime.TaskContext.from_env(env.to_env())
    assert ctx.input("raw") == RAW and ctx.seed == 42 and ctx.output_branch == "run_d_x"
    assert ctx.metrics_file == Path("/w/metrics.json") and ctx.mlflow_tracking_uri == "http://mlflow:5000"


def test_a_malformed_pod_environment_is_a_runtime_context_error() -> None:
    for broken in (
        {"AIRFLOW_REPRO_TASK": "d.t", "AIRFLOW_REPRO_INPUTS": "[]"},
        {"AIRFLOW_REPRO_TASK": "d.t", "AIRFLOW_REPRO_PARAMS": "[1]"},
        {"AIRFLOW_REPRO_TASK": "d.t", "AIRFLOW_REPRO_SEED": "x"},
        {"AIRFLOW_REPRO_SEED": "1"},
    ):
        with pytest.raises(runtime.RuntimeContextError, match="ReproKubernetesPodOperator"):
            runtime.TaskContext.from_env(broken)


def test_the_pod_report_round_trips_and_reads_leniently() -> None:
    report = PodReport(
        outputs=2,
        metrics={"acc": 0.9},
        python="CPython 3.11.9",
        hostname="h",
        platform="Linux",
        machine="x86_64",
        cpu_count=8,
        memory_bytes=2**34,
        gpus=({"name": "NVIDIA H100 80GB HBM3", "driver": "550", "memory": "81559 MiB", "uuid": "G"},),
        libraries={"torch": "2.5.1"},
    )
    assert PodReport.from_message(report.to_message()) == report
    assert PodReport.from_message(json.dumps({"kind": runtime.REPORT_KIND, "outputs": 2})) == PodReport(outputs=2)
    assert PodReport.from_message(json.dumps({"kind": "other", "outputs": 2})) is None
    assert PodReport.from_message("not json") is None and PodReport.from_message(None) is None
    odd = PodReport.from_message(json.dumps({"kind": runtime.REPORT_KIND, "outputs": "2", "cpu_count": True}))
    assert odd == PodReport()


def test_the_replay_marker_round_trips() -> None:
    marker = ReplayMarker(of="manual__1", mode="pinned", plan_digest="sha256:" + "a" * 64, repository="repro")
    conf = marker.add_to({"lr": 0.1})
    assert conf[REPLAY_CONF_KEY] == {
        "of": "manual__1",
        "mode": "pinned",
        "plan": REPLAY_PLAN_PATH,
        "plan_digest": "sha256:" + "a" * 64,
        "repository": "repro",
    }
    assert ReplayMarker.from_conf(conf) == marker
    assert ReplayMarker.strip(conf) == {"lr": 0.1}
    assert ReplayMarker.from_conf({"lr": 0.1}) is None and ReplayMarker.from_conf(None) is None
    without_repository = ReplayMarker(of="r", mode="latest-code", plan_digest="d")
    assert "repository" not in without_repository.to_conf()
    assert ReplayMarker.from_conf(without_repository.add_to({})) == without_repository
    with pytest.raises(ManifestError, match="not a replay marker"):
        ReplayMarker.from_conf({REPLAY_CONF_KEY: "replay!"})


# -- documented names are the written ones --------------------------------------------------------------
def test_the_documented_pod_variables_are_the_ones_written() -> None:
    pins = podspec.PodPins(
        identity=AirflowIdentity(dag_id="d", run_id="r", task_id="t", try_number=1),
        env=full_pod_env(),
        manifest_path="_repro/manifests/t.json",
        environment_digest="sha256:x",
    )
    written = {variable["name"] for variable in podspec.pin_env(pins)}
    assert documented_pod_variables() == written - {"PYTHONHASHSEED"}
    # the runtime's table: what it reads; the operator leaves only the pod-local output folder unset
    assert list(POD_ENV) == list(runtime.POD_ENV) and set(POD_ENV) - written == {"AIRFLOW_REPRO_OUTPUT_DIR"}
    assert {name for name in written if name.startswith("AIRFLOW_REPRO_")} <= set(POD_ENV)


# -- the runtime ships with what it imports ---------------------------------------------------------------
def _package_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module == "airflow_repro":  # from airflow_repro import x
            found.update(f"airflow_repro.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return {name for name in found if name.split(".")[0] == "airflow_repro"}


def test_the_runtime_files_import_only_each_other_and_the_standard_library() -> None:
    shipped = {f"airflow_repro.{name.removesuffix('.py')}" for name in runtime.RUNTIME_FILES} - {
        "airflow_repro.__init__"
    }
    for name in runtime.RUNTIME_FILES:
        if name == "__init__.py":
            continue  # imports its names lazily, on first use
        imported = _package_imports(REPO_ROOT / "airflow_repro" / name) - {"airflow_repro"}
        assert imported <= shipped, (name, imported - shipped)
        tree = ast.parse((REPO_ROOT / "airflow_repro" / name).read_text())
        top = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        top |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert top - {"airflow_repro", "__future__"} <= set(sys.stdlib_module_names), (name, top)


def test_the_image_copies_every_runtime_file() -> None:
    dockerfile = (REPO_ROOT / "images" / "train-gpu" / "Dockerfile").read_text()
    copy = re.search(r"^COPY (.+?) /opt/airflow-repro/airflow_repro/", dockerfile.replace("\\\n", " "), re.M)
    assert copy is not None
    assert sorted(Path(p).name for p in copy.group(1).split()) == sorted(runtime.RUNTIME_FILES)
    ignore = (REPO_ROOT / "images" / "train-gpu" / "Dockerfile.dockerignore").read_text().split()
    assert {f"!airflow_repro/{name}" for name in runtime.RUNTIME_FILES} <= set(ignore)


# -- one launcher for a task's own process ----------------------------------------------------------------
def _task(params: dict, greeting: str, repro: object = None) -> dict:
    import random

    return {"params": params, "greeting": greeting, "seed_draw": random.random(), "task": repro.task}


def test_a_task_process_runs_the_runtimes_launcher(tmp_path: Path) -> None:
    """A lockfile virtualenv runs what a pod runs: the same program, params and context injected."""
    in_a_pod = launcher_script(_task)
    assert in_a_pod.startswith("from airflow_repro import runtime\n") and in_a_pod.endswith(
        "runtime.run_callable(_task)\n"
    )
    site = runtime.install_runtime(tmp_path / "site")
    context = ContextFile(
        task="d.t", seed=3, output_dir=tmp_path / "out", declared_outputs=(), inputs={}, params={"alpha": 1}
    )
    context.write(tmp_path / "context.json")
    (tmp_path / "kwargs.json").write_text(json.dumps({"greeting": "hi"}))
    script = launcher_script(
        _task, runtime_path=site, kwargs_file=tmp_path / "kwargs.json", return_file=tmp_path / "result.json"
    )
    done = subprocess.run(
        [sys.executable, "-S", "-c", script],
        env={runtime.CONTEXT_ENV: str(tmp_path / "context.json")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    import random

    random.seed(3)
    assert json.loads((tmp_path / "result.json").read_text()) == {
        "params": {"alpha": 1},
        "greeting": "hi",
        "seed_draw": random.random(),
        "task": "d.t",
    }


# -- one probe ------------------------------------------------------------------------------------------
def test_nvidia_smi_rows_are_parsed_once_for_both_sides() -> None:
    out = "NVIDIA H100 80GB HBM3, 550.54.15, 81559 MiB, GPU-1\nbroken line\n"
    assert probes.parse_nvidia_smi(out) == [
        {"name": "NVIDIA H100 80GB HBM3", "driver": "550.54.15", "memory": "81559 MiB", "uuid": "GPU-1"}
    ]
    from airflow_repro.core import environment

    assert environment.KEY_LIBRARIES is probes.KEY_LIBRARIES
    assert environment.versions(None).libraries == runtime.hardware_report()["libraries"] == probes.library_versions()
