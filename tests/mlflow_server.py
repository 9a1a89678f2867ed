"""Run a real ``mlflow server`` in a subprocess, for tests and demos.

The server uses a sqlite store and proxies artifacts to a local folder, both inside the folder
given, on a free port of 127.0.0.1, with one worker. Starting takes about 15-25 seconds. It runs
in its own process group so that stopping it also stops the workers it spawns.

Importable without pytest::

    with running_mlflow_server(Path("/tmp/demo")) as url:
        ...  # url is like "http://127.0.0.1:54321"

or ``python tests/mlflow_server.py /tmp/demo`` to keep one running until Ctrl+C.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STARTUP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
LOG_FILE_NAME = "mlflow-server.log"


class MlflowServerError(RuntimeError):
    """The MLflow server did not start; the message ends with its log."""


@contextmanager
def running_mlflow_server(
    folder: Path | str, *, port: int | None = None, startup_timeout: float = STARTUP_TIMEOUT_S
) -> Iterator[str]:
    """Start ``mlflow server`` with its data in ``folder``; yield its URL; stop it on exit."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port or free_port()}"
    log_path = folder / LOG_FILE_NAME
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            server_command(folder, url),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: see stop_server
            cwd=folder,  # anything MLflow writes relative to the CWD stays in the folder
        )
    try:
        wait_until_healthy(url, process, log_path, startup_timeout)
        yield url
    finally:
        stop_server(process)


def server_command(folder: Path, url: str) -> list[str]:
    port = url.rsplit(":", 1)[1]
    return [
        *_mlflow_executable(),
        "server",
        "--backend-store-uri",
        f"sqlite:///{folder / 'mlflow.db'}",  # an absolute path, so four slashes in all
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        port,
        "--workers",
        "1",
    ]


def _mlflow_executable() -> list[str]:
    """The ``mlflow`` script of this interpreter's environment, else ``python -m mlflow``."""
    script = Path(sys.executable).parent / "mlflow"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mlflow"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(
    url: str, process: subprocess.Popen, log_path: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise MlflowServerError(
                f"mlflow server exited with code {process.returncode}:\n{_tail(log_path)}"
            )
        if _is_healthy(url):
            return
        time.sleep(0.25)
    stop_server(process)
    raise MlflowServerError(f"mlflow server not healthy after {timeout:.0f}s:\n{_tail(log_path)}")


def _is_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def stop_server(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group, then SIGKILL what is left after a grace period."""
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pass
    # Workers may outlive the main process; the group id is still the server's pid.
    _signal_group(process, signal.SIGKILL)
    process.wait()


def _signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):  # the group is gone already
        pass


def _tail(log_path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "mlflow-demo")
    with running_mlflow_server(target) as server_url:
        print(f"MLflow at {server_url} (data in {target.resolve()}); Ctrl+C stops it", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
