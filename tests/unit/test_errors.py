"""One error tree: every exception class of the package is defined in errors.py, under ReproError."""

from __future__ import annotations

import ast
import builtins
import inspect
import re
from pathlib import Path

import airflow_repro
from airflow_repro import errors

ROOT = Path(airflow_repro.__file__).parent
BUILTIN_EXCEPTIONS = {
    name for name, value in vars(builtins).items() if isinstance(value, type) and issubclass(value, BaseException)
}


def _error_classes() -> dict[str, type[BaseException]]:
    return {
        name: value
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == errors.__name__
    }


def _base_name(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def test_every_exception_class_is_defined_in_errors_py() -> None:
    exception_names = set(_error_classes()) | BUILTIN_EXCEPTIONS
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        if path == ROOT / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and (
                any(_base_name(base) in exception_names for base in node.bases)
                or re.search(r"(Error|Exception)$", node.name)
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.name}")
    assert found == []


def test_every_error_derives_from_repro_error_and_is_drawn_in_the_tree() -> None:
    classes = _error_classes()
    assert len(classes) >= 30
    tree = errors.__doc__ or ""
    for name, cls in classes.items():
        assert issubclass(cls, errors.ReproError), name
        assert re.search(rf"\b{name}\b", tree), f"{name} is not drawn in errors.py's docstring"


def test_retryable_only_where_a_retry_can_help() -> None:
    assert not errors.TrackerMisconfigured.retryable
    assert not issubclass(errors.TrackerMisconfigured, errors.TrackerUnavailable)
    assert not errors.StoreCorruption.retryable
    for cls in _error_classes().values():
        if issubclass(cls, errors.ReproUserError):
            assert not cls.retryable, cls


def test_the_runtime_error_is_a_user_error_and_still_a_runtime_error() -> None:
    assert issubclass(errors.RuntimeContextError, errors.ReproUserError)
    assert issubclass(errors.RuntimeContextError, RuntimeError)


def test_public_modules_still_export_their_errors() -> None:
    from airflow_repro import runtime
    from airflow_repro.adapters import k8s_registry
    from airflow_repro.core import gpus, images

    assert runtime.RuntimeContextError is errors.RuntimeContextError
    assert images.ImageNotPinnedError is errors.ImageNotPinnedError
    assert gpus.ResourceError is errors.ResourceError
    assert k8s_registry.RegistryError is errors.RegistryError
    for module, name in ((runtime, "RuntimeContextError"), (images, "ImageNotPinnedError")):
        assert name in module.__all__
