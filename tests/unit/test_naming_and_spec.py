"""Names follow lakeFS's rules; task declarations are validated at DAG parse time."""

from __future__ import annotations

import pytest

from airflow_repro.core.manifest import Resources
from airflow_repro.core.naming import (
    BRANCH_RE,
    run_branch_name,
    run_tag_name,
    validate_branch_name,
    validate_ref,
    validate_repository_name,
    validate_tag_name,
)
from airflow_repro.core.spec import Input, TaskSpec
from airflow_repro.errors import InvalidNameError, ReproUserError


@pytest.mark.parametrize(
    "run_id",
    [
        "manual__2026-01-01T00:00:00+00:00",
        "scheduled__2026-01-01T00:00:00.123456+00:00",
        "replay/of:x",
        "ümlaut run",
        "a" * 400,
    ],
)
def test_run_branch_names_are_valid_lakefs_branches(run_id: str) -> None:
    name = run_branch_name("my.dag", run_id)
    assert BRANCH_RE.match(name) and len(name) <= 255
    validate_branch_name(name)
    validate_tag_name(run_tag_name("my.dag", run_id))


def test_run_branch_names_stay_unique_when_slugs_collide() -> None:
    a = run_branch_name("dag", "manual__2026-01-01T00:00:00+00:00")
    b = run_branch_name("dag", "manual__2026-01-01T00-00-00-00-00")
    assert a != b


@pytest.mark.parametrize("bad", ["a/b", "a.b", "a:b", "a+b", "", "-x"])
def test_bad_branch_names_rejected(bad: str) -> None:
    with pytest.raises(InvalidNameError, match="branch"):
        validate_branch_name(bad)


@pytest.mark.parametrize("bad", ["AB", "ab", "a_b", "-ab", "x" * 64])
def test_bad_repository_names_rejected(bad: str) -> None:
    with pytest.raises(InvalidNameError, match="repository"):
        validate_repository_name(bad)


@pytest.mark.parametrize("bad", ["a..b", "with space", "~x", "x/../y"])
def test_malformed_refs_rejected(bad: str) -> None:
    with pytest.raises(InvalidNameError, match="malformed ref"):
        validate_ref(bad)


def test_ref_forms_accepted() -> None:
    for ref in ("main", "v1.0", "0" * 64, "run_x-1"):
        assert validate_ref(ref) == ref


@pytest.mark.parametrize("path", ["/abs", "a/../b", "a//b", "", "_repro/manifest.json", "a\\b", "./a"])
def test_bad_input_paths(path: str) -> None:
    with pytest.raises(InvalidNameError, match="task t: input 'x': invalid input path"):
        TaskSpec(task_id="t", inputs={"x": Input(path)})


def test_task_spec_validation_names_the_task() -> None:
    with pytest.raises(ReproUserError, match="train.*seed"):
        TaskSpec(task_id="train", seed=-1)
    with pytest.raises(ReproUserError, match="train.*memory"):
        TaskSpec(task_id="train", resources=Resources(memory="lots"))
    with pytest.raises(ReproUserError, match="train.*input 'x'"):
        TaskSpec(task_id="train", inputs={"x": "data.csv"})  # type: ignore[dict-item]
    with pytest.raises(InvalidNameError, match="output of task train"):
        TaskSpec(task_id="train", outputs=("../escape",))
    spec = TaskSpec(task_id="ok", inputs={"a": Input("x.csv", ref="main")}, outputs=("out/",), seed=0)
    assert spec.outputs == ("out/",)
