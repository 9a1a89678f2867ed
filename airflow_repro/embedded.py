"""The embedded stack: a real, local Airflow (api-server, scheduler with LocalExecutor,
dag-processor) on SQLite, an MLflow tracking server on SQLite, and the embedded data store, all
in one folder. Used by ``make demo``, the benchmarks and the end-to-end tests; no Docker needed.
Airflow's metadata DB can be any database Airflow supports instead (``metadata_db``, e.g. a
PostgreSQL URL); the stack migrates it but does not create or start it.

Authentication is Airflow's SimpleAuthManager. By default (``all_admins=True``, what ``make demo``
and the tests use) every visitor is an admin, signed in without credentials
(``simple_auth_manager_all_admins``): development only. With ``all_admins=False`` (what
``airflow-repro standalone`` runs) there is one user, ``admin``, whose password is generated on the
first start into :attr:`EmbeddedStack.passwords_file` (owner-only) and kept there; anonymous API
calls then get 401.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from airflow_repro.errors import ReproInfraError, ReproUserError

TERMINAL_STATES = {"success", "failed"}
#: The one user (role admin) of a stack with authentication on (``all_admins=False``).
ADMIN_USER = "admin"
#: What SimpleAuthManager draws its generated passwords from (no look-alike characters).
_PASSWORD_ALPHABET = "abcdefghkmnpqrstuvwxyzABCDEFGHKMNPQRSTUVWXYZ23456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@dataclass
class Service:
    """A process started in its own process group, so stopping it stops its children too."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def spawn(cls, name: str, command: list[str], *, env: Mapping[str, str], cwd: Path, log_path: Path) -> Service:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            process = subprocess.Popen(
                command,
                env=dict(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=cwd,
            )
        return cls(name, process, log_path)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise ReproInfraError(
                f"{self.name} exited with code {self.process.returncode}; its log ends with:\n{self.log_tail()}"
            )

    def stop(self, grace_s: float = 15) -> None:
        """SIGTERM the group, then SIGKILL whatever is left (workers may outlive their parent), and
        wait (a few seconds at most) until no process of the group is left."""
        _signal_group(self.process, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace_s)
        _signal_group(self.process, signal.SIGKILL)
        self.process.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.05)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def wait_until_healthy(url: str, services: list[Service], deadline: float) -> None:
    """Poll ``url`` until it answers 200, failing fast if a service died meanwhile."""
    while time.monotonic() < deadline:
        for service in services:
            service.check_alive()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    tails = "\n".join(f"--- {s.name} ---\n{s.log_tail()}" for s in services)
    raise ReproInfraError(f"{url} did not become healthy in time:\n{tails}")


def mlflow_server_command(folder: Path, port: int) -> list[str]:
    """A real MLflow tracking server: SQLite store and proxied artifacts, both in ``folder``."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination",
        str(folder / "mlartifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]


@contextlib.contextmanager
def running_mlflow_server(folder: Path, *, startup_timeout: float = 180) -> Iterator[str]:
    """Start an MLflow server with its data in ``folder``; yield its URL; stop it on exit."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    service = Service.spawn(
        "mlflow", mlflow_server_command(folder, port), env=os.environ, cwd=folder, log_path=folder / "mlflow-server.log"
    )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}/health", [service], time.monotonic() + startup_timeout)
        yield f"http://127.0.0.1:{port}"
    finally:
        service.stop()


@dataclass
class EmbeddedStack:
    """Start with :meth:`start` (or as a context manager); everything lives under ``home``."""

    home: Path
    dags_folder: Path
    api_port: int = field(default_factory=free_port)
    mlflow_port: int = field(default_factory=free_port)
    parallelism: int = 4
    extra_env: Mapping[str, str] = field(default_factory=dict)
    with_mlflow: bool = True
    # SQLAlchemy URL of Airflow's metadata DB, e.g. "postgresql+psycopg2://user@host:5432/airflow"
    # (Airflow derives the async URL, asyncpg for PostgreSQL). None: SQLite in ``airflow_home``.
    metadata_db: str | None = None
    # True: every visitor is an admin, no login (development only: the demo, the tests). False: the
    # user ADMIN_USER with the password in ``passwords_file``; anonymous API calls get 401.
    all_admins: bool = True
    services: list[Service] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def repro_home(self) -> Path:
        return self.home / "repro"

    @property
    def passwords_file(self) -> Path:
        """SimpleAuthManager's passwords (``{"admin": "..."}``), where Airflow itself looks by default."""
        return self.airflow_home / "simple_auth_manager_passwords.json.generated"

    @property
    def openlineage_events(self) -> Path:
        """Where the OpenLineage file transport writes, unless a transport is configured."""
        return self.repro_home / "openlineage" / "events.jsonl"

    def env(self) -> dict[str, str]:
        """The environment of every service (and of a CLI talking to this stack)."""
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            **self.settings_env(),
        }
        env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC", None)  # Airflow derives it from SQL_ALCHEMY_CONN
        env.update(self.extra_env)
        return env

    def settings_env(self) -> dict[str, str]:
        """The variables this stack sets itself: what a process needs to work with it (its Airflow
        home and metadata DB, the ``[repro]`` settings, MLflow, the OpenLineage transport)."""
        env = {
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.metadata_db or f"sqlite:///{self.airflow_home / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": str(self.all_admins),  # True: development only
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__REPRO__HOME": str(self.repro_home),
        }
        if self.with_mlflow:
            env["AIRFLOW__REPRO__MLFLOW_TRACKING_URI"] = self.mlflow_url
        if not os.environ.get("AIRFLOW__OPENLINEAGE__TRANSPORT"):
            # Lineage works out of the box: events land in a JSON Lines file that
            # `airflow-repro lineage` reads; a real consumer (Marquez) is set the same way.
            env["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps(
                {"type": "file", "log_file_path": str(self.openlineage_events), "append": True}
            )
            if not os.environ.get("AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD"):
                env["AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD"] = "True"
        return env

    # -- authentication ------------------------------------------------------------------------
    def admin_password(self) -> str:
        """The password of ADMIN_USER: the one in ``passwords_file``, else a new one written there
        (owner-only) before the API server starts. SimpleAuthManager keeps passwords it finds."""
        existing = self._stored_passwords()
        if ADMIN_USER in existing:
            return existing[ADMIN_USER]
        password = "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(16))
        self.passwords_file.parent.mkdir(parents=True, exist_ok=True)
        temp = self.passwords_file.with_name(self.passwords_file.name + ".tmp")
        descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(json.dumps({**existing, ADMIN_USER: password}) + "\n")
        os.replace(temp, self.passwords_file)
        return password

    def _stored_passwords(self) -> dict[str, str]:
        try:
            text = self.passwords_file.read_text().strip()
        except FileNotFoundError:
            return {}
        try:
            stored = json.loads(text or "{}")
        except json.JSONDecodeError as exc:
            raise ReproUserError(
                f"{self.passwords_file} is not JSON ({exc}); remove it to generate a new password"
            ) from None
        if not isinstance(stored, dict) or not all(isinstance(v, str) for v in stored.values()):
            raise ReproUserError(f"{self.passwords_file} is not a JSON object of passwords; remove it")
        return {str(k): v for k, v in stored.items()}

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 240) -> EmbeddedStack:
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        self.openlineage_events.parent.mkdir(parents=True, exist_ok=True)
        if not self.all_admins:
            self.admin_password()  # written before the API server reads it
        if self.with_mlflow:  # the slowest to start: launch it first, migrate Airflow meanwhile
            self.repro_home.mkdir(parents=True, exist_ok=True)
            self._spawn("mlflow", mlflow_server_command(self.repro_home, self.mlflow_port))
        self._migrate()
        self._spawn("api-server", [_bin("airflow"), "api-server", "--port", str(self.api_port), "--host", "127.0.0.1"])
        self._spawn("scheduler", [_bin("airflow"), "scheduler"])
        self._spawn("dag-processor", [_bin("airflow"), "dag-processor"])
        deadline = time.monotonic() + timeout
        wait_until_healthy(f"{self.api_url}/api/v2/monitor/health", self.services, deadline)
        if self.with_mlflow:
            wait_until_healthy(f"{self.mlflow_url}/health", self.services, deadline)
        return self

    def stop(self) -> None:
        for service in reversed(self.services):
            _signal_group(service.process, signal.SIGTERM)
        for service in reversed(self.services):
            service.stop()
        self.services.clear()

    def kill(self) -> None:
        """SIGKILL every service's process group at once (a second interrupt while stopping)."""
        for service in self.services:
            _signal_group(service.process, signal.SIGKILL)

    def __enter__(self) -> EmbeddedStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _migrate(self) -> None:
        log = self.home / "logs" / "db-migrate.log"
        with open(log, "wb") as out:
            result = subprocess.run(
                [_bin("airflow"), "db", "migrate"], env=self.env(), stdout=out, stderr=subprocess.STDOUT, check=False
            )
        if result.returncode != 0:
            raise ReproInfraError(f"'airflow db migrate' failed; see {log}")

    def _spawn(self, name: str, command: list[str]) -> None:
        self.services.append(
            Service.spawn(name, command, env=self.env(), cwd=self.home, log_path=self.home / "logs" / f"{name}.log")
        )

    def check_alive(self) -> None:
        """Raise :class:`ReproInfraError` (with its log's tail) if a service has exited."""
        for service in self.services:
            service.check_alive()

    # -- the Airflow REST API ------------------------------------------------------------------
    @contextlib.contextmanager
    def client(self) -> Iterator[httpx.Client]:
        """The REST API (``/api/v2``) as the admin: a token without credentials when every user is
        an admin, else ADMIN_USER's login (``POST /auth/token``, as the UI's login page does)."""
        if self.all_admins:
            response = httpx.get(f"{self.api_url}/auth/token", timeout=30)
        else:
            credentials = {"username": ADMIN_USER, "password": self.admin_password()}
            response = httpx.post(f"{self.api_url}/auth/token", json=credentials, timeout=30)
        response.raise_for_status()
        token = response.json()["access_token"]
        with httpx.Client(
            base_url=f"{self.api_url}/api/v2", timeout=30, headers={"Authorization": f"Bearer {token}"}
        ) as client:
            yield client

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        with self.client() as api:
            while time.monotonic() < deadline:
                self.check_alive()
                response = api.get(f"/dags/{dag_id}")
                if response.status_code == 200:
                    if response.json().get("is_paused"):
                        api.patch(f"/dags/{dag_id}", json={"is_paused": False}).raise_for_status()
                    return
                time.sleep(1)
            errors = api.get("/importErrors").json()
        raise ReproInfraError(f"DAG {dag_id} was not parsed in time; import errors: {errors}")

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, run_id: str | None = None) -> str:
        body: dict[str, Any] = {"logical_date": None, "conf": dict(conf or {})}
        if run_id:
            body["dag_run_id"] = run_id
        with self.client() as api:
            response = api.post(f"/dags/{dag_id}/dagRuns", json=body)
            response.raise_for_status()
            return str(response.json()["dag_run_id"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 900) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.client() as api:
            while time.monotonic() < deadline:
                self.check_alive()
                run = api.get(f"/dags/{dag_id}/dagRuns/{run_id}").json()
                if run.get("state") in TERMINAL_STATES:
                    return dict(run)
                time.sleep(0.5)
        raise ReproInfraError(f"run {run_id} of {dag_id} did not finish in {timeout:.0f} s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        with self.client() as api:
            response = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
            response.raise_for_status()
            return list(response.json()["task_instances"])
