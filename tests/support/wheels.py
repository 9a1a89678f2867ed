"""Tiny pure-Python wheels written with :mod:`zipfile`: no build backend, no network.

:func:`make_wheel` writes one into a folder a uv ``--find-links`` can point at;
:func:`install_unpacked` lays it out as an installer would (a ``.dist-info`` folder next to the
package), for tests that only need it to look installed.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Mapping
from pathlib import Path

__all__ = ["install_unpacked", "make_wheel", "wheel_name"]


def wheel_name(name: str, version: str) -> str:
    """``my_pkg-1.0-py3-none-any.whl``: the file name the wheel spec gives ``my-pkg`` ``1.0``."""
    return f"{_escaped(name)}-{version}-py3-none-any.whl"


def _escaped(name: str) -> str:
    return name.replace("-", "_").replace(".", "_").lower()


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def make_wheel(folder: Path, name: str, version: str, files: Mapping[str, str]) -> Path:
    """Write a ``py3-none-any`` wheel of ``name`` ``version`` holding ``files`` (path -> text)."""
    dist_info = f"{_escaped(name)}-{version}.dist-info"
    contents = {path: text.encode() for path, text in files.items()}
    contents[f"{dist_info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    contents[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: tests.support.wheels\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [_record_line(path, data) for path, data in contents.items()]
    contents[f"{dist_info}/RECORD"] = ("\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / wheel_name(name, version)
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, data in contents.items():
            archive.writestr(path, data)
    return wheel


def install_unpacked(wheel: Path, site_dir: Path) -> None:
    """Unzip ``wheel`` into ``site_dir`` as an installed layout (package and ``.dist-info``)."""
    site_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site_dir)
