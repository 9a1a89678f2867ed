"""Comparison of one output with its replay: ``equivalent`` within a tolerance, or ``differs``, and where.

Verification first compares the content hashes both manifests recorded (``identical``: nothing is
read). Only an output whose hashes differ comes here, as two binary streams; this module says
whether the two contents are still *equivalent* (different bytes, equal within the declared
:class:`Tolerance`, with the largest deviation found) or *differ*, and explains where, in a report
of bounded size (:class:`ObjectComparison`).

The format of an output is detected from its path's extension checked against its first bytes
(:func:`sniff_format`); a :class:`ComparatorRegistry` then hands the two streams to the first
:class:`Comparator` that accepts them. The registry always ends with the byte comparison
(:func:`compare_bytes`), so every object gets a report:

* a known format whose content does not look like it (``.parquet`` without ``PAR1``), or that its
  comparator finds malformed, is compared as bytes, with a ``note`` saying why;
* a comparator that raises is reported as such (verdict ``differs``, ``note`` naming the
  exception), never propagated: one broken comparator cannot stop a verification. Errors of the
  store itself (:class:`~airflow_repro.errors.ReproError`, e.g. ``StoreCorruption`` when a
  verifying reader reaches EOF) do propagate: they say something about the data, not the format.

This module is pure (pydantic and the standard library). The comparators for real formats (CSV,
Parquet, JSON, NumPy, text, PyTorch) live in :mod:`airflow_repro.adapters.comparators`, which
imports numpy/pyarrow/torch only when it compares; ``install_builtin_comparators()`` there puts
them into a registry (the process-wide one by default). A registry without them still compares
every object, as bytes, and its notes say which comparator is missing.

Nothing in an output is ever executed: no pickle is loaded, no code evaluated.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Literal, NamedTuple, Protocol, runtime_checkable

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from airflow_repro.errors import ReproError

ComparisonVerdict = Literal["equivalent", "differs"]

#: Bytes of each object read to detect its format.
HEAD_SIZE = 8192
#: At most this many differing cells, rows, paths, arrays... in a report's ``details``.
MAX_ITEMS = 20
#: At most this many lines of a unified diff.
MAX_DIFF_LINES = 100
#: A value quoted in a report is cut to this many characters.
MAX_VALUE_CHARS = 80
#: ``details`` of one report never serialise to more characters than this (a comparator that tries is a bug).
MAX_DETAILS_CHARS = 64 * 1024
_CHUNK = 1024 * 1024


class Tolerance(BaseModel):
    """How far a replayed number may be from the original: ``|replay - original| <= abs_tol + rel_tol * |original|``.

    These are numpy ``isclose`` semantics with the original as the reference (``b``); both are 0 by
    default (exact). NaN equals NaN (a replay that reproduces a NaN reproduces the output); an
    infinity equals only the same infinity. Tolerance applies to numbers only: text, keys, column
    names, shapes and dtypes compare exactly.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    abs_tol: float = 0.0
    rel_tol: float = 0.0

    @field_validator("abs_tol", "rel_tol")
    @classmethod
    def _finite_and_not_negative(cls, value: float, info: Any) -> float:
        if math.isnan(value) or math.isinf(value) or value < 0:
            raise ValueError(
                f"{info.field_name} must be a finite number >= 0, got {value!r}: use 0 for an exact "
                f"comparison or a small bound such as {info.field_name}=1e-9"
            )
        return value

    @property
    def exact(self) -> bool:
        return self.abs_tol == 0 and self.rel_tol == 0

    def matches(self, original: float, replay: float) -> bool:
        """Whether ``replay`` is within the tolerance of ``original``."""
        if original == replay or (math.isnan(original) and math.isnan(replay)):
            return True
        if not (math.isfinite(original) and math.isfinite(replay)):
            return False
        return abs(replay - original) <= self.abs_tol + self.rel_tol * abs(original)

    def describe(self) -> str:
        return "exact" if self.exact else f"abs_tol={self.abs_tol:g}, rel_tol={self.rel_tol:g}"


def deviations(original: float, replay: float) -> tuple[float, float]:
    """``(|replay - original|, |replay - original| / |original|)``; 0 for equal values (NaN and
    NaN included), ``inf`` where the difference is unbounded (a NaN against a number, an infinity
    against anything else, a relative deviation from 0)."""
    if original == replay or (math.isnan(original) and math.isnan(replay)):
        return 0.0, 0.0
    diff = abs(replay - original)
    if math.isnan(diff):
        return math.inf, math.inf
    return diff, (diff / abs(original) if original else math.inf)


class ObjectComparison(BaseModel):
    """What a comparator found for one output whose bytes differ from the original's.

    ``details`` is format-specific and bounded (at most :data:`MAX_ITEMS` cells, rows, paths or
    arrays, at most :data:`MAX_DIFF_LINES` diff lines, values cut to :data:`MAX_VALUE_CHARS`):
    a report never grows with the size of the outputs. Deviations are the largest ones over every
    number compared (``None`` where no number was). Non-finite numbers serialise as the strings
    ``"NaN"``, ``"Infinity"``, ``"-Infinity"``, as in the verification report.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")

    path: str
    verdict: ComparisonVerdict
    format: str
    tolerance: Tolerance
    summary: str
    max_abs_deviation: float | None = None
    max_rel_deviation: float | None = None
    details: dict[str, Any] = {}
    note: str | None = None

    @field_validator("summary")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\n" in value or "\r" in value:
            raise ValueError("summary must be one line: put the rest into details")
        return value

    @model_validator(mode="after")
    def _bounded_details(self) -> ObjectComparison:
        try:
            size = len(json.dumps(self.details, allow_nan=True, ensure_ascii=False, separators=(",", ":")))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"details of {self.path!r} must be plain JSON values: {exc}") from exc
        if size > MAX_DETAILS_CHARS:
            raise ValueError(
                f"details of {self.path!r} serialise to {size} characters (at most {MAX_DETAILS_CHARS}): "
                f"a comparator must bound them (at most {MAX_ITEMS} items, values cut to {MAX_VALUE_CHARS} characters)"
            )
        return self

    @model_serializer(mode="wrap")
    def _json_numbers(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        # JSON has no Infinity or NaN (an unbounded relative deviation from 0 is inf): in JSON mode
        # (``model_dump(mode="json")`` too, which reports, APIs and trackers use) they become strings.
        data = handler(self)
        return _finite_json(data) if info.mode_is_json() else data


def _finite_json(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_json(v) for v in value]
    return value


class BytesFallback(NamedTuple):
    """What a comparator returns to have the object compared as bytes instead, with ``note``
    saying why ("malformed parquet: ...", "torch is not installed"). The registry opens both
    objects again for it: a comparator may have consumed its streams."""

    note: str


ComparatorResult = ObjectComparison | BytesFallback


@runtime_checkable
class Comparator(Protocol):
    """Compares one format. ``name`` is the format it reports (``csv``) and must be unique in a registry."""

    name: str

    def matches(self, path: str, head: bytes) -> bool:
        """Whether this comparator handles ``path``, whose content starts with ``head`` (up to
        :data:`HEAD_SIZE` bytes). Both objects must match for the comparator to be used."""
        ...

    def compare(self, original: BinaryIO, replay: BinaryIO, *, path: str, tolerance: Tolerance) -> ComparatorResult:
        """Compare two contents that are known to differ in their bytes. The streams start at
        their first byte; they may not be seekable, and a comparator must not load a whole
        large object into memory. Return :class:`BytesFallback` for a malformed object."""
        ...


# --- format detection ----------------------------------------------------------------------------

TEXT_SUFFIXES = frozenset({".txt", ".md", ".log", ".yaml", ".yml", ".cfg", ".ini"})
_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".json": "json",
    ".npy": "npy",
    ".npz": "npz",
    ".pt": "pt",
    ".pth": "pt",
    **dict.fromkeys(TEXT_SUFFIXES, "text"),
}
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


class FormatGuess(NamedTuple):
    """``format`` as the extension says it, and ``problem`` when the content says otherwise."""

    format: str
    problem: str | None = None


def sniff_format(path: str, head: bytes) -> FormatGuess:
    """The format of ``path`` from its extension, checked against its first bytes.

    An extension the content contradicts gives that format with a ``problem``; a path without a
    known extension is recognised by magic bytes (Parquet, NumPy) or as text (UTF-8 without NUL),
    else it is ``bytes``.
    """
    fmt = _SUFFIXES.get(PurePosixPath(path).suffix.lower())
    if fmt is None:
        if head.startswith(b"PAR1"):
            return FormatGuess("parquet")
        if head.startswith(b"\x93NUMPY"):
            return FormatGuess("npy")
        return FormatGuess("text") if head and _text_problem(head) is None else FormatGuess("bytes")
    return FormatGuess(fmt, _content_problem(fmt, head))


def _content_problem(fmt: str, head: bytes) -> str | None:
    if fmt == "parquet":
        return None if head.startswith(b"PAR1") else "no PAR1 magic at its start"
    if fmt == "npy":
        return None if head.startswith(b"\x93NUMPY") else "no \\x93NUMPY magic at its start"
    if fmt in ("npz", "pt"):
        return None if head.startswith(_ZIP_MAGIC) else "not a zip archive"
    if fmt == "json":
        stripped = head.removeprefix(b"\xef\xbb\xbf").lstrip()
        if stripped and stripped[:1] not in b'{["-0123456789tfnNI':
            return "does not start like a JSON value"
        return _text_problem(head)
    return _text_problem(head)  # csv, tsv, text


def _text_problem(head: bytes) -> str | None:
    if b"\x00" in head:
        return "NUL bytes in its first bytes (binary content)"
    for cut in range(4):  # the head may end inside a multi-byte character
        try:
            head[: len(head) - cut].decode("utf-8")
            return None
        except UnicodeDecodeError:
            continue
    return "not UTF-8"


# --- helpers for comparators -----------------------------------------------------------------------


def short(value: object, limit: int = MAX_VALUE_CHARS) -> str:
    """``value`` as a report quotes it: ``str`` for text, ``repr``-like otherwise, cut to ``limit``."""
    text = value if isinstance(value, str) else json.dumps(value) if _is_json_scalar(value) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_json_scalar(value: object) -> bool:
    return value is None or isinstance(value, bool | int) or isinstance(value, float) and math.isfinite(value)


def read_up_to(stream: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes from ``stream``, fewer only at EOF (raw streams may return short reads)."""
    parts, have = [], 0
    while have < size:
        chunk = stream.read(size - have)
        if not chunk:
            break
        parts.append(chunk)
        have += len(chunk)
    return b"".join(parts)


def fill(stream: BinaryIO, buffer: bytearray) -> int:
    """Read into ``buffer`` until it is full or EOF; the number of bytes read."""
    n = 0
    with memoryview(buffer) as view:
        while n < len(buffer):
            got = stream.readinto(view[n:])  # type: ignore[attr-defined]  # files and raw streams have it
            if not got:
                break
            n += got
    return n


def drain(stream: BinaryIO) -> int:
    """Read ``stream`` to EOF (a verifying reader checks the content hash there); bytes read."""
    buffer = bytearray(_CHUNK)
    total = 0
    while n := fill(stream, buffer):
        total += n
    return total


def first_difference(a: bytes | bytearray, b: bytes | bytearray, n: int) -> int:
    """The first offset below ``n`` where ``a`` and ``b`` differ (``n`` when they do not)."""
    lo, hi = 0, n  # a[:lo] == b[:lo]; the first difference, if any, is below hi
    while hi - lo > 64:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    for i in range(lo, hi):
        if a[i] != b[i]:
            return i
    return hi


# --- the byte comparison (the fallback of every registry) ----------------------------------------


def compare_bytes(
    original: BinaryIO, replay: BinaryIO, *, path: str, tolerance: Tolerance, note: str | None = None
) -> ObjectComparison:
    """Both streams read in lockstep through two reused buffers: sizes and the first differing offset."""
    buf_a, buf_b = bytearray(_CHUNK), bytearray(_CHUNK)
    offset, first, context = 0, None, None
    size_a = size_b = 0
    while True:
        n_a, n_b = fill(original, buf_a), fill(replay, buf_b)
        size_a, size_b = size_a + n_a, size_b + n_b
        if first is None:
            n = min(n_a, n_b)
            same = buf_a == buf_b if n_a == n_b == len(buf_a) else buf_a[:n] == buf_b[:n]
            if not same or n_a != n_b:
                at = n if same else first_difference(buf_a, buf_b, n)
                first = offset + at
                context = {"original": buf_a[at : at + 16].hex(" "), "replay": buf_b[at : at + 16].hex(" ")}
            offset += n
        if not n_a and not n_b:
            break
        if not n_a or not n_b:  # one side ended: only count the other's size
            size_a += drain(original) if n_a else 0
            size_b += drain(replay) if n_b else 0
            break
    details: dict[str, Any] = {"size": {"original": size_a, "replay": size_b}, "first_differing_offset": first}
    if context is not None:
        details["bytes_at_first_difference"] = context
    if first is None:
        return ObjectComparison(
            path=path,
            verdict="equivalent",
            format="bytes",
            tolerance=tolerance,
            summary=f"bytes: the {size_a} bytes are identical",
            details=details,
            note=note,
        )
    sizes = f"{size_a} bytes" if size_a == size_b else f"{size_a} bytes vs {size_b} in the replay"
    return ObjectComparison(
        path=path,
        verdict="differs",
        format="bytes",
        tolerance=tolerance,
        summary=f"bytes: {sizes}; first difference at offset {first}",
        details=details,
        note=note,
    )


class BytesComparator:
    """The fallback: matches everything, compares bytes (tolerance cannot apply)."""

    name = "bytes"

    def matches(self, path: str, head: bytes) -> bool:
        return True

    def compare(self, original: BinaryIO, replay: BinaryIO, *, path: str, tolerance: Tolerance) -> ComparatorResult:
        return compare_bytes(original, replay, path=path, tolerance=tolerance)


# --- the registry ----------------------------------------------------------------------------------

Opener = Callable[[], AbstractContextManager[BinaryIO]]


class ComparatorRegistry:
    """An ordered list of comparators, tried first to last; the byte comparison comes after them all."""

    def __init__(self, comparators: Iterable[Comparator] = ()) -> None:
        self._comparators: list[Comparator] = []
        self._fallback: Comparator = BytesComparator()
        for comparator in comparators:
            self.register(comparator)

    def register(self, comparator: Comparator, *, first: bool = False) -> None:
        """Add ``comparator`` last (or ``first``, ahead of every other). Names are unique."""
        if not isinstance(comparator, Comparator):
            raise TypeError(f"{comparator!r} is not a Comparator: it needs name, matches() and compare()")
        if comparator.name in self.names():
            raise ValueError(f"a comparator named {comparator.name!r} is already registered: unregister it first")
        self._comparators.insert(0 if first else len(self._comparators), comparator)

    def unregister(self, name: str) -> Comparator:
        """Remove the comparator called ``name`` and return it."""
        for i, comparator in enumerate(self._comparators):
            if comparator.name == name:
                return self._comparators.pop(i)
        raise KeyError(f"no comparator named {name!r} is registered (registered: {', '.join(self.names()) or 'none'})")

    @contextlib.contextmanager
    def registered(self, comparator: Comparator, *, first: bool = False) -> Iterator[Comparator]:
        """``comparator`` registered for the duration of a ``with`` block."""
        self.register(comparator, first=first)
        try:
            yield comparator
        finally:
            self.unregister(comparator.name)

    def names(self) -> list[str]:
        return [c.name for c in self._comparators]

    def comparator_for(self, path: str, head: bytes) -> Comparator:
        """The first comparator that matches ``path`` and ``head``; the byte comparison if none does."""
        for comparator in self._comparators:
            if comparator.matches(path, head):
                return comparator
        return self._fallback

    def compare(
        self, path: str, open_original: Opener, open_replay: Opener, tolerance: Tolerance | None = None
    ) -> ObjectComparison:
        """Compare the two contents of output ``path``; each opener returns a fresh binary stream."""
        tolerance = tolerance or Tolerance()
        with open_original() as original, open_replay() as replay:
            head_a, head_b = read_up_to(original, HEAD_SIZE), read_up_to(replay, HEAD_SIZE)
            comparator = self.comparator_for(path, head_a)
            if comparator is self._fallback or not comparator.matches(path, head_b):
                note = (
                    self._why_bytes(path, head_a)
                    if comparator is self._fallback
                    else _replay_mismatch(comparator.name, path, head_b)
                )
                streams = _rewound(original, head_a), _rewound(replay, head_b)
                return compare_bytes(*streams, path=path, tolerance=tolerance, note=note)
            result = _run(comparator, _rewound(original, head_a), _rewound(replay, head_b), path, tolerance)
        if isinstance(result, ObjectComparison):
            return result
        with open_original() as original, open_replay() as replay:  # the comparator may have read them
            return compare_bytes(original, replay, path=path, tolerance=tolerance, note=result.note)

    def _why_bytes(self, path: str, head_a: bytes) -> str | None:
        guess = sniff_format(path, head_a)
        if guess.format == "bytes":
            return None
        if guess.problem is not None:
            return f"malformed {guess.format} (the original: {guess.problem}): compared as bytes"
        return (
            f"no comparator for {guess.format} is registered: compared as bytes "
            "(airflow_repro.adapters.comparators.install_builtin_comparators() registers the built-in ones)"
        )


def _replay_mismatch(name: str, path: str, head: bytes) -> str:
    guess = sniff_format(path, head)
    why = f": {guess.problem}" if guess.problem else f" (it looks like {guess.format})"
    return f"the original is {name} but the replay is not{why}: compared as bytes"


def _run(
    comparator: Comparator, original: BinaryIO, replay: BinaryIO, path: str, tolerance: Tolerance
) -> ComparatorResult:
    try:
        result = comparator.compare(original, replay, path=path, tolerance=tolerance)
        if not isinstance(result, ObjectComparison | BytesFallback):
            raise TypeError(f"compare() returned {type(result).__name__}, not an ObjectComparison")
        return result
    except ReproError:
        raise  # the store's own errors (a damaged object): not the comparator's
    except Exception as exc:  # noqa: BLE001 - one broken comparator must not stop a verification
        message = short(str(exc), 200)
        return ObjectComparison(
            path=path,
            verdict="differs",
            format=comparator.name,
            tolerance=tolerance,
            summary=f"{comparator.name}: the comparison failed, so the object counts as differing",
            details={"comparator": comparator.name, "exception": type(exc).__name__},
            note=f"comparator {comparator.name} raised {type(exc).__name__}: {message}",
        )


class HeadThenRest(io.RawIOBase):
    """A stream that yields ``head`` again, then the rest of ``stream`` (which was read past it)."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        got: int = self._stream.readinto(buffer)  # type: ignore[attr-defined]  # files and raw streams have it
        return got


def _rewound(stream: BinaryIO, head: bytes) -> BinaryIO:
    if stream.seekable():
        stream.seek(0)
        return stream
    return io.BufferedReader(HeadThenRest(head, stream), buffer_size=_CHUNK)


#: The process-wide registry the module-level functions use; empty until comparators are installed.
default_registry = ComparatorRegistry()


def register_comparator(comparator: Comparator, *, first: bool = False) -> None:
    """Register ``comparator`` in the process-wide registry (last, or ``first``)."""
    default_registry.register(comparator, first=first)


def unregister_comparator(name: str) -> Comparator:
    """Remove the comparator called ``name`` from the process-wide registry."""
    return default_registry.unregister(name)


def comparator_for(path: str, head: bytes) -> Comparator:
    """The comparator of the process-wide registry that ``path`` (starting with ``head``) gets."""
    return default_registry.comparator_for(path, head)


def compare_objects(
    path: str,
    open_original: Opener,
    open_replay: Opener,
    tolerance: Tolerance | None = None,
    *,
    registry: ComparatorRegistry | None = None,
) -> ObjectComparison:
    """Compare the original and the replayed content of output ``path`` (called once their hashes differ).

    ``open_original`` / ``open_replay`` return a fresh binary stream each time they are called
    (``lambda: store.open_object(repo, commit, path)``); a stream is opened a second time only
    when the object ends up compared as bytes after a comparator was tried.
    """
    return (registry or default_registry).compare(path, open_original, open_replay, tolerance)


def compare_files(
    original: str | os.PathLike[str],
    replay: str | os.PathLike[str],
    tolerance: Tolerance | None = None,
    *,
    path: str | None = None,
    registry: ComparatorRegistry | None = None,
) -> ObjectComparison:
    """:func:`compare_objects` for two local files; ``path`` (the output's name) defaults to ``replay``'s."""
    name = path if path is not None else Path(replay).name

    def opener(file: str | os.PathLike[str]) -> Opener:
        return lambda: open(file, "rb")

    return compare_objects(name, opener(original), opener(replay), tolerance, registry=registry)
