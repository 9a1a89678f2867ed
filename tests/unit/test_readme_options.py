"""The README's table of `[repro]` options says what the options table in config.py says."""

from __future__ import annotations

import re
from pathlib import Path

from airflow_repro.config import OPTIONS

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| `(?P<name>[a-z_0-9]+)` \| (?P<default>[^|]+) \| .+\|$")


def test_every_option_is_documented_with_its_default_and_nothing_else_is() -> None:
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = {m["name"]: m["default"].replace("`", "").strip() for m in map(ROW.match, section.splitlines()) if m}
    documented = {name: "unset" if default == "(none)" else default for name, default in rows.items()}
    assert documented == {name: option.described_default for name, option in OPTIONS.items()}
