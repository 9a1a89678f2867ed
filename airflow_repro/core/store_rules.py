"""The rules every versioned store applies to what it is given: object paths, names, metadata.

Both stores (the embedded one and lakeFS) check their arguments with these, so a name or a path
the one accepts the other accepts too, with the same message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from airflow_repro.errors import InvalidNameError, ReproUserError


def validate_object_path(path: str) -> str:
    """An object path is a relative POSIX path: ``data/train.csv``."""
    bad = (
        not isinstance(path, str)
        or not path
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(segment in ("", ".", "..") for segment in path.split("/"))
    )
    if bad:
        raise InvalidNameError(
            f"invalid object path {path!r}: use a relative POSIX path such as 'data/train.csv' "
            "(no leading '/', no '.', '..' or empty segments, no backslashes)"
        )
    return path


def checked_name(validator: Callable[[str], str], name: str) -> str:
    """Run a naming validator, also refusing the final newline that a regex ``$`` lets through.

    A name ending in a newline would otherwise become a file name (or a lakeFS ref) ending in one.
    """
    if isinstance(name, str) and name.endswith("\n"):
        raise InvalidNameError(f"invalid name {name!r}: names must not end with a newline")
    return validator(name)


def validate_commit_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Commit metadata is a mapping of non-empty strings to strings (all lakeFS can store)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ReproUserError(f"commit metadata must be a mapping of str to str, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise ReproUserError(f"commit metadata keys must be non-empty strings, got {key!r}")
        if not isinstance(value, str):
            raise ReproUserError(
                f"commit metadata value for {key!r} must be a string (lakeFS stores strings only), "
                f"got {type(value).__name__} {value!r}; convert it, e.g. with str() or json.dumps()"
            )
    return dict(metadata)


__all__ = ["checked_name", "validate_commit_metadata", "validate_object_path"]
