"""Official specs read from ``../shared/specs`` (beside the repository, never copied into it).

Without them the spec-validation tests skip (or the lakeFS double runs unvalidated, with a
warning) on a developer's machine; when the environment variable ``CI`` is set they fail
instead, saying what is missing, so that a CI job cannot pass without the validation.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT.parent / "shared"


def in_ci() -> bool:
    """``CI`` is set (to anything but an empty string, ``0`` or ``false``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def spec_missing(message: str) -> None:
    """Under CI, fail the test with ``message``; elsewhere return, so the caller skips or warns."""
    if in_ci():
        pytest.fail(f"CI is set and a spec the tests validate against is missing: {message}", pytrace=False)


def require_spec(path: Path, why: str) -> Path:
    """``path`` if it is a file; otherwise skip saying ``why`` (fail under CI)."""
    if not path.is_file():
        spec_missing(why)
        pytest.skip(why)
    return path


def lakefs_swagger(repo_root: Path = REPO_ROOT) -> Path | None:
    """``shared/specs/lakefs/swagger.yml`` beside the repository (never copied into it)."""
    for shared in (repo_root.parent / "shared", repo_root / "shared"):
        spec = shared / "specs" / "lakefs" / "swagger.yml"
        if spec.is_file():
            return spec
    return None
