"""The restore walk-through, on the real embedded stack (api-server, scheduler with LocalExecutor: a
process per task, dag-processor, MLflow server), started once.

A run is recorded; then the DAG file is edited and the workers' ``reprotiny`` goes from 1.0 to 2.0.
A pinned replay restores both (the archived code, in an environment rebuilt from the record with
uv) and verifies IDENTICAL; a latest-code replay runs today's code and environment and differs.

``reprotiny`` is made on the spot as two local wheels; 1.0 is unpacked into a "site" folder on the
stack's ``PYTHONPATH``. Each task runs in a fresh process, so swapping that folder's contents
changes the workers' environment without restarting anything. The rebuild finds reprotiny 1.0
through ``UV_FIND_LINKS`` and the other distributions in uv's (warm, default) cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.core.runs import load_run
from airflow_repro.embedded import EmbeddedStack
from tests.support.wheels import install_unpacked, make_wheel

pytestmark = pytest.mark.e2e

DAG_ID = "repro_restore_walkthrough"
DAG_FILE = "restore_walkthrough.py"
GREETING_LINE = 'GREETING = "hello from the recorded code"'
EDITED_LINE = 'GREETING = "hello from the edited code"'
DAG_SOURCE = f'''
from airflow.sdk import dag

from airflow_repro import Input, repro_task, runtime

{GREETING_LINE}


@dag(dag_id="{DAG_ID}", schedule=None, catchup=False)
def repro_restore_walkthrough():
    @repro_task(outputs=["stamp.txt"], seed=1)
    def stamp():
        import reprotiny

        runtime.current().output_path("stamp.txt").write_text(f"{{GREETING}} (reprotiny {{reprotiny.VERSION}})\\n")

    @repro_task(inputs={{"stamp": Input("stamp.txt")}}, outputs=["shout.txt"], seed=1)
    def shout():
        ctx = runtime.current()
        ctx.output_path("shout.txt").write_text(ctx.input_path("stamp").read_text().upper())

    stamp() >> shout()


repro_restore_walkthrough()
'''


def _install(site: Path, wheels: Path, version: str) -> None:
    """Replace the site folder's reprotiny (package and dist-info) with ``version``."""
    for old in [site / "reprotiny", *site.glob("reprotiny-*.dist-info")]:
        shutil.rmtree(old)
    install_unpacked(wheels / f"reprotiny-{version}-py3-none-any.whl", site)


def _cli(stack: EmbeddedStack, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airflow_repro.cli", *arguments],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_a_pinned_replay_restores_edited_code_and_a_changed_package(tmp_path: Path) -> None:
    wheels, site, dags = tmp_path / "wheels", tmp_path / "site", tmp_path / "dags"
    for version in ("1.0", "2.0"):
        make_wheel(wheels, "reprotiny", version, {"reprotiny/__init__.py": f'VERSION = "{version}"\n'})
    install_unpacked(wheels / "reprotiny-1.0-py3-none-any.whl", site)
    dags.mkdir()
    dag_file = dags / DAG_FILE
    dag_file.write_text(DAG_SOURCE)

    stack = EmbeddedStack(
        home=tmp_path / "stack",
        dags_folder=dags,
        extra_env={
            "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
            "UV_FIND_LINKS": str(wheels),
        },
    )
    with stack:
        stack.wait_for_dag(DAG_ID)
        run_id = stack.trigger(DAG_ID, run_id="recorded")
        assert stack.wait_for_run(DAG_ID, run_id)["state"] == "success", f"logs in {stack.home / 'logs'}"

        # the code is edited and the workers' reprotiny upgraded. The planner and every worker parse
        # the file themselves, so nothing waits for the dag-processor's next parse.
        dag_file.write_text(DAG_SOURCE.replace(GREETING_LINE, EDITED_LINE))
        _install(site, wheels, "2.0")

        pinned = _cli(stack, "replay", DAG_ID, run_id, "--verify")
        latest = _cli(stack, "replay", DAG_ID, run_id, "--mode", "latest-code", "--verify", "--json")

    logs = f"logs in {stack.home / 'logs'}"
    assert pinned.returncode == 0, f"{pinned.stdout[-3000:]}\n{pinned.stderr[-3000:]}\n{logs}"
    assert re.search(r"verify \S+ against recorded: IDENTICAL", pinned.stdout), pinned.stdout
    assert "drift (restored): [code_changed] stamp:" in pinned.stderr, pinned.stderr
    assert f"+{EDITED_LINE}" in pinned.stderr and f"-{GREETING_LINE}" in pinned.stderr, pinned.stderr
    assert re.search(r"drift \(restored\): \[environment_changed\] stamp: .*reprotiny 1\.0 -> 2\.0", pinned.stderr)
    assert "    reprotiny 1.0 -> 2.0" in pinned.stderr, pinned.stderr
    assert "refused" not in pinned.stderr

    store = LocalStore(stack.repro_home / "store")
    original = load_run(store, DAG_ID, run_id)
    replay_id = re.search(r"triggered replay (\S+) of recorded", pinned.stdout + pinned.stderr)
    assert replay_id is not None, pinned.stdout
    replayed = load_run(store, DAG_ID, replay_id[1])
    assert [t.manifest.identity.task_id for t in replayed.tasks] == ["stamp", "shout"]
    for task in replayed.tasks:
        assert task.manifest.replay is not None
        assert (task.manifest.replay.code, task.manifest.replay.environment) == ("restored", "restored")
    before = {o.path: o.content_hash for t in original.tasks for o in t.manifest.outputs}
    after = {o.path: o.content_hash for t in replayed.tasks for o in t.manifest.outputs}
    assert before == after and set(before) == {"stamp.txt", "shout.txt"}

    # latest-code: today's code and reprotiny 2.0, so stamp writes another text. shout's input is
    # pinned to the original run's stamp.txt (not to what this replay's stamp wrote), so shout
    # upper-cases the recorded text again and is identical.
    assert latest.returncode == 1, f"{latest.stdout[-3000:]}\n{latest.stderr[-3000:]}\n{logs}"
    assert "drift (accepted): [code_changed] stamp:" in latest.stderr, latest.stderr
    report = json.loads(latest.stdout)
    assert report["verdict"] == "differs"
    status = {t["task_id"]: t for t in report["tasks"]}
    assert status["stamp"]["status"] == "differs"
    assert [(o["path"], o["change"]) for o in status["stamp"]["objects"]] == [("stamp.txt", "changed")]
    assert status["shout"]["status"] == "identical" and status["shout"]["objects"] == []
