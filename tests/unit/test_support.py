"""The test support package: spec lookups that fail under CI, and imports without side effects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import specs
from tests.support.openlineage import require_specs

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_a_missing_spec_skips_saying_what_is_missing_outside_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="OpenLineage JSON Schemas are not at"):
        require_specs(tmp_path / "shared" / "specs" / "openlineage")
    assert specs.lakefs_swagger(tmp_path / "repo") is None
    specs.spec_missing("swagger.yml")  # returns: the lakeFS double then runs unvalidated, with a warning


@pytest.mark.parametrize("value", ["true", "1", "yes"])
def test_under_ci_a_missing_spec_fails_saying_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CI", value)
    missing = tmp_path / "shared" / "specs" / "openlineage"
    with pytest.raises(pytest.fail.Exception, match=f"CI is set.*OpenLineage JSON Schemas are not at {missing}"):
        require_specs(missing)
    assert specs.lakefs_swagger(tmp_path / "repo") is None
    with pytest.raises(pytest.fail.Exception, match="CI is set.*swagger.yml"):
        specs.spec_missing("../shared/specs/lakefs/swagger.yml")


@pytest.mark.parametrize("value", ["", "0", "false"])
def test_ci_set_to_empty_or_false_is_not_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    assert not specs.in_ci()


def test_a_present_spec_is_returned_under_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    spec = tmp_path / "shared" / "specs" / "lakefs" / "swagger.yml"
    spec.parent.mkdir(parents=True)
    spec.write_text("openapi: 3.0.0\n")
    assert specs.lakefs_swagger(tmp_path / "repo") == spec
    assert specs.require_spec(spec, "unused") == spec


def test_importing_the_support_package_changes_no_environment_and_writes_nothing() -> None:
    modules = sorted(p.stem for p in (REPO_ROOT / "tests" / "support").glob("*.py") if p.stem != "__init__")
    code = (
        "import importlib, json, os, sys\n"
        "before = dict(os.environ)\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module('tests.support.' + name)\n"
        "from tests.support import airflow_session\n"
        "print(json.dumps({'changed': sorted(set(os.environ.items()) ^ set(before.items())),\n"
        "                  'home': airflow_session.SESSION_HOME.exists(),\n"
        "                  'airflow': 'airflow' in sys.modules}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"changed": [], "home": False, "airflow": False}
