"""CPU and memory quantities of a task, validated as Kubernetes would, at DAG parse time.

Kubernetes quantities (``"500m"``, ``"2"``, ``"4Gi"``) are parsed here; GPU requests (counts,
accelerators, MIG slices) are :mod:`airflow_repro.core.gpus`, whose ``task_resources`` validates a
task's whole request with both. Pure: no Kubernetes import.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from airflow_repro.errors import ResourceError

# k8s.io/apimachinery/pkg/api/resource: <signedNumber><suffix>; requests may not be negative.
_QUANTITY_RE = re.compile(
    r"^\+?(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "m": Decimal("0.001"),
    "": Decimal(1),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
}


def parse_quantity(value: Any, *, what: str) -> Decimal:
    """A Kubernetes quantity (``"500m"``, ``"2"``, ``"4Gi"``, ``1.5``) as a Decimal; errors say the fix."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ResourceError(f"{what} {value!r} is not a Kubernetes quantity; write e.g. '500m', '2', '512Mi' or '4Gi'")
    text = str(value).strip() if isinstance(value, str) else repr(value)
    match = _QUANTITY_RE.match(text)
    if match is None:
        raise ResourceError(
            f"{what} {value!r} is not a Kubernetes quantity; write a number with an optional suffix and no "
            "space, e.g. '500m' or '2' (CPU) and '512Mi', '4Gi' or '2G' (memory)"
        )
    try:
        number = Decimal(match["number"])
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise ResourceError(f"{what} {value!r} is not a number") from exc
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    return number * (Decimal(10) ** int(suffix[1:]))


def quantity_text(cores: float) -> str:
    """CPU cores as a canonical quantity: 2.0 -> '2', 0.5 -> '500m'."""
    value = Decimal(str(cores))
    if value == value.to_integral_value():
        return str(int(value))
    return f"{int((value * 1000).to_integral_value())}m"


def parse_cpu(value: Any, what: str) -> float | None:
    if value is None:
        return None
    cores = parse_quantity(value, what=what)
    if cores <= 0:
        raise ResourceError(f"{what} {value!r} must be more than zero")
    if cores != (cores * 1000).to_integral_value() / 1000:
        raise ResourceError(f"{what} {value!r} is finer than Kubernetes allows (1m = 0.001 CPU)")
    return float(cores)


def parse_memory(value: Any, what: str) -> str | None:
    if value is None:
        return None
    amount = parse_quantity(value, what=what)
    if amount <= 0:
        raise ResourceError(f"{what} {value!r} must be more than zero")
    return str(value).strip() if isinstance(value, str) else str(int(amount))


def check_limit(what: str, request: Any, limit: Any) -> None:
    if request is None or limit is None:
        return
    if parse_quantity(limit, what=f"{what}_limit") < parse_quantity(request, what=what):
        raise ResourceError(
            f"{what}_limit {limit!r} is below the request {request!r}; Kubernetes requires limit >= request"
        )


__all__ = ["check_limit", "parse_cpu", "parse_memory", "parse_quantity", "quantity_text"]
