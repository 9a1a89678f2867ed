"""A throwaway PostgreSQL server for tests: a real ``postgres`` from the installed binaries.

``initdb`` a fresh cluster in a temporary folder, start it on a free loopback port (trust auth:
it lives only for the test session), hand out databases, stop it and delete it at the end.
As root it runs as the ``postgres`` OS user, since postgres refuses to run as root.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from airflow_repro.embedded import free_port

INSTALL_HINT = "install PostgreSQL: apt-get update && apt-get install -y postgresql (Debian/Ubuntu)"
OS_USER = "postgres"
SUPERUSER = "postgres"


class PostgresUnavailable(Exception):
    """No PostgreSQL server binaries here (or no OS user to run them as root)."""


def find_bin_dir() -> Path:
    """The folder holding ``initdb``/``pg_ctl``: from PATH, else the newest /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    candidates = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if (Path(p) / "initdb").exists()]
    if not candidates:
        raise PostgresUnavailable(f"no initdb on PATH or in /usr/lib/postgresql/*/bin; {INSTALL_HINT}")
    return max(candidates, key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)] or [0])


@dataclass
class PostgresServer:
    bin_dir: Path
    folder: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def log_path(self) -> Path:
        return self.folder / "postgres.log"

    def url(self, database: str, driver: str = "psycopg2") -> str:
        return f"postgresql+{driver}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its SQLAlchemy URL (psycopg2 driver)."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, name)
        return self.url(name)

    def start(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=200"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-o", options, "-w", "-t", "60", "start"
        )

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended); kill it if that does not work."""
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "30", "stop", check=False)
        with contextlib.suppress(OSError, ValueError, IndexError):
            os.kill(int(pid_file.read_text().splitlines()[0]), signal.SIGQUIT)  # still there: immediate shutdown

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        command = [*_as_os_user(), str(self.bin_dir / tool), *args]
        result = subprocess.run(command, cwd=self.folder, capture_output=True, text=True, timeout=120, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
                f"\n--- server log ---\n{self.log_tail()}"
            )


def _as_os_user() -> list[str]:
    return ["runuser", "-u", OS_USER, "--"] if os.geteuid() == 0 else []


@contextlib.contextmanager
def running_postgres(attempts: int = 3) -> Iterator[PostgresServer]:
    """Start a throwaway cluster; yield it; stop it and delete its folder on exit, even on failure."""
    bin_dir = find_bin_dir()
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(OS_USER)
        except KeyError:
            raise PostgresUnavailable(f"running as root and there is no {OS_USER!r} OS user; {INSTALL_HINT}") from None
    folder = Path(tempfile.mkdtemp(prefix="repro-postgres-"))
    server = None
    try:
        if owner is not None:
            os.chown(folder, owner.pw_uid, owner.pw_gid)
        for attempt in range(attempts):  # the free port may be taken before postgres binds it
            server = PostgresServer(bin_dir=bin_dir, folder=folder, port=free_port())
            try:
                server.start()
                break
            except (RuntimeError, subprocess.TimeoutExpired):
                server.stop()
                if attempt + 1 == attempts:
                    raise
                shutil.rmtree(server.data_dir, ignore_errors=True)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
