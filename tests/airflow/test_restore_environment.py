"""A pinned replay after the worker's packages changed rebuilds the recorded environment.

The worker here is this test process (``dag.test()``): a tiny package, ``reprotiny``, is made as
two local wheels and put on the path in version 1.0 for the recorded run, then swapped for 2.0.
The planner (a child process) sees it through ``PYTHONPATH``; the rebuild finds 1.0 with
``UV_FIND_LINKS`` (no registry) and everything else in uv's cache, as the lockfile venvs do.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_repro.airflow import replay as service
from airflow_repro.core.archive import load_archived
from airflow_repro.core.environment import clear_caches
from airflow_repro.core.environment_record import EnvironmentRecord
from airflow_repro.core.replay import DriftKind
from airflow_repro.core.runs import load_run
from airflow_repro.errors import ReplayRefused
from tests.support.airflow_session import DAGS_FOLDER, load_dag, run_replay
from tests.support.wheels import install_unpacked, make_wheel

pytestmark = [pytest.mark.usefixtures("repro_env"), pytest.mark.slow]

DAG_ID = "repro_env_restore"
ENV_DAG = f'''
from airflow.sdk import dag
from airflow_repro import repro_task, runtime

@dag(dag_id="{DAG_ID}", schedule=None)
def repro_env_restore():
    @repro_task(outputs=["version.txt"], seed=1)
    def stamp():
        import reprotiny
        runtime.current().output_path("version.txt").write_text(reprotiny.VERSION)
    stamp()

repro_env_restore()
'''


class Site:
    """A folder on this process's path (and the planner's ``PYTHONPATH``) holding one reprotiny."""

    def __init__(self, root: Path) -> None:
        self.wheels = root / "wheels"
        self.folder = root / "site"
        for version in ("1.0", "2.0"):
            make_wheel(self.wheels, "reprotiny", version, {"reprotiny/__init__.py": f'VERSION = "{version}"\n'})

    def install(self, version: str, *, editable_from: Path | None = None) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        install_unpacked(self.wheels / f"reprotiny-{version}-py3-none-any.whl", self.folder)
        if editable_from is not None:  # as pip/uv write it for `pip install -e`
            direct_url = {"url": editable_from.as_uri(), "dir_info": {"editable": True}}
            (self.folder / f"reprotiny-{version}.dist-info" / "direct_url.json").write_text(json.dumps(direct_url))
        sys.modules.pop("reprotiny", None)
        clear_caches()


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    site = Site(tmp_path)
    monkeypatch.syspath_prepend(str(site.folder))
    monkeypatch.setenv("PYTHONPATH", str(site.folder))
    monkeypatch.setenv("UV_FIND_LINKS", str(site.wheels))
    (DAGS_FOLDER / "repro_env_restore.py").write_text(ENV_DAG)
    yield site
    shutil.rmtree(site.folder, ignore_errors=True)
    sys.modules.pop("reprotiny", None)
    clear_caches()


def _record(site: Site, **install: object) -> tuple[service.Backends, str]:
    site.install("1.0", **install)  # type: ignore[arg-type]
    run = load_dag(DAG_ID, "repro_env_restore.py").test()
    assert run.state == "success"
    return service.Backends.from_airflow_conf(), run.run_id


def test_a_pinned_replay_rebuilds_the_recorded_environment(site: Site) -> None:
    backends, run_id = _record(site)
    recorded = load_run(backends.store, DAG_ID, run_id)
    (task,) = recorded.tasks
    pin = task.manifest.environment
    assert pin.kind == "fingerprint"
    record = EnvironmentRecord.from_json(load_archived(backends.store, recorded.repository, "environment", pin.digest))
    assert record.digest == pin.digest and ("reprotiny", "1.0") in {(d.name, d.version) for d in record.distributions}
    assert "airflow-repro" not in {d.name for d in record.distributions}, "a replay provides airflow-repro itself"

    site.install("2.0")  # the workers were upgraded
    plan = service.plan(backends, DAG_ID, run_id, "pinned")
    (drift,) = plan.drift
    assert drift.kind is DriftKind.ENVIRONMENT_CHANGED and drift.task_id == "stamp"
    assert drift.changes == ["reprotiny 1.0 -> 2.0"] and "reprotiny 1.0 -> 2.0" in drift.detail
    assert drift.restorable and "rebuilt from the recorded distributions" in (drift.restore_note or "")
    assert not plan.blocking_drift

    assert run_replay(load_dag(DAG_ID, "repro_env_restore.py"), plan, backends).state == "success"
    report = service.verify(backends, DAG_ID, plan.replay_run_id)
    assert report.verdict == "identical", report
    (replayed,) = load_run(backends.store, DAG_ID, plan.replay_run_id).tasks
    assert replayed.manifest.replay is not None and replayed.manifest.replay.environment == "restored"
    assert replayed.manifest.replay.code == "current"
    assert replayed.manifest.environment == pin, "the manifest records the environment the task ran in"

    # today's environment instead: the task sees reprotiny 2.0
    latest = service.plan(backends, DAG_ID, run_id, "latest-code")
    assert run_replay(load_dag(DAG_ID, "repro_env_restore.py"), latest, backends).state == "success"
    (differs,) = service.verify(backends, DAG_ID, latest.replay_run_id).tasks
    assert differs.status == "differs" and [o.path for o in differs.objects] == ["version.txt"]


def test_an_editable_install_cannot_be_rebuilt_and_is_refused_before_anything_runs(site: Site, tmp_path: Path) -> None:
    backends, run_id = _record(site, editable_from=tmp_path / "checkout")
    site.install("2.0")
    plan = service.plan(backends, DAG_ID, run_id, "pinned")
    (drift,) = plan.blocking_drift
    assert drift.kind is DriftKind.ENVIRONMENT_CHANGED and drift.restorable is False
    assert "reprotiny" in (drift.restore_note or "") and "editable" in (drift.restore_note or "")
    with pytest.raises(ReplayRefused, match="editable"):
        service.trigger(backends, plan, triggered_by="CLI", user="test")
    assert service.dag_run_state(DAG_ID, plan.replay_run_id) is None, "nothing was triggered"
    assert not service.plan(backends, DAG_ID, run_id, "latest-code").blocking_drift


LOCKFILE_DAG = """
from airflow.sdk import dag
from airflow_repro import repro_task, runtime

@dag(dag_id="repro_lockfile_restore", schedule=None)
def repro_lockfile_restore():
    @repro_task(outputs=["env.json"], lockfile="lockfiles/restore.lock", seed=3)
    def in_pinned_venv(greeting: str):
        import json
        import six

        with runtime.current().open_output("env.json", "w") as handle:
            json.dump({"six": six.__version__, "greeting": greeting + "{suffix}"}, handle)

    in_pinned_venv(greeting="hello")

repro_lockfile_restore()
"""


def _write_lockfile_dag(six_version: str, suffix: str) -> None:
    (DAGS_FOLDER / "lockfiles").mkdir(exist_ok=True)
    (DAGS_FOLDER / "lockfiles" / "restore.lock").write_text(f"six=={six_version}\n")
    (DAGS_FOLDER / "repro_lockfile_restore.py").write_text(LOCKFILE_DAG.replace("{suffix}", suffix))


def test_a_lockfile_task_is_replayed_from_its_archived_lockfile_and_code(repro_env: dict[str, str]) -> None:
    """The lockfile and the function were both edited: the replay builds the venv from the archived
    lockfile and runs the archived function in it (the current lockfile is never built)."""
    _write_lockfile_dag("1.16.0", "!")
    dag = load_dag("repro_lockfile_restore", "repro_lockfile_restore.py")
    original = dag.test()
    assert original.state == "success"
    backends = service.Backends.from_airflow_conf()

    _write_lockfile_dag("1.17.0", "?")
    plan = service.plan(backends, dag.dag_id, original.run_id, "pinned")
    kinds = {d.kind: d for d in plan.drift}
    assert set(kinds) == {DriftKind.CODE_CHANGED, DriftKind.ENVIRONMENT_CHANGED} and not plan.blocking_drift
    assert "recorded lockfile" in (kinds[DriftKind.ENVIRONMENT_CHANGED].restore_note or "")
    assert '-            json.dump({"six": six.__version__, "greeting": greeting + "!"}' in (
        kinds[DriftKind.CODE_CHANGED].diff or ""
    )
    replayed = run_replay(load_dag(dag.dag_id, "repro_lockfile_restore.py"), plan, backends)
    assert replayed.state == "success"
    assert service.verify(backends, dag.dag_id, plan.replay_run_id).verdict == "identical"
    (task,) = load_run(backends.store, dag.dag_id, plan.replay_run_id).tasks
    with backends.store.open_object("repro", task.commit_id, "env.json") as handle:
        assert json.load(handle) == {"six": "1.16.0", "greeting": "hello!"}
    assert task.manifest.replay is not None
    assert (task.manifest.replay.code, task.manifest.replay.environment) == ("restored", "restored")
