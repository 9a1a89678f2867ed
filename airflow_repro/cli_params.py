"""Parameter types of the command line: numbers that a wait or a timeout can actually use.

``float('nan')``, ``inf`` and ``1e309`` all parse as floats, and each makes a wait loop or a socket
timeout misbehave (never time out, or overflow). These refuse them up front, as a usage error.
"""

from __future__ import annotations

import math
import re
from typing import Any

import click

MAX_TIMEOUT_S = 7 * 24 * 3600.0
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_RE = re.compile(r"(?P<number>\d+(\.\d+)?)\s*(?P<unit>[smhd]?)")


class Seconds(click.ParamType):
    """A finite timeout in seconds: more than 0, at most ``maximum``."""

    name = "seconds"

    def __init__(self, maximum: float = MAX_TIMEOUT_S) -> None:
        self.maximum = maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not (math.isfinite(seconds) and 0 < seconds <= self.maximum):
            self.fail(f"{value!r} must be a number of seconds above 0 and at most {self.maximum:g}", param, ctx)
        return seconds


class Duration(click.ParamType):
    """A duration such as ``90s``, ``30m``, ``1h``, ``2d`` (a bare number is seconds); 0 allowed."""

    name = "duration"

    def __init__(self, maximum: float = 3650 * 86400.0) -> None:
        self.maximum = maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        else:
            match = _DURATION_RE.fullmatch(str(value).strip().lower())
            if match is None:
                self.fail(f"{value!r} is not a duration: write e.g. 90s, 30m, 1h or 2d", param, ctx)
            seconds = float(match["number"]) * _UNITS[match["unit"] or "s"]
        if not (math.isfinite(seconds) and 0 <= seconds <= self.maximum):
            self.fail(f"{value!r} must be a duration of at least 0 and at most {self.maximum:g} seconds", param, ctx)
        return seconds
