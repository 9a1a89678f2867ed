"""``airflow-repro standalone``: the embedded stack on a DAG folder of one's own, in one command.

The end-to-end test starts it once, as a user would (a subprocess in a fresh folder, no Airflow
variable set), logs in with the password it printed, runs a DAG through the REST API, then runs
``show`` and ``replay --verify`` from that folder without any setting in the environment (they find
the stack's settings file), and stops it with SIGINT (Ctrl-C): every service's process is gone. The
other tests start no Airflow: SIGINT/SIGTERM on a stack of stand-in services, bad input refused before
anything starts, and the settings-file rule."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from click.testing import CliRunner

from airflow_repro.cli import EXIT_USER_ERROR, main
from airflow_repro.config import STACK_ENV_VAR, STACK_KIND, apply_stack_settings, find_stack_settings
from airflow_repro.embedded import free_port
from airflow_repro.errors import ConfigError

DAG_ID = "repro_standalone_pair"
DAG_SOURCE = f'''
from airflow.sdk import dag

from airflow_repro import Input, repro_task, runtime


@dag(dag_id="{DAG_ID}", schedule=None, catchup=False)
def repro_standalone_pair():
    @repro_task(outputs=["words.txt"], seed=5)
    def write():
        runtime.current().output_path("words.txt").write_text("reproducible pipelines\\n")

    @repro_task(inputs={{"words": Input("words.txt")}}, outputs=["shout.txt"], seed=5)
    def shout():
        ctx = runtime.current()
        ctx.output_path("shout.txt").write_text(ctx.input_path("words").read_text().upper())

    write() >> shout()


repro_standalone_pair()
'''


def _user_env() -> dict[str, str]:
    """The environment of a user who has set nothing for Airflow or airflow-repro."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and k != STACK_ENV_VAR}


def _wait_for(what: str, probe: Any, timeout: float, process: subprocess.Popen[str], log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"standalone exited ({process.returncode}) waiting for {what}:\n{_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):  # a service down: the standalone then exits, saying why
            found = probe()
            if found:
                return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}:\n{_tail(log)}")


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(nothing)"


def _status(url: str, **kwargs: Any) -> int | None:
    try:
        return httpx.get(url, timeout=5, **kwargs).status_code
    except httpx.HTTPError:
        return None


def _group_members(groups: set[int]) -> list[psutil.Process]:
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) in groups and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """``airflow-repro standalone --dags-folder dags --port N`` started in ``tmp_path``; killed
    (with every service) if the test does not stop it."""
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "pair.py").write_text(DAG_SOURCE)
    port = free_port()
    out, err = tmp_path / "standalone.out", tmp_path / "standalone.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow_repro.cli", "standalone", "--dags-folder", "dags", "--port", str(port)],
            cwd=tmp_path,
            env=_user_env(),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
    state: dict[str, Any] = {"process": process, "out": out, "err": err, "cwd": tmp_path, "groups": set()}
    try:
        yield state
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        for group in state["groups"]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        process.wait(timeout=60)


@pytest.mark.e2e
def test_standalone_runs_your_dags_with_a_login_and_the_cli_finds_it(standalone: dict[str, Any]) -> None:
    process, out, err, cwd = (standalone[k] for k in ("process", "out", "err", "cwd"))
    banner = _wait_for("the banner", lambda: "Ctrl-C stops" in out.read_text() and out.read_text(), 300, process, err)
    url = re.search(r"Airflow UI\s+(http://\S+)", banner)
    login = re.search(r"login\s+admin / (\S+)", banner)
    assert url and login, banner
    url, password = url[1], login[1]
    settings = json.loads((cwd / ".airflow-repro" / "stack.json").read_text())
    assert settings["kind"] == STACK_KIND and settings["auth"] is True
    standalone["groups"].update(settings["services"].values())  # each service leads its process group
    assert set(settings["services"]) == {"mlflow", "api-server", "scheduler", "dag-processor"}
    assert (cwd / ".airflow-repro" / "stack.env").is_file()
    assert os.stat(settings["passwords_file"]).st_mode & 0o077 == 0, "the password file is the owner's only"

    # real authentication: anonymous calls are refused, the printed login works
    assert _status(f"{url}/api/v2/monitor/health") == 200
    assert _status(f"{url}/api/v2/dags") == 401
    assert httpx.post(f"{url}/auth/token", json={"username": "admin", "password": "wrong"}).status_code == 401
    token = httpx.post(f"{url}/auth/token", json={"username": "admin", "password": password}, timeout=30)
    assert token.status_code == 201, token.text
    with httpx.Client(
        base_url=f"{url}/api/v2", headers={"Authorization": f"Bearer {token.json()['access_token']}"}, timeout=30
    ) as api:
        _wait_for("the DAG to be parsed", lambda: api.get(f"/dags/{DAG_ID}").status_code == 200, 180, process, err)
        triggered = api.post(f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "dag_run_id": "recorded"})
        assert triggered.status_code == 200, triggered.text

        def finished() -> str | None:
            run_state = api.get(f"/dags/{DAG_ID}/dagRuns/recorded").json().get("state")
            return run_state if run_state in ("success", "failed") else None

        assert _wait_for("the run", finished, 300, process, err) == "success", _tail(err)

    # the CLI, from the folder the stack was started in, with nothing set: it reads the settings file
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "airflow_repro.cli", *args],
            cwd=cwd,
            env=_user_env(),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    shown = cli("show", DAG_ID, "recorded", "--json")
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert [t["manifest"]["identity"]["task_id"] for t in json.loads(shown.stdout)["tasks"]] == ["write", "shout"]
    replay = cli("replay", DAG_ID, "recorded", "--verify", "--json")
    assert replay.returncode == 0, f"{replay.stderr[-3000:]}\n{_tail(err)}"
    report = json.loads(replay.stdout)
    assert report["verdict"] == "identical" and report["original_run_id"] == "recorded"
    assert [t["status"] for t in report["tasks"]] == ["identical", "identical"]

    # Ctrl-C (SIGINT) stops every service and their children (LocalExecutor workers, MLflow's workers)
    groups = standalone["groups"]
    members = _group_members(groups)
    assert {p.pid for p in members} >= groups, "every service was running"
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 0, _tail(err)
    assert "stopped" in err.read_text()
    assert _group_members(groups) == [], "no process of a service outlives the stack"
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in members)


# -- no Airflow started ----------------------------------------------------------------------------
# standalone.run with the stack's services replaced by one that starts a child in its process group
# (as the scheduler starts LocalExecutor workers); argv: dags, home, port, "stubborn" or not.
STAND_IN_STACK = """
import sys
from pathlib import Path

from airflow_repro import embedded, standalone

CHILD = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])"
STUBBORN = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " if sys.argv[4] == "stubborn" else ""


def start(self, timeout=240):
    (self.home / "logs").mkdir(parents=True, exist_ok=True)
    self.admin_password()
    self._spawn("service", [sys.executable, "-c", STUBBORN + CHILD + "; time.sleep(600)"])
    return self


embedded.EmbeddedStack.start = start
standalone.run(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), auth=True, out=sys.stdout, err=sys.stderr)
"""


@pytest.mark.parametrize(
    ("signals", "stubborn"),
    [((signal.SIGINT,), False), ((signal.SIGTERM,), False), ((signal.SIGTERM, signal.SIGINT), True)],
    ids=["ctrl-c", "sigterm", "a-second-signal-kills-at-once"],
)
def test_a_signal_stops_every_service_and_its_children(
    tmp_path: Path, signals: tuple[signal.Signals, ...], stubborn: bool
) -> None:
    (tmp_path / "dags").mkdir()
    home, out, err = tmp_path / "home", tmp_path / "out", tmp_path / "err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", STAND_IN_STACK, str(tmp_path / "dags"), str(home), str(free_port())]
            + ["stubborn" if stubborn else "-"],
            env=_user_env(),
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        _wait_for("the banner", lambda: "Ctrl-C stops" in out.read_text(), 60, process, err)
        (group,) = json.loads((home / "stack.json").read_text())["services"].values()
        _wait_for("the child", lambda: len(_group_members({group})) == 2, 30, process, err)
        started = time.monotonic()
        first, *more = signals
        process.send_signal(first)
        for sig in more:  # while it waits for the stubborn service's grace
            _wait_for("stopping", lambda: "stopping" in err.read_text(), 10, process, err)
            process.send_signal(sig)
        assert process.wait(timeout=60) == 0, _tail(err)
        assert time.monotonic() - started < 10, "the second signal did not wait for the 15 s grace"
        assert _group_members({group}) == [] and "stopped" in err.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


# -- nothing started -------------------------------------------------------------------------------
@pytest.fixture
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stack that would start fails the test at once (instead of running in pytest's process)."""

    def refuse(self: Any, timeout: float = 0) -> None:
        raise AssertionError("the stack was started")

    monkeypatch.setattr("airflow_repro.embedded.EmbeddedStack.start", refuse)


def _standalone(*args: str) -> Any:
    return CliRunner().invoke(main, ["standalone", *args])


@pytest.mark.usefixtures("nothing_starts")
def test_bad_input_is_refused_before_anything_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dags").mkdir()
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "notes.txt").write_text("mine")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = str(taken.getsockname()[1])
        cases = {
            ("--dags-folder", "missing"): "does not exist",
            ("--dags-folder", "a-file"): "is a file",
            ("--dags-folder", "dags", "--port", busy): f"port {busy} on 127.0.0.1 is in use",
            ("--dags-folder", "dags", "--port", "70000"): "70000",
            ("--dags-folder", "dags", "--home", "project"): "holds other files (notes.txt)",
            ("--dags-folder", "dags", "--home", "a-file"): "is a file",
            ("--dags-folder", "dags", "--home", "dags/.stack"): "inside the DAGs folder",
        }
        for args, message in cases.items():
            result = _standalone(*args)
            assert result.exit_code == EXIT_USER_ERROR, (args, result.output)
            assert message in result.output, (args, result.output)
            assert "Traceback" not in result.output
    assert not (tmp_path / ".airflow-repro").exists() and not (tmp_path / "dags" / ".stack").exists()
    assert sorted(p.name for p in (tmp_path / "project").iterdir()) == ["notes.txt"]


@pytest.mark.usefixtures("nothing_starts")
def test_a_running_stack_on_the_same_home_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dags").mkdir()
    (tmp_path / ".airflow-repro").mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "standalone"])
    try:
        (tmp_path / ".airflow-repro" / "stack.json").write_text(
            json.dumps({"kind": STACK_KIND, "pid": sleeper.pid, "env": {}})
        )
        result = _standalone("--dags-folder", "dags", "--port", str(free_port()))
        assert result.exit_code == EXIT_USER_ERROR and f"already running on {tmp_path}" in result.output
    finally:
        sleeper.kill()
        sleeper.wait()


def _stack_file(folder: Path, **env: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "stack.json"
    path.write_text(json.dumps({"kind": STACK_KIND, "version": 1, "env": env}))
    return path


def test_the_cli_reads_a_stack_settings_file_by_one_rule(tmp_path: Path) -> None:
    here = _stack_file(tmp_path / ".airflow-repro", AIRFLOW_HOME="/here/airflow", AIRFLOW__REPRO__HOME="/here/repro")
    named = _stack_file(tmp_path / "elsewhere", AIRFLOW_HOME="/elsewhere/airflow")
    # AIRFLOW_HOME set: that Airflow is the user's, nothing is looked up
    assert find_stack_settings({"AIRFLOW_HOME": "/mine", STACK_ENV_VAR: str(named)}, tmp_path) is None
    # AIRFLOW_REPRO_STACK names the file, or the home holding it; before the current folder's
    assert find_stack_settings({STACK_ENV_VAR: str(named)}, tmp_path) == named
    assert find_stack_settings({STACK_ENV_VAR: str(named.parent)}, tmp_path) == named
    with pytest.raises(ConfigError, match=STACK_ENV_VAR):
        find_stack_settings({STACK_ENV_VAR: str(tmp_path / "nothing")}, tmp_path)
    # else ./.airflow-repro/stack.json of the current folder, else nothing
    assert find_stack_settings({}, tmp_path) == here
    assert find_stack_settings({}, tmp_path / "elsewhere") is None
    # a variable the user set is never overridden
    env = {"AIRFLOW__REPRO__HOME": "/mine/repro"}
    assert apply_stack_settings(env, tmp_path) == here
    assert env == {"AIRFLOW__REPRO__HOME": "/mine/repro", "AIRFLOW_HOME": "/here/airflow"}
    # a file that is not a stack's is a clear error, not a guess
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "stack.json").write_text('{"env": {}}')
    with pytest.raises(ConfigError, match="not a settings file"):
        apply_stack_settings({STACK_ENV_VAR: str(tmp_path / "bad")}, tmp_path)


def test_a_cli_command_runs_with_the_stack_settings_and_gives_the_environment_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stack_file(
        tmp_path / ".airflow-repro",
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__REPRO__HOME=str(tmp_path / "no-store-here"),
    )
    # a real process (Airflow reads its home when first imported), nothing set, in that folder
    done = subprocess.run(
        [sys.executable, "-m", "airflow_repro.cli", "show", "dag", "run"],
        cwd=tmp_path,
        env=_user_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == EXIT_USER_ERROR and str(tmp_path / "no-store-here") in done.stderr, done.stderr
    # in process, the variables it set are gone once the command is done
    for name in [n for n in os.environ if n.startswith("AIRFLOW")] + [STACK_ENV_VAR]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(main, ["schema", "--out", str(tmp_path / "schemas")]).exit_code == 0
    assert not [n for n in os.environ if n.startswith("AIRFLOW")]
