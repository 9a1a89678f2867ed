"""One home for the rules both stores and the declarations share."""

from __future__ import annotations

import pytest

from airflow_repro.adapters import lakefs_store, local_store
from airflow_repro.core import store_rules
from airflow_repro.core.spec import validate_store_path
from airflow_repro.errors import InvalidNameError


def test_both_stores_apply_the_same_rules() -> None:
    for name in ("validate_object_path", "checked_name", "validate_commit_metadata"):
        assert getattr(local_store, name) is getattr(lakefs_store, name) is getattr(store_rules, name)


@pytest.mark.parametrize("path", ["/abs", "a//b", "a/../b", "./a", "a\\b", "a\x00b", ""])
def test_a_declared_path_is_refused_wherever_a_store_would_refuse_it(path: str) -> None:
    with pytest.raises(InvalidNameError):
        store_rules.validate_object_path(path)
    with pytest.raises(InvalidNameError):
        validate_store_path(path)


def test_declarations_add_folders_and_the_reserved_prefix() -> None:
    assert validate_store_path("models/", allow_folder=True) == "models/"
    with pytest.raises(InvalidNameError, match="reserved"):
        validate_store_path("_repro/manifests/x.json")
