"""Rebuilding a recorded environment with uv, for real, from wheels made on the spot (no network)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest

import airflow_repro
from airflow_repro.adapters.environment_builder import (
    RECORD_MARKER,
    ensure_environment,
    environment_folder,
    installability_problems,
)
from airflow_repro.core.environment_record import Distribution, DistributionSource, EnvironmentRecord
from airflow_repro.errors import EnvironmentNotPinnedError
from airflow_repro.probes import python_version
from tests.support.wheels import make_wheel

pytestmark = pytest.mark.slow

PACKAGE = Path(airflow_repro.__file__).resolve().parent


@pytest.fixture
def wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """reprotiny 1.0 and 2.0 in a find-links folder; uv offline, with a cache of its own."""
    folder = tmp_path / "wheels"
    for version in ("1.0", "2.0"):
        make_wheel(folder, "reprotiny", version, {"reprotiny/__init__.py": f'VERSION = "{version}"\n'})
    monkeypatch.setenv("UV_FIND_LINKS", str(folder))
    monkeypatch.setenv("UV_OFFLINE", "1")
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    return folder


def record_of(*distributions: Distribution) -> EnvironmentRecord:
    """A record of this interpreter and platform holding ``distributions``."""
    return EnvironmentRecord(
        python=python_version(),
        python_version=platform.python_version(),
        platform=sys.platform,
        machine=platform.machine(),
        distributions=list(distributions),
    )


def reprotiny(version: str) -> EnvironmentRecord:
    return record_of(Distribution(name="reprotiny", version=version))


def imported_in(python: Path, cwd: Path) -> list[str]:
    """reprotiny's VERSION and where airflow_repro is imported from, as ``python`` sees them."""
    code = "import reprotiny, airflow_repro, airflow_repro.runtime; print(reprotiny.VERSION); print(airflow_repro.__file__)"
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(cwd)}
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=cwd, env=env, check=True)
    return out.stdout.split()


def leftovers(cache_root: Path) -> list[str]:
    return sorted(p.name for p in cache_root.iterdir() if not p.name.endswith(".lock"))


def test_a_record_is_rebuilt_once_and_then_reused(wheels: Path, tmp_path: Path) -> None:
    cache_root = tmp_path / "envs"
    record = reprotiny("1.0")

    python = ensure_environment(record, cache_root)

    folder = environment_folder(record, cache_root)
    assert python == folder / "bin" / "python"
    assert folder.name == "env-" + record.digest.removeprefix("sha256:")[:24]
    assert EnvironmentRecord.from_json((folder / RECORD_MARKER).read_bytes()) == record
    version, repro_file = imported_in(python, tmp_path)
    assert version == "1.0"
    assert Path(repro_file).resolve().parent == PACKAGE

    before = folder.stat()
    started = time.perf_counter()
    assert ensure_environment(record, cache_root) == python
    assert time.perf_counter() - started < 0.5
    after = folder.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert leftovers(cache_root) == [folder.name]


def test_a_missing_version_fails_naming_it_and_leaves_nothing_behind(wheels: Path, tmp_path: Path) -> None:
    cache_root = tmp_path / "envs"

    with pytest.raises(EnvironmentNotPinnedError, match=r"uv pip sync failed: .*reprotiny==3.0"):
        ensure_environment(reprotiny("3.0"), cache_root)

    assert leftovers(cache_root) == []


def test_a_half_built_folder_is_rebuilt(wheels: Path, tmp_path: Path) -> None:
    cache_root = tmp_path / "envs"
    record = reprotiny("2.0")
    half_built = environment_folder(record, cache_root)
    (half_built / "bin").mkdir(parents=True)
    (half_built / "bin" / "python").write_text("not an interpreter")

    python = ensure_environment(record, cache_root)

    assert imported_in(python, tmp_path)[0] == "2.0"
    assert (half_built / RECORD_MARKER).exists()


def test_a_link_to_another_airflow_repro_is_replaced(wheels: Path, tmp_path: Path) -> None:
    cache_root = tmp_path / "envs"
    record = reprotiny("1.0")
    python = ensure_environment(record, cache_root)
    link = next(environment_folder(record, cache_root).glob("lib/python*/site-packages/airflow_repro"))
    elsewhere = tmp_path / "old-checkout" / "airflow_repro"
    elsewhere.mkdir(parents=True)
    link.unlink()
    link.symlink_to(elsewhere, target_is_directory=True)

    assert ensure_environment(record, cache_root) == python

    assert link.resolve() == PACKAGE
    assert [p.name for p in link.parent.glob(".airflow_repro.*")] == []


def test_installability_is_checked_without_building(wheels: Path, tmp_path: Path) -> None:
    assert installability_problems(reprotiny("1.0")) == []

    problems = installability_problems(reprotiny("3.0"))

    assert len(problems) == 1
    assert "reprotiny" in problems[0]


def test_editable_installs_and_other_platforms_are_reported(wheels: Path, tmp_path: Path) -> None:
    editable = Distribution(
        name="mypkg", version="0.3", source=DistributionSource(kind="editable", url="file:///src/mypkg")
    )
    record = record_of(editable, Distribution(name="reprotiny", version="1.0"))
    elsewhere = record.model_copy(update={"machine": "elsewhere64"})

    assert installability_problems(record) == [
        "mypkg 0.3 is an editable install from file:///src/mypkg: a replay cannot rebuild it; "
        "install it from an index or a VCS URL"
    ]
    assert f"recorded on {sys.platform}/elsewhere64, this machine is {sys.platform}/{platform.machine()}" in (
        installability_problems(elsewhere)
    )
    with pytest.raises(EnvironmentNotPinnedError, match="mypkg 0.3 is an editable install"):
        ensure_environment(record, tmp_path / "envs")
    assert not (tmp_path / "envs").exists()


def test_processes_that_need_the_same_environment_at_once_share_one_build(wheels: Path, tmp_path: Path) -> None:
    cache_root = tmp_path / "envs"
    record_file = tmp_path / "record.json"
    record_file.write_bytes(reprotiny("2.0").canonical_json())
    code = (
        "import sys; from pathlib import Path\n"
        "from airflow_repro.adapters.environment_builder import ensure_environment\n"
        "from airflow_repro.core.environment_record import EnvironmentRecord\n"
        "record = EnvironmentRecord.from_json(Path(sys.argv[1]).read_bytes())\n"
        "print(ensure_environment(record, Path(sys.argv[2])))\n"
    )
    command = [sys.executable, "-c", code, str(record_file), str(cache_root)]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = {process.communicate(timeout=120)[0].strip() for process in processes}

    assert [process.returncode for process in processes] == [0, 0, 0]
    assert len(outputs) == 1
    assert imported_in(Path(outputs.pop()), tmp_path)[0] == "2.0"
    assert leftovers(cache_root) == [environment_folder(reprotiny("2.0"), cache_root).name]
