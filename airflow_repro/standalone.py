"""``airflow-repro standalone``: the embedded stack on your own DAG folder, until interrupted.

The same stack as ``make demo`` (:class:`airflow_repro.embedded.EmbeddedStack`: api-server,
scheduler with LocalExecutor, dag-processor, an MLflow server, the embedded store, OpenLineage
events to a file), all in one home folder (default ``./.airflow-repro``), with real
authentication: SimpleAuthManager's user ``admin`` and a password generated on the first start
(kept, owner-only, in the home), unless ``--no-auth`` lets every visitor in as an admin.

It writes the stack's settings to ``<home>/stack.json`` (read by the ``airflow-repro`` CLI, see
:func:`airflow_repro.config.find_stack_settings`) and ``<home>/stack.env`` (``source`` it for
``airflow`` commands). Ctrl-C or SIGTERM stops every service (a second one kills them at once).
Bad input (a DAGs folder that is not one, a port in use, a home that holds something else, a stack
already running there) is refused before anything starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from airflow_repro.config import STACK_ENV_VAR, STACK_FILE, STACK_HOME, STACK_KIND
from airflow_repro.embedded import ADMIN_USER, EmbeddedStack
from airflow_repro.errors import ReproUserError

DEFAULT_PORT = 8080
SHELL_FILE = "stack.env"
#: What a stack's home holds (also a ``make demo`` folder): anything else means another folder.
_STACK_ENTRIES = frozenset({"airflow", "repro", "logs", STACK_FILE, SHELL_FILE})


# -- checks before anything starts ---------------------------------------------------------------
def check_inputs(dags_folder: Path, home: Path, port: int) -> None:
    """Raise :class:`ReproUserError` naming the fix for a home or port the stack cannot use."""
    if home == dags_folder or home.is_relative_to(dags_folder):
        raise ReproUserError(
            f"the home {home} is inside the DAGs folder {dags_folder}: the DAG processor would parse its files; "
            "pass --home with a folder outside it"
        )
    _check_home(home)
    _check_port(port)


def _check_home(home: Path) -> None:
    if home.exists() and not home.is_dir():
        raise ReproUserError(f"--home {home} is not a folder; name a new or empty folder (or a stack's home)")
    try:
        entries = sorted(p.name for p in home.iterdir()) if home.exists() else []
    except OSError as exc:
        raise ReproUserError(f"--home {home}: {exc.strerror or exc}; choose a folder you can write") from None
    others = [name for name in entries if name not in _STACK_ENTRIES]
    if others:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise ReproUserError(
            f"--home {home} holds other files ({shown}): it is not the home of an airflow-repro stack; "
            "name a new or empty folder"
        )
    running = _running_pid(home / STACK_FILE)
    if running is not None:
        raise ReproUserError(
            f"a stack is already running on {home} (pid {running}); stop it first (Ctrl-C where it runs, or "
            f"kill -TERM {running}), or pass another --home"
        )


def _running_pid(settings_file: Path) -> int | None:
    """The pid of the standalone process a settings file names, if that process still runs."""
    try:
        pid = int(json.loads(settings_file.read_text()).get("pid"))
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    with contextlib.suppress(OSError):  # a reused pid: another program now (empty: still starting)
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
        if command_line and b"standalone" not in command_line:
            return None
    return pid


def _check_port(port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ReproUserError(
                f"port {port} on 127.0.0.1 is in use ({exc.strerror or exc}); pass another --port"
            ) from None


# -- running -------------------------------------------------------------------------------------
def run(dags_folder: Path, home: Path, port: int, *, auth: bool, out: TextIO, err: TextIO) -> None:
    """Start the stack, say where it is, and keep it up until SIGINT/SIGTERM; then stop it all."""
    check_inputs(dags_folder, home, port)
    stack = EmbeddedStack(home=home, dags_folder=dags_folder, api_port=port, all_admins=not auth)
    with _signals_stop(stack):
        try:
            _say(err, f"starting Airflow 3 (api-server, scheduler, dag-processor) and MLflow in {home} ...")
            started = time.monotonic()
            stack.start()
            write_settings(stack)
            _announce(stack, out, err, seconds=time.monotonic() - started)
            while True:  # until interrupted, or a service dies (its log's tail is the error)
                stack.check_alive()
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            _kill_on_signal(stack)  # from here on, a signal kills at once: nothing interrupts the stop
            _say(err, "stopping every service ...")
            stack.stop()
    _say(err, "stopped")


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _signals_stop(stack: EmbeddedStack) -> Iterator[None]:
    """SIGINT (Ctrl-C) and SIGTERM stop the stack, SIGINT also where it came in ignored (a
    background job of a script), as servers do; a second signal kills every service at once."""

    def interrupt(signum: int, frame: Any) -> None:
        _kill_on_signal(stack)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _kill_on_signal(stack: EmbeddedStack) -> None:
    for sig in _SIGNALS:
        signal.signal(sig, lambda signum, frame: stack.kill())


def write_settings(stack: EmbeddedStack) -> Path:
    """``<home>/stack.json`` for the CLI and ``<home>/stack.env`` for shells, each written atomically."""
    document = {
        "kind": STACK_KIND,
        "version": 1,
        "home": str(stack.home),
        "dags_folder": str(stack.dags_folder),
        "api_url": stack.api_url,
        "mlflow_url": stack.mlflow_url,
        "auth": not stack.all_admins,
        "passwords_file": None if stack.all_admins else str(stack.passwords_file),
        "openlineage_events": str(stack.openlineage_events),
        "pid": os.getpid(),
        "services": {service.name: service.process.pid for service in stack.services},
        "env": stack.settings_env(),
    }
    path = stack.home / STACK_FILE
    _write_atomically(path, json.dumps(document, indent=2, sort_keys=True) + "\n")
    lines = [f"# The settings of the airflow-repro stack in {stack.home}: 'source' this file for airflow commands."]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(stack.settings_env().items())]
    _write_atomically(stack.home / SHELL_FILE, "\n".join(lines) + "\n")
    return path


def _write_atomically(path: Path, text: str) -> None:
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(text)
    os.replace(temp, path)


def _announce(stack: EmbeddedStack, out: TextIO, err: TextIO, *, seconds: float) -> None:
    settings = stack.home / STACK_FILE
    if stack.all_admins:
        login = "none: --no-auth, every visitor is an admin"
        _say(
            err,
            f"WARNING: authentication is OFF (--no-auth): anyone who can reach {stack.api_url} is an admin "
            "and can trigger, replay and delete runs. Development only.",
        )
    else:
        login = f"{ADMIN_USER} / {stack.admin_password()}   (kept in {stack.passwords_file})"
    try:
        found_here = settings.parent == Path.cwd() / STACK_HOME
    except OSError:
        found_here = False
    where = (
        f"airflow-repro commands run in {settings.parent.parent} find them"
        if found_here
        else f"for airflow-repro commands: export {STACK_ENV_VAR}={settings}"
    )
    rows = [
        ("Airflow UI", stack.api_url),
        ("login", login),
        ("MLflow UI", stack.mlflow_url),
        ("DAGs folder", str(stack.dags_folder)),
        ("home", f"{stack.home}   (logs in {stack.home / 'logs'})"),
        ("lineage events", str(stack.openlineage_events)),
        ("settings", f"{settings}   ({where}; AIRFLOW_HOME unset)"),
        ("for airflow", f"source {stack.home / SHELL_FILE}"),
    ]
    text = "\n".join(f"  {label:<15}{value}" for label, value in rows)
    _say(out, f"airflow-repro standalone is up after {seconds:.0f} s:\n{text}\nCtrl-C stops every service.")


def _say(stream: TextIO, text: str) -> None:
    stream.write(text + "\n")
    stream.flush()


def default_home() -> Path:
    """``./.airflow-repro`` in the current folder."""
    return Path.cwd() / STACK_HOME


__all__ = ["DEFAULT_PORT", "SHELL_FILE", "check_inputs", "default_home", "run", "write_settings"]
