"""The built-in comparators: CSV/TSV, Parquet, JSON, NumPy (``.npy``/``.npz``), text and PyTorch.

Each one implements :class:`~airflow_repro.core.comparison.Comparator` and imports its library
(numpy, pyarrow, torch) only when it compares: where the library is missing, the object is
compared as bytes with a note saying which one to install. ``install_builtin_comparators()`` puts
them into a registry (the process-wide one by default).

Memory stays flat however large the outputs are: CSV and NumPy are read as streams in lockstep
through buffers of fixed size, Parquet by record batches, ``.npz`` member by member; Parquet,
``.npz`` and ``.pt`` need random access, so a stream that cannot seek is first copied into a
temporary file. JSON (a tree) is parsed whole, up to :data:`JSON_MAX_BYTES`; text is diffed whole
up to :data:`TEXT_DIFF_MAX_BYTES` and compared line by line beyond.

CSV has a fast path for the common case of a few changed cells: the two streams are compared as
bytes block by block, and only the rows where the bytes differ are parsed (by windows of rows,
with pyarrow). A file with a quote character is parsed whole instead (a quoted field may hold a
newline, so lines are not rows there); so is the rest of a file once its lines stop being its rows
(a lone ``\r`` as line ending, blank lines inside the rows parsed). Cells compare as numbers when
both parse as numbers (within the tolerance), else exactly as text. Row numbers in reports count
data rows from 0, header excluded; blank lines at the end of a file are not rows (inside a file,
a blank line where both files are the same counts as one).

Nothing is executed from an output: ``numpy`` loads with ``allow_pickle=False`` (an array of
Python objects is compared as bytes), ``torch.load`` runs with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import csv as csvlib
import difflib
import importlib
import io
import itertools
import json
import math
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from tokenize import TokenError
from types import ModuleType
from typing import TYPE_CHECKING, Any, BinaryIO

from airflow_repro.core.comparison import (
    MAX_DIFF_LINES,
    MAX_ITEMS,
    BytesFallback,
    Comparator,
    ComparatorRegistry,
    ComparatorResult,
    ComparisonVerdict,
    HeadThenRest,
    ObjectComparison,
    Tolerance,
    default_registry,
    deviations,
    drain,
    first_difference,
    read_up_to,
    short,
    sniff_format,
)
from airflow_repro.core.hashing import iter_chunks

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

#: A JSON object larger than this is compared as bytes (it is parsed whole).
JSON_MAX_BYTES = 64 * 1024 * 1024
#: Text up to this size per side is diffed whole (difflib); larger text line by line.
TEXT_DIFF_MAX_BYTES = 1024 * 1024
#: CSV: bytes compared per step; bytes of rows parsed at once where they differ (a window doubles
#: up to CSV_WINDOW_MAX while the differences are dense, so noise everywhere is parsed in bulk).
CSV_BLOCK = 256 * 1024
CSV_WINDOW = 128 * 1024
CSV_WINDOW_MAX = 512 * 1024
CSV_MAX_LINE = 64 * 1024 * 1024
_SCAN = 256 * 1024  # newlines are counted by pieces of this size (numpy), to keep temporaries small
#: CSV with quotes is parsed whole, by blocks of this size (a row must fit in one).
CSV_PARSE_BLOCK = 4 * 1024 * 1024
#: A differing row of a table report shows at most this many of its cells.
MAX_CELLS_PER_ROW = 8
#: Rows per record batch (Parquet) and bytes per chunk (NumPy) compared at a time.
PARQUET_BATCH_ROWS = 64 * 1024
ARRAY_CHUNK_BYTES = 1024 * 1024


def _library(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _not_installed(name: str) -> BytesFallback:
    return BytesFallback(f"{name} is not installed: compared as bytes")


def _np() -> Any:
    import numpy

    return numpy


# --- numbers -----------------------------------------------------------------------------------


@dataclass
class _Deviation:
    """The largest deviations seen so far, and where the largest absolute one was."""

    max_abs: float | None = None
    max_rel: float | None = None
    where: Any = None

    def update(self, max_abs: float, max_rel: float, where: Any) -> None:
        if self.max_abs is None or max_abs > self.max_abs:
            self.max_abs, self.where = max_abs, where
        self.max_rel = max_rel if self.max_rel is None else max(self.max_rel, max_rel)

    def merge(self, other: _Deviation) -> None:
        if other.max_abs is not None:
            self.update(other.max_abs, other.max_rel or 0.0, other.where)


@dataclass
class _NumericChunk:
    """Element-wise outcome of comparing two numeric arrays of one shape."""

    equal: NDArray[np.bool_]  # bit-for-bit (or both NaN)
    out: NDArray[np.bool_]  # beyond the tolerance
    dev: NDArray[np.float64]  # |replay - original| (0 where equal, inf where unbounded)
    rel: NDArray[np.float64]

    def extremes(self) -> tuple[float, float, int] | None:
        """``(max abs, max rel, index of max abs)`` over the elements that are not equal."""
        numpy = _np()
        if bool(self.equal.all()):
            return None
        masked = numpy.where(self.equal, -1.0, self.dev)
        at = int(masked.argmax())
        return float(masked[at]), float(numpy.where(self.equal, -1.0, self.rel).max()), at


def numeric_diff(original: NDArray[Any], replay: NDArray[Any], tolerance: Tolerance) -> _NumericChunk:
    """Vectorised :meth:`Tolerance.matches` and :func:`deviations` over two arrays of one shape."""
    numpy = _np()
    with numpy.errstate(all="ignore"):
        equal = numpy.asarray(original == replay)
        if original.dtype.kind in "fc" or replay.dtype.kind in "fc":
            equal = equal | (numpy.isnan(original) & numpy.isnan(replay))
        kind = numpy.complex128 if "c" in (original.dtype.kind, replay.dtype.kind) else numpy.float64
        a, b = original.astype(kind, copy=False), replay.astype(kind, copy=False)
        dev = numpy.abs(b - a).astype(numpy.float64)
        unbounded = ~equal & (numpy.isnan(dev) | numpy.isinf(a) | numpy.isinf(b))
        dev = numpy.where(equal, 0.0, numpy.where(dev == 0, 1.0, dev))  # unequal integers past 2**53: >= 1
        dev[unbounded] = numpy.inf
        out = ~equal & (unbounded | (dev > tolerance.abs_tol + tolerance.rel_tol * numpy.abs(a)))
        rel = numpy.where(equal, 0.0, dev / numpy.abs(a))
        rel[numpy.isnan(rel)] = numpy.inf
    return _NumericChunk(equal=equal, out=out, dev=dev, rel=rel)


# --- tables (CSV and Parquet) ----------------------------------------------------------------------


@dataclass
class _ColumnStats:
    out: int = 0  # cells beyond the tolerance
    within: int = 0  # cells not equal but within the tolerance
    deviation: _Deviation = field(default_factory=_Deviation)


@dataclass
class _ColumnChunk:
    out_rows: NDArray[np.intp]
    not_equal: int
    extremes: tuple[float, float, int] | None = None  # max abs, max rel, row of max abs


class _TableDiff:
    """What two tables differ in, accumulated window by window (rows aligned by position)."""

    def __init__(self, fmt: str, columns_a: Sequence[str], columns_b: Sequence[str], tolerance: Tolerance) -> None:
        self.fmt, self.tolerance = fmt, tolerance
        self.columns_a, self.columns_b = list(columns_a), list(columns_b)
        in_b = set(columns_b)
        self.common = [c for c in columns_a if c in in_b]
        self.rows_a = self.rows_b = 0
        self.stats = {c: _ColumnStats() for c in self.common}
        self.cells_compared = self.rows_out = 0
        self.first_rows: list[dict[str, Any]] = []
        self.dtypes: dict[str, tuple[str, str]] = {}  # columns whose type differs
        self.dtype_problems: list[str] = []  # the differences that make the tables differ
        self.extra: dict[str, Any] | None = None

    def set_dtypes(
        self, types_a: dict[str, str], types_b: dict[str, str], kind: Callable[[str], str | None] | None = None
    ) -> None:
        """Record the column types; ``kind`` maps a type to the class that must match (CSV infers
        types from a sample, so only int-vs-text matters there), else types must be equal."""
        for name in self.common:
            ta, tb = types_a.get(name), types_b.get(name)
            if ta is None or tb is None or ta == tb:
                continue
            self.dtypes[name] = (ta, tb)
            ka, kb = (kind(ta), kind(tb)) if kind else (ta, tb)
            if ka is not None and kb is not None and ka != kb:
                self.dtype_problems.append(name)

    def add(self, ta: Any, tb: Any, offset: int) -> None:
        """Compare two aligned tables (or record batches) of equal length; their first row is ``offset``."""
        numpy = _np()
        outs: dict[str, NDArray[np.intp]] = {}
        for name in self.common:
            chunk = _column_diff(ta.column(name), tb.column(name), self.tolerance)
            stats = self.stats[name]
            stats.out += len(chunk.out_rows)
            stats.within += chunk.not_equal - len(chunk.out_rows)
            if chunk.extremes is not None:
                max_abs, max_rel, row = chunk.extremes
                stats.deviation.update(max_abs, max_rel, offset + row)
            if len(chunk.out_rows):
                outs[name] = chunk.out_rows
        self.cells_compared += ta.num_rows * len(self.common)
        if outs:
            rows = numpy.unique(numpy.concatenate(list(outs.values())))
            self.rows_out += len(rows)
            self._keep_rows(ta, tb, rows[: MAX_ITEMS - len(self.first_rows)], outs, offset)

    def _keep_rows(self, ta: Any, tb: Any, rows: Any, outs: dict[str, Any], offset: int) -> None:
        numpy = _np()
        for row in rows.tolist():
            cells: dict[str, dict[str, str]] = {}
            for name, out_rows in outs.items():
                at = int(numpy.searchsorted(out_rows, row))
                if at < len(out_rows) and out_rows[at] == row and len(cells) < MAX_CELLS_PER_ROW:
                    cells[short(name)] = {
                        "original": short(ta.column(name)[row].as_py()),
                        "replay": short(tb.column(name)[row].as_py()),
                    }
            self.first_rows.append({"row": offset + row, "cells": cells})

    def set_extra(self, side: str, first_row: int, count: int) -> None:
        self.extra = {"in": side, "first_row": first_row, "count": count}

    # -- the report --

    def schema_problems(self) -> list[str]:
        problems = []
        added = [c for c in self.columns_b if c not in set(self.columns_a)]
        removed = [c for c in self.columns_a if c not in set(self.columns_b)]
        if added:
            problems.append(f"{_names(added)} added")
        if removed:
            problems.append(f"{_names(removed)} removed")
        if not added and not removed and self.columns_a != self.columns_b:
            problems.append("column order changed")
        for name in self.dtype_problems[:3]:
            ta, tb = self.dtypes[name]
            problems.append(f"dtype of {name!r}: {ta} -> {tb}")
        if len(self.dtype_problems) > 3:
            problems.append(f"{len(self.dtype_problems) - 3} more dtype changes")
        return problems

    def report(self, path: str) -> ObjectComparison:
        problems = self.schema_problems()
        if self.rows_a != self.rows_b:
            problems.append(f"rows {self.rows_a} -> {self.rows_b}")
        cells_out = sum(s.out for s in self.stats.values())
        deviation = _Deviation()
        for name, stats in self.stats.items():
            if stats.deviation.max_abs is not None:
                deviation.merge(
                    _Deviation(stats.deviation.max_abs, stats.deviation.max_rel, (name, stats.deviation.where))
                )
        if cells_out:
            problems.append(self._cells_summary(cells_out))
        verdict: ComparisonVerdict = "differs" if problems else "equivalent"
        summary = f"{self.fmt}: " + ("; ".join(problems) if problems else self._equivalent_summary(deviation))
        return ObjectComparison(
            path=path,
            verdict=verdict,
            format=self.fmt,
            tolerance=self.tolerance,
            summary=summary,
            max_abs_deviation=deviation.max_abs,
            max_rel_deviation=deviation.max_rel,
            details=self._details(cells_out),
        )

    def _cells_summary(self, cells_out: int) -> str:
        columns = [(s.out, n) for n, s in self.stats.items() if s.out]
        worst = max(columns)[1]
        dev = self.stats[worst].deviation
        where = f": max abs deviation {dev.max_abs:.3g} at row {dev.where}" if dev.max_abs is not None else ""
        return (
            f"{_n(cells_out, 'cell')} out of tolerance ({self.tolerance.describe()}) in {_n(len(columns), 'column')} "
            f"(worst {worst!r}{where})"
        )

    def _equivalent_summary(self, deviation: _Deviation) -> str:
        shape = f"{self.rows_a} rows x {len(self.columns_a)} columns"
        within = sum(s.within for s in self.stats.values())
        if not within:
            return f"{shape}, all cells equal (the bytes differ in formatting only)"
        if deviation.max_abs is None or deviation.where is None:
            return f"{shape} equal within {self.tolerance.describe()}; {_n(within, 'cell')} written differently"
        name, row = deviation.where
        return (
            f"{shape} equal within {self.tolerance.describe()}; {_n(within, 'cell')} differ, largest deviation "
            f"{deviation.max_abs:.3g} (rel {deviation.max_rel or 0:.3g}) in {name!r} at row {row}"
        )

    def _details(self, cells_out: int) -> dict[str, Any]:
        touched = sorted((s for s in self.stats.items() if s[1].out or s[1].within), key=lambda s: -s[1].out)
        details: dict[str, Any] = {
            "rows": {"original": self.rows_a, "replay": self.rows_b},
            "columns": {"original": len(self.columns_a), "replay": len(self.columns_b)},
            "schema": self._schema_details(),
            "cells_compared": self.cells_compared,
            "cells_out_of_tolerance": cells_out,
            "cells_within_tolerance": sum(s.within for s in self.stats.values()),
            "rows_out_of_tolerance": self.rows_out,
            "columns_with_differences": len(touched),
            "column_stats": {short(name): _column_details(stats) for name, stats in touched[:MAX_ITEMS]},
            "first_differing_rows": self.first_rows,
        }
        if self.extra:
            details["extra_rows"] = self.extra
        return details

    def _schema_details(self) -> dict[str, Any]:
        added = [c for c in self.columns_b if c not in set(self.columns_a)]
        removed = [c for c in self.columns_a if c not in set(self.columns_b)]
        return {
            "added": [short(c) for c in added[:MAX_ITEMS]],
            "removed": [short(c) for c in removed[:MAX_ITEMS]],
            "added_count": len(added),
            "removed_count": len(removed),
            "order_changed": not added and not removed and self.columns_a != self.columns_b,
            "dtypes": {
                short(name): {"original": ta, "replay": tb}
                for name, (ta, tb) in itertools.islice(self.dtypes.items(), MAX_ITEMS)
            },
            "dtype_changes": len(self.dtypes),
        }


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _names(columns: list[str]) -> str:
    shown = ", ".join(repr(short(c, 40)) for c in columns[:3])
    more = f" and {len(columns) - 3} more" if len(columns) > 3 else ""
    return f"column{'s' if len(columns) > 1 else ''} {shown}{more}"


def _column_details(stats: _ColumnStats) -> dict[str, Any]:
    return {
        "out_of_tolerance": stats.out,
        "within_tolerance": stats.within,
        "max_abs_deviation": stats.deviation.max_abs,
        "max_rel_deviation": stats.deviation.max_rel,
        "max_abs_deviation_row": stats.deviation.where,
    }


def _plain(column: Any) -> Any:
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    return column


def _column_diff(a: Any, b: Any, tolerance: Tolerance) -> _ColumnChunk:
    import pyarrow as pa

    a, b = _plain(a), _plain(b)
    if _is_number(a.type) and _is_number(b.type):
        return _numeric_columns(a, b, tolerance)
    if pa.types.is_string(a.type) and pa.types.is_string(b.type):
        return _text_columns(a, b, tolerance)
    return _exact_columns(a, b)


def _is_number(dtype: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype))


def _numbers(column: Any) -> NDArray[Any]:
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_integer(column.type) and column.null_count == 0:
        return column.to_numpy()  # type: ignore[no-any-return]
    return pc.cast(column, pa.float64()).fill_null(math.nan).to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]


def _numeric_columns(a: Any, b: Any, tolerance: Tolerance) -> _ColumnChunk:
    numpy = _np()
    null_a = a.is_null().to_numpy(zero_copy_only=False)
    null_b = b.is_null().to_numpy(zero_copy_only=False)
    chunk = numeric_diff(_numbers(a), _numbers(b), tolerance)
    both_null = null_a & null_b
    one_null = null_a != null_b
    equal = (chunk.equal & ~one_null) | both_null
    out = (chunk.out & ~both_null) | one_null
    chunk = _NumericChunk(equal=equal, out=out, dev=numpy.where(one_null, numpy.inf, chunk.dev), rel=chunk.rel)
    return _ColumnChunk(numpy.flatnonzero(out), int((~equal).sum()), chunk.extremes())


def _equal_mask(a: Any, b: Any) -> NDArray[np.bool_]:
    import pyarrow.compute as pc

    both_null = pc.and_(a.is_null(), b.is_null())
    return pc.or_kleene(pc.equal(a, b), both_null).fill_null(False).to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]


def _text_columns(a: Any, b: Any, tolerance: Tolerance) -> _ColumnChunk:
    """CSV cells: equal text is equal; otherwise numbers when both parse as numbers, else different."""
    numpy = _np()
    rows = numpy.flatnonzero(~_equal_mask(a, b))
    if not len(rows):
        return _ColumnChunk(rows, 0)
    values_a, ok_a = _parse_numbers(a.take(rows))
    values_b, ok_b = _parse_numbers(b.take(rows))
    both = ok_a & ok_b
    chunk = numeric_diff(values_a[both], values_b[both], tolerance)
    out_rows = numpy.sort(numpy.concatenate([rows[~both], rows[both][chunk.out]]))
    extremes = chunk.extremes()
    if extremes is not None:
        extremes = (extremes[0], extremes[1], int(rows[both][extremes[2]]))
    elif both.any():  # other text, same numbers ("1.0" and "1.00")
        extremes = (0.0, 0.0, int(rows[both][0]))
    return _ColumnChunk(out_rows, len(rows), extremes)


def _parse_numbers(cells: Any) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Each cell as a float, and whether it is one (a text cell is not)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    numpy = _np()
    try:
        values = pc.cast(cells, pa.float64()).fill_null(math.nan).to_numpy(zero_copy_only=False)
        return values, ~cells.is_null().to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    values, ok = numpy.full(len(cells), math.nan), numpy.zeros(len(cells), dtype=bool)
    for i, cell in enumerate(cells.to_pylist()):
        with contextlib.suppress(TypeError, ValueError):
            values[i], ok[i] = float(cell), True
    return values, ok


def _exact_columns(a: Any, b: Any) -> _ColumnChunk:
    import pyarrow as pa

    numpy = _np()
    try:
        equal = _equal_mask(a, b)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):  # nested types, or two types
        equal = numpy.array([x == y for x, y in zip(a.to_pylist(), b.to_pylist(), strict=True)], dtype=bool)
    rows = numpy.flatnonzero(~equal)
    return _ColumnChunk(rows, len(rows))


class _Aligned:
    """Two streams of record batches re-cut so that each pair holds the same rows. Iteration stops
    when either stream ends; :meth:`rows_left` then counts the rows the other one still has."""

    def __init__(self, batches_a: Iterator[Any], batches_b: Iterator[Any]) -> None:
        self._batches = (batches_a, batches_b)
        self._rest: list[Any] = [None, None]

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        while self._next(0) and self._next(1):
            rest_a, rest_b = self._rest
            n = min(rest_a.num_rows, rest_b.num_rows)
            yield rest_a.slice(0, n), rest_b.slice(0, n)
            self._rest = [rest_a.slice(n), rest_b.slice(n)]

    def _next(self, side: int) -> bool:
        while self._rest[side] is None or self._rest[side].num_rows == 0:
            self._rest[side] = next(self._batches[side], None)
            if self._rest[side] is None:
                return False
        return True

    def rows_left(self, side: int) -> int:
        rest = self._rest[side]
        left = sum(int(batch.num_rows) for batch in self._batches[side])
        return left + (int(rest.num_rows) if rest is not None else 0)


# --- CSV ---------------------------------------------------------------------------------------------


class _Lines:
    """One CSV stream read in blocks; ``data[pos:]`` is what is not consumed yet."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.data = b""
        self.pos = 0
        self.eof = False

    @property
    def avail(self) -> int:
        return len(self.data) - self.pos

    def fill(self, want: int) -> None:
        if self.avail >= want or self.eof:
            return
        rest = self.data[self.pos :]
        parts, have = [rest] if rest else [], len(rest)
        self.data = rest = b""  # not held while reading: two blocks per side at most
        while have < want:
            chunk = self.stream.read(max(CSV_BLOCK, want - have))
            if not chunk:
                self.eof = True
                break
            parts.append(chunk)
            have += len(chunk)
        self.data = parts[0] if len(parts) == 1 else b"".join(parts)  # one block read: no copy
        self.pos = 0

    def peek(self, n: int) -> bytes:
        return self.data[self.pos : self.pos + n]

    def buffer(self, n: int) -> Any:
        """The next ``n`` bytes as a pyarrow buffer, without a copy."""
        import pyarrow as pa

        return pa.py_buffer(self.data).slice(self.pos, n)

    def has_quote(self, n: int) -> bool:
        return self.data.find(b'"', self.pos, self.pos + n) >= 0

    def line_end(self, start: int = 0) -> int:
        """Offset (from ``pos``) just past the first line ending at or after ``start``; the end of
        the data at EOF. Reads on while a line is longer than what is buffered."""
        while True:
            at = self.data.find(b"\n", self.pos + start)
            if at >= 0:
                return at + 1 - self.pos
            if self.eof:
                return self.avail
            if self.avail > CSV_MAX_LINE:
                raise csvlib.Error(f"a line longer than {CSV_MAX_LINE} bytes")
            self.fill(2 * self.avail + CSV_BLOCK)

    def read_line(self) -> bytes:
        end = self.line_end()
        line = self.peek(end)
        self.pos += end
        return line

    def window(self, size: int) -> tuple[int, int]:
        """``(end, lines)``: whole lines from ``pos`` up to about ``size`` bytes (at least one line)."""
        self.fill(size)
        end = self.data.rfind(b"\n", self.pos, self.pos + size) + 1 - self.pos
        if end <= 0:
            end = self.line_end()
        elif self.eof and self.pos + size >= len(self.data):
            end = self.avail
        return end, _line_count(self.data, self.pos, self.pos + end)

    def lines_end(self, count: int) -> tuple[int, int]:
        """``(end, lines)``: the next ``count`` (>= 1) lines (fewer at EOF)."""
        numpy = _np()
        lines = end = searched = 0  # end: just past the last line ending found
        while True:
            if searched >= self.avail:
                if self.eof:
                    return (self.avail, lines + 1) if self.avail > end else (end, lines)
                self.fill(self.avail + CSV_WINDOW)
                continue
            size = min(_SCAN, self.avail - searched)  # by pieces: the temporary mask stays small
            view = numpy.frombuffer(self.data, dtype=numpy.uint8, count=size, offset=self.pos + searched)
            newlines = numpy.flatnonzero(view == 10)
            if len(newlines) >= count - lines:
                return searched + int(newlines[count - lines - 1]) + 1, count
            if len(newlines):
                lines, end = lines + len(newlines), searched + int(newlines[-1]) + 1
            searched += size

    def count_rest(self) -> int:
        """Rows left (lines that are not blank), read to EOF without keeping them."""
        count, partial = 0, self.data[self.pos :]
        chunks = itertools.chain([b""], (bytes(c) for c in iter_chunks(self.stream, chunk_size=CSV_BLOCK)))
        for chunk in chunks:
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()
            count += sum(1 for line in lines if line.strip(b"\r"))
        self.pos, self.data, self.eof = 0, b"", True
        return count + (1 if partial.strip(b"\r") else 0)


def _line_count(data: bytes, start: int, end: int) -> int:
    """Lines in ``data[start:end]`` (a last one without a line ending counts)."""
    count = _newlines(data, start, end)
    return count + (1 if end > start and data[end - 1 : end] != b"\n" else 0)


def _newlines(data: bytes, start: int, end: int) -> int:
    if end - start > 4096:  # numpy counts about 4x faster than bytes.count (a full pass per block)
        numpy = _np()
        count = 0
        for at in range(start, end, _SCAN):  # by pieces: the temporary mask stays small
            piece = numpy.frombuffer(data, numpy.uint8, count=min(_SCAN, end - at), offset=at)
            count += int(numpy.count_nonzero(piece == 10))
    else:
        count = data.count(b"\n", start, end)
    return count


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        if name in seen:
            seen[name] += 1
            unique.append(f"{name}.{seen[name]}")
        else:
            seen[name] = 0
            unique.append(name)
    return unique


def _header(line: bytes, delimiter: str) -> list[str]:
    text = line.decode("utf-8").removeprefix("\ufeff").rstrip("\r\n")
    return _unique(next(csvlib.reader([text], delimiter=delimiter), []))


def _csv_kind(dtype: str) -> str | None:
    """CSV stores no type: ``1`` and ``1.5`` are both numbers; only the class of a column matters."""
    if dtype == "null":
        return None  # empty in the sample: unknown
    if dtype.startswith(("int", "uint", "double", "float", "decimal")):
        return "number"
    if dtype.startswith(("timestamp", "date", "time")):
        return "time"
    return dtype


_CONTINUE, _DONE, _SWITCH = "continue", "done", "switch"


class _CsvRun:
    """The lockstep comparison of two CSV streams (see the module docstring for the fast path)."""

    def __init__(self, original: BinaryIO, replay: BinaryIO, fmt: str, tolerance: Tolerance) -> None:
        self.a, self.b = _Lines(original), _Lines(replay)
        self.fmt, self.delimiter = fmt, "\t" if fmt == "tsv" else ","
        self.tolerance = tolerance
        self.rows = 0  # data rows consumed on both sides
        self.window_size = CSV_WINDOW  # grows while the rows differ densely, back to CSV_WINDOW on a match
        self.head = b""  # the line in progress: consumed on both sides, the same so far, no line ending yet

    def run(self, path: str) -> ObjectComparison:
        header_a, header_b = self.a.read_line(), self.b.read_line()
        self.columns_a, self.columns_b = _header(header_a, self.delimiter), _header(header_b, self.delimiter)
        self.diff = _TableDiff(self.fmt, self.columns_a, self.columns_b, self.tolerance)
        self.a.fill(CSV_BLOCK)
        self.b.fill(CSV_BLOCK)
        self.diff.set_dtypes(
            self._sample_types(self.a, header_a, self.columns_a),
            self._sample_types(self.b, header_b, self.columns_b),
            _csv_kind,
        )
        state = _SWITCH if b'"' in header_a or b'"' in header_b else _CONTINUE
        while state == _CONTINUE:
            state = self._step()
        if state == _SWITCH:
            self._parse_rest()
        self.diff.rows_a += self.rows
        self.diff.rows_b += self.rows
        return self.diff.report(path)

    def _sample_types(self, side: _Lines, header: bytes, columns: list[str]) -> dict[str, str]:
        """Column types as pyarrow infers them from the first rows (CSV itself has none)."""
        import pyarrow as pa
        import pyarrow.csv as pcsv

        end = side.data.rfind(b"\n", side.pos, side.pos + CSV_BLOCK) + 1
        if end <= side.pos:
            return {}
        sample = header + side.data[side.pos : end]
        try:
            table = pcsv.read_csv(pa.py_buffer(sample), parse_options=pcsv.ParseOptions(delimiter=self.delimiter))
        except pa.ArrowInvalid:
            return {}
        return {name: str(table.schema.field(i).type) for i, name in enumerate(columns[: table.num_columns])}

    def _step(self) -> str:
        a, b = self.a, self.b
        a.fill(CSV_BLOCK)
        b.fill(CSV_BLOCK)
        if not a.avail or not b.avail:
            if self.head and (a.avail or b.avail):  # the last line goes on, on one side only
                self._restore_head()
                return self._window()
            self.rows += 1 if self.head.strip(b"\r") else 0  # the same last line, without a line ending
            self.head = b""
            self._one_side_ended()
            return _DONE
        end, same = self._same_prefix()
        if same:
            self.window_size = CSV_WINDOW
            return self._skip_same(end)
        if self.head:  # the difference may lie in the line begun in an earlier block: back to its start
            self._restore_head()
            end, same = self._same_prefix()
        if end < 4096:  # a difference right away again: differences are dense, parse more at once
            self.window_size = min(2 * self.window_size, CSV_WINDOW_MAX)
        if end and self._skip(end) == _SWITCH:
            return _SWITCH
        return self._window()

    def _same_prefix(self) -> tuple[int, bool]:
        """``(end, same)``: ``same`` when the next bytes (``end`` of them) are the same on both
        sides, else ``end`` bytes of whole lines at the start are."""
        a, b = self.a, self.b
        n = min(a.avail, b.avail)
        seg_a, seg_b = a.peek(n), b.peek(n)  # no copy when n is all of both buffers (the usual case)
        if seg_a == seg_b:
            return n, True
        return seg_a.rfind(b"\n", 0, first_difference(seg_a, seg_b, n)) + 1, False

    def _skip_same(self, n: int) -> str:
        """Consume ``n`` bytes that are the same on both sides; the line they end inside is kept
        in ``head`` (it is the same on both sides so far)."""
        a, b = self.a, self.b
        if a.has_quote(n):
            self._restore_head()
            return _SWITCH
        start = a.pos
        self.rows += _newlines(a.data, start, start + n)
        last = a.data.rfind(b"\n", start, start + n)
        if a.eof and b.eof and n == a.avail == b.avail:  # the end of both: blank lines there are no rows
            tail = self.head + a.data[start : start + n] if last < 0 else a.data[start : start + n]
            text = tail.rstrip(b"\r\n")
            self.rows -= max(0, tail[len(text) :].count(b"\n") - (1 if text or self.head else 0))
        self.head = self.head + a.data[start : start + n] if last < 0 else a.data[last + 1 : start + n]
        if len(self.head) > CSV_MAX_LINE:
            raise csvlib.Error(f"a line longer than {CSV_MAX_LINE} bytes")
        a.pos += n
        b.pos += n
        return _CONTINUE

    def _restore_head(self) -> None:
        """Make the line in progress unconsumed again on both sides (it starts a window or a parse)."""
        if self.head:
            for side in (self.a, self.b):
                side.data, side.pos = self.head + side.data[side.pos :], 0
            self.head = b""

    def _skip(self, end: int) -> str:
        """Consume ``end`` bytes of whole lines that are the same on both sides."""
        if self.a.has_quote(end):
            return _SWITCH
        self.rows += _newlines(self.a.data, self.a.pos, self.a.pos + end)
        self.a.pos += end
        self.b.pos += end
        return _CONTINUE

    def _window(self) -> str:
        """Parse and compare the next lines of both sides, where their bytes differ."""
        end_a, lines_a = self.a.window(self.window_size)
        end_b, lines_b = self.b.lines_end(lines_a)
        if self.a.has_quote(end_a) or self.b.has_quote(end_b):
            return _SWITCH
        table_a = self._parse(self.a.buffer(end_a), self.columns_a)
        table_b = self._parse(self.b.buffer(end_b), self.columns_b)
        if table_a.num_rows != lines_a or table_b.num_rows != lines_b:
            return _SWITCH  # lines are not rows here (e.g. a lone \r ends rows)
        n = min(lines_a, lines_b)
        self.diff.add(table_a.slice(0, n), table_b.slice(0, n), self.rows)
        self.a.pos += end_a
        self.b.pos += end_b
        self.rows += n
        if lines_b < lines_a:  # the replay ended first
            extra = lines_a - n + self.a.count_rest()
            self.diff.set_extra("original", self.rows, extra)
            self.diff.rows_a += extra
            return _DONE
        return _CONTINUE

    def _one_side_ended(self) -> None:
        if self.a.avail:
            count = self.a.count_rest()
            self.diff.set_extra("original", self.rows, count)
            self.diff.rows_a += count
        elif self.b.avail:
            count = self.b.count_rest()
            self.diff.set_extra("replay", self.rows, count)
            self.diff.rows_b += count

    def _options(self, columns: list[str]) -> dict[str, Any]:
        import pyarrow as pa
        import pyarrow.csv as pcsv

        return {
            "parse_options": pcsv.ParseOptions(delimiter=self.delimiter, newlines_in_values=True),
            "convert_options": pcsv.ConvertOptions(
                column_types=dict.fromkeys(columns, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        }

    def _parse(self, window: Any, columns: list[str]) -> Any:
        import pyarrow.csv as pcsv

        # one block (a row never straddles two); pyarrow converts the columns on its threads
        read = pcsv.ReadOptions(column_names=columns, use_threads=True, block_size=window.size + 1)
        return pcsv.read_csv(window, read_options=read, **self._options(columns))

    def _parse_rest(self) -> None:
        """The rest of both streams, parsed CSV-aware (quoted fields may hold newlines)."""
        import pyarrow.csv as pcsv

        readers: list[Iterator[Any]] = []
        for side, columns in ((self.a, self.columns_a), (self.b, self.columns_b)):
            side.fill(1)
            if not side.avail:  # no rows left: pyarrow refuses an empty CSV
                readers.append(iter(()))
                continue
            chained = io.BufferedReader(HeadThenRest(side.data[side.pos :], side.stream), buffer_size=CSV_BLOCK)
            read = pcsv.ReadOptions(column_names=columns, block_size=CSV_PARSE_BLOCK)
            readers.append(iter(pcsv.open_csv(chained, read_options=read, **self._options(columns))))
        aligned = _Aligned(readers[0], readers[1])
        for batch_a, batch_b in aligned:
            self.diff.add(batch_a, batch_b, self.rows)
            self.rows += batch_a.num_rows
        rest_a, rest_b = aligned.rows_left(0), aligned.rows_left(1)
        if rest_a or rest_b:
            self.diff.set_extra("original" if rest_a else "replay", self.rows, rest_a or rest_b)
            self.diff.rows_a += rest_a
            self.diff.rows_b += rest_b


class CsvComparator:
    """CSV (``.csv``) or TSV (``.tsv``), streamed; cells within the tolerance where both are numbers."""

    def __init__(self, fmt: str = "csv") -> None:
        self.name = fmt

    def matches(self, path: str, head: bytes) -> bool:
        return sniff_format(path, head) == (self.name, None)

    def compare(self, original: BinaryIO, replay: BinaryIO, *, path: str, tolerance: Tolerance) -> ComparatorResult:
        pa = _library("pyarrow")
        if pa is None or _library("numpy") is None:
            return _not_installed("pyarrow" if pa is None else "numpy")
        try:
            return _CsvRun(original, replay, self.name, tolerance).run(path)
        except (pa.ArrowInvalid, UnicodeDecodeError, csvlib.Error) as exc:
            return BytesFallback(f"malformed {self.name}: {short(str(exc), 200)}: compared as bytes")


# --- Parquet -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _spilled(stream: BinaryIO, suffix: str) -> Iterator[Any]:
    """A temporary file holding the rest of ``stream`` (read to its end), open at its start."""
    with tempfile.NamedTemporaryFile(prefix="repro-compare-", suffix=suffix) as copy:
        for chunk in iter_chunks(stream, chunk_size=ARRAY_CHUNK_BYTES):
            copy.write(chunk)
        copy.flush()
        copy.seek(0)
        yield copy


@contextlib.contextmanager
def _seekable(stream: BinaryIO, suffix: str = "") -> Iterator[BinaryIO]:
    """``stream`` itself if it can seek, else a temporary copy of it."""
    if stream.seekable():
        stream.seek(0)
        yield stream
        return
    with _spilled(stream, suffix) as copy:
        yield copy


class ParquetComparator:
    """Parquet, record batch by record batch: schema (names, order, types), rows, cells."""

    name = "parquet"

    def matches(self, path: str, head: bytes) -> bool:
        return sniff_format(path, head) == ("parquet", None)

    def compare(self, original: BinaryIO, replay: BinaryIO, *, path: str, tolerance: Tolerance) -> ComparatorResult:
        pa = _library("pyarrow")
        if pa is None or _library("numpy") is None:
            return _not_installed("pyarrow" if pa is None else "numpy")
        import pyarrow.parquet as pq

        with _seekable(original, ".parquet") as file_a, _seekable(replay, ".parquet") as file_b:
            try:
                parquet_a, parquet_b = pq.ParquetFile(file_a), pq.ParquetFile(file_b)
            except (pa.ArrowInvalid, OSError) as exc:
                return BytesFallback(f"malformed parquet: {short(str(exc), 200)}: compared as bytes")
            return _compare_parquet(parquet_a, parquet_b, path, tolerance)


def _compare_parquet(parquet_a: Any, parquet_b: Any, path: str, tolerance: Tolerance) -> ObjectComparison:
    schema_a, schema_b = parquet_a.schema_arrow, parquet_b.schema_arrow
    diff = _TableDiff("parquet", schema_a.names, schema_b.names, tolerance)
    diff.set_dtypes(
        {f.name: str(f.type) for f in schema_a}, {f.name: str(f.type) for f in schema_b}
    )  # Parquet stores types: every change counts
    diff.rows_a, diff.rows_b = parquet_a.metadata.num_rows, parquet_b.metadata.num_rows
    if diff.common:
        offset = 0
        batches_a = parquet_a.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=diff.common)
        batches_b = parquet_b.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=diff.common)
        for batch_a, batch_b in _Aligned(batches_a, batches_b):
            diff.add(batch_a, batch_b, offset)
            offset += batch_a.num_rows
    if diff.rows_a != diff.rows_b:
        shorter = min(diff.rows_a, diff.rows_b)
        side = "original" if diff.rows_a > diff.rows_b else "replay"
        diff.set_extra(side, shorter, abs(diff.rows_a - diff.rows_b))
    return diff.report(path)


# --- JSON ----------------------------------------------------------------------------------------------

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if _IDENTIFIER.fullmatch(key) else f"{path}[{json.dumps(key)}]"


def _preview(value: Any) -> str:
    """The start of ``value`` as JSON, without encoding the whole of a large value."""
    text = ""
    for piece in json.JSONEncoder(allow_nan=True).iterencode(value):
        text += piece
        if len(text) > 80:
            break
    return short(text)


def _is_json_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _JsonDiff:
    def __init__(self, tolerance: Tolerance) -> None:
        self.tolerance = tolerance
        self.items: list[dict[str, Any]] = []
        self.total = self.values = self.numbers_within = 0
        self.deviation = _Deviation()

    def walk(self, original: Any, replay: Any) -> None:
        stack: list[tuple[str, Any, Any]] = [("$", original, replay)]
        while stack:
            path, a, b = stack.pop()
            self.values += 1
            if isinstance(a, dict) and isinstance(b, dict):
                stack.extend(reversed(self._members(path, a, b)))
            elif isinstance(a, list) and isinstance(b, list):
                if len(a) != len(b):
                    self._record(path, "length", len(a), len(b))
                stack.extend(reversed([(_child(path, i), x, y) for i, (x, y) in enumerate(zip(a, b, strict=False))]))
            elif _is_json_number(a) and _is_json_number(b):
                self._number(path, a, b)
            elif type(a) is not type(b):
                self._record(path, "type", a, b)
            elif a != b:
                self._record(path, "changed", a, b)

    def _members(self, path: str, a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
        pairs = []
        for key in itertools.chain(a, (k for k in b if k not in a)):
            if key not in b:
                self._record(_child(path, key), "removed", a[key], None)
            elif key not in a:
                self._record(_child(path, key), "added", None, b[key])
            else:
                pairs.append((_child(path, key), a[key], b[key]))
        return pairs

    def _number(self, path: str, a: float, b: float) -> None:
        if a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)):
            return
        try:
            fa, fb = float(a), float(b)
        except OverflowError:  # integers too large for a float
            self.deviation.update(math.inf, math.inf, path)
            self._record(path, "changed", a, b, math.inf)
            return
        if fa == fb:  # unequal integers that round to the same float
            abs_dev = float(abs(a - b))
            rel_dev = abs_dev / abs(fa) if fa else math.inf
            within = abs_dev <= self.tolerance.abs_tol + self.tolerance.rel_tol * abs(fa)
        else:
            (abs_dev, rel_dev), within = deviations(fa, fb), self.tolerance.matches(fa, fb)
        self.deviation.update(abs_dev, rel_dev, path)
        if within:
            self.numbers_within += 1
        else:
            self._record(path, "changed", a, b, abs_dev)

    def _record(self, path: str, change: str, a: Any, b: Any, abs_dev: float | None = None) -> None:
        self.total += 1
        if len(self.items) >= MAX_ITEMS:
            return
        item: dict[str, Any] = {"path": short(path, 200), "change": change}
        if change != "added":
            item["original"] = _preview(a)
        if change != "removed":
            item["replay"] = _preview(b)
        if abs_dev is not None:
            item["abs_deviation"] = abs_dev
        self.items.append(item)

    def report(self, path: str) -> ObjectComparison:
        tolerance = self.tolerance
        if self.total:
            first = self.items[0]
            summary = f"json: {self.total} of {self.values} values differ (first at {first['path']}: {first['change']})"
        elif self.numbers_within:
            summary = (
                f"json: {self.values} values equal within {tolerance.describe()}; {self.numbers_within} numbers "
                f"differ, largest deviation {self.deviation.max_abs:.3g} at {self.deviation.where}"
            )
        else:
            summary = f"json: {self.values} values equal (the bytes differ in formatting or key order only)"
        return ObjectComparison(
            path=path,
            verdict="differs" if self.total else "equivalent",
            format="json",
            tolerance=tolerance,
            summary=summary,
            max_abs_deviation=self.deviation.max_abs,
            max_rel_deviation=self.deviation.max_rel,
            details={
                "values_compared": self.values,
                "differences_total": self.total,
                "numbers_within_tolerance": self.numbers_within,
                "differences": self.items,
                "max_abs_deviation_at": None if self.deviation.where is None else short(self.deviation.where, 200),
            },
        )


class JsonComparator:
    """JSON (stdlib), up to :data:`JSON_MAX_BYTES`: the paths that differ; numbers within the tolerance;
    object keys in any order, lists by index."""

    name = "json"

    def matches(self, path: str, head: bytes) -> bool:
        return sniff_format(path, head) == ("json", None)

    def compare(self, original: BinaryIO, replay: BinaryIO, *, path: str, tolerance: Tolerance) -> ComparatorResult:
        values = []
        for side, stream in (("original", original), ("replay", replay)):
            data = read_up_to(stream, JSON_MAX_BYTES + 1)
            if len(data) > JSON_MAX_BYTES:
                return BytesFallback(f"json larger than {JSON_MAX_BYTES // 2**20} MiB: compared as bytes")
            try:
                values.append(json.loads(data))
            except (ValueError, RecursionError) as exc:
                return BytesFallback(f"malformed json (the {side}: {short(str(exc), 200)}): compared as bytes")
        diff = _JsonDiff(tolerance)
        diff.walk(values[0], values[1])
        return diff.report(path)


# --- NumPy -------------------------------------------------------------------------------------------


@dataclass
class _ArrayStats:
    """One array against its replay, element by element in chunks."""

    name: str
    shape: tuple[tuple[int, ...], tuple[int, ...]]
    dtype: tuple[str, str]
    order: str = "C"
    elements: int = 0
    not_equal: int = 0
    out: int = 0
    deviation: _Deviation = field(default_factory=_Deviation)
    first_out: dict[str, Any] | None = None
    problem: str | None = None  # shape or dtype changed: the array differs whatever its values

    def add(self, original: NDArray[Any], replay: NDArray[Any], offset: int, tolerance: Tolerance) -> None:
        numpy = _np()
        self.elements += len(original)
        numeric = original.dtype.kind in "iufc" and replay.dtype.kind in "iufc"
        if numeric:
            chunk = numeric_diff(original, replay, tolerance)
            equal, out = chunk.equal, chunk.out
            extremes = chunk.extremes()
            if extremes is not None:
                self.deviation.update(extremes[0], extremes[1], self._index(offset + extremes[2]))
        else:
            equal = numpy.asarray(original == replay, dtype=bool)
            out = ~equal
        self.not_equal += int((~equal).sum())
        count = int(out.sum())
        if count and self.first_out is None:
            at = int(out.argmax())
            self.first_out = {
                "index": self._index(offset + at),
                "original": short(original[at].item()),
                "replay": short(replay[at].item()),
            }
        self.out += count

    def _index(self, flat: int) -> list[int]:
        numpy = _np()
        shape = self.shape[0]
        return [int(i) for i in numpy.unravel_index(flat, shape, order=self.order)] if shape else []

    @property
    def differs(self) -> bool:
        return bool(self.problem or self.out)

    def details(self) -> dict[str, Any]:
        same_shape, same_dtype = self.shape[0] == self.shape[1], self.dtype[0] == self.dtype[1]
        return {
            "name": short(self.name, 200),
            "shape": list(self.shape[0])
            if same_shape
            else {"original": list(self.shape[0]), "replay": list(self.shape[1])},
            "dtype": self.dtype[0] if same_dtype else {"original": self.dtype[0], "replay": self.dtype[1]},
            "elements": self.elements,
            "not_equal": self.not_equal,
            "out_of_tolerance": self.out,
            "max_abs_deviation": self.deviation.max_abs,
            "max_rel_deviation": self.deviation.max_rel,
            "max_abs_deviation_at": self.deviation.where,
            "first_out_of_tolerance": self.first_out,
            "problem": self.problem,
        }

    def summary(self) -> str:
        if self.problem:
            return self.problem
        if self.out:
            where = self.first_out["index"] if self.first_out else "?"
            return f"{self.out} of {self.elements} elements out of tolerance (first at {where}, max abs deviation {self.deviation.max_abs:.3g})"
        if self.not_equal:
            return f"{self.elements} elements equal within tolerance, largest deviation {self.deviation.max_abs:.3g} at {self.deviation.where}"
        return f"{self.elements} elements equal"


def _npy_header(stream: BinaryIO) -> tuple[tuple[int, ...], bool, Any]:
    """``(shape, fortran_order, dtype)`` from an ``.npy`` header; never unpickles anything."""
    from numpy.lib import format as npy_format

    version = npy_format.read_magic(stream)
    if version == (1, 0):
        return npy_format.read_array_header_1_0(stream)
    if version in ((2, 0), (3, 0)):
        return npy_format.read_array_header_2_0(stream)
    raise ValueError(f"npy format version {version} is not supported")


def _compare_npy(original: BinaryIO, replay: BinaryIO, name: str, tolerance: Tolerance) -> _ArrayStats | BytesFallback:
    numpy = _np()
    try:
        (shape_a, fortran_a, dtype_a), (shape_b, fortran_b, dtype_b) = _npy_header(original), _npy_header(replay)
    except (ValueError, SyntaxError, TokenError) as exc:  # numpy parses the header as a literal, never runs it
        return BytesFallback(f"malformed npy: {short(str(exc), 200)}: compared as bytes")
    if dtype_a.hasobject or dtype_b.hasobject:
        return BytesFallback("npy of Python objects (a pickle, never loaded): compared as bytes")
    stats = _ArrayStats(name, (tuple(shape_a), tuple(shape_b)), (str(dtype_a), str(dtype_b)), "F" if fortran_a else "C")
    if shape_a != shape_b:
        stats.problem = f"shape {tuple(shape_a)} -> {tuple(shape_b)}"
        return stats
    if fortran_a != fortran_b:
        return BytesFallback("npy memory order differs (C vs Fortran): compared as bytes")
    same_dtype = dtype_a.newbyteorder("=") == dtype_b.newbyteorder("=")  # byte order aside
    comparable = same_dtype or (dtype_a.kind in "iufc" and dtype_b.kind in "iufc")
    if not same_dtype:
        stats.problem = f"dtype {dtype_a} -> {dtype_b}"
    if not comparable:
        return stats
    total = math.prod(shape_a)
    step = max(1, ARRAY_CHUNK_BYTES // max(dtype_a.itemsize, dtype_b.itemsize, 1))
    buf_a, buf_b = bytearray(step * dtype_a.itemsize), bytearray(step * dtype_b.itemsize)
    for offset in range(0, total, step):
        count = min(step, total - offset)
        view_a, view_b = memoryview(buf_a)[: count * dtype_a.itemsize], memoryview(buf_b)[: count * dtype_b.itemsize]
        if _fill_view(original, view_a) < len(view_a) or _fill_view(replay, view_b) < len(view_b):
            return BytesFallback("malformed npy: the data is shorter than its header says: compared as bytes")
        chunk_a = numpy.frombuffer(buf_a, dtype=dtype_a, count=count)
        chunk_b = numpy.frombuffer(buf_b, dtype=dtype_b, count=count)
        stats.add(chunk_a, chunk_b, offset, tolerance)
    return stats


def _fill_view(stream: BinaryIO, view: memoryview) -> int:
    n = 0
    while n < len(view):
        got = stream.readinto(view[n:])  # type: ignore[attr-defined]  # files and raw streams have it
        if not got:
            break
        n += got
    return n


def _arrays_report(
    fmt: str, path: str, arrays: list[_ArrayStats], tolerance: Tolerance, **extra: Any
) -> ObjectComparison:
    deviation = _Deviation()
    for stats in arrays:
        if stats.deviation.max_abs is not None:
            deviation.merge(_Deviation(stats.deviation.max_abs, stats.deviation.max_rel, stats.name))
    differing = [s for s in arrays if s.differs]
    only = {k: v for k, v in extra.items() if v}
    verdict: ComparisonVerdict = "differs" if differing or only else "equivalent"
    if len(arrays) == 1 and not only and fmt == "npy":
        summary = f"npy: {arrays[0].summary()}"
    elif verdict == "differs":
        parts = [f"{len(differing)} of {len(arrays)} arrays differ"] if differing else []
        parts += [f"{_n(len(v), 'array')} {k.replace('_', ' ')}" for k, v in only.items()]
        first = f" (first {differing[0].name!r}: {differing[0].summary()})" if differing else ""
        summary = f"{fmt}: " + "; ".join(parts) + first
    else:
        summary = f"{fmt}: {_n(len(arrays), 'array')} equal within {tolerance.describe()}"
        if deviation.max_abs:
            summary += f", largest deviation {deviation.max_abs:.3g} in {deviation.where!r}"
    ordered = differing + [s for s in arrays if not s.differs]
    details: dict[str, Any] = {
        "arrays_compared": len(arrays),
        "arrays_differing": len(differing),
        "arrays": [s.details() for s in ordered[:MAX_ITEMS]],
    }
    for key, names in extra.items():
        details[key] = [short(n, 200) for n in names[:MAX_ITEMS]]
        details[f"{key}_count"] = len(names)
    return ObjectComparison(
        path=path,
        verdict=verdict,
        format=fmt,
        tolerance=tolerance,
        summary=summary,
        max_abs_deviation=deviation.max_abs,
        max_rel_deviation=deviation.max_rel,
        details=details,
    )


class NpyComparator:
    """``.npy``, streamed chunk by chunk from its header (``allow_pickle=False`` semantics)."""

    name = "npy"

    def matches(self, path: str, head: bytes) -> bool:
        return sniff_format(path, head) == ("npy", None)

    def compare(self, original: BinaryIO, replay: BinaryIO, *, path: str, tolerance: Tolerance) -> ComparatorResult:
        if _library("numpy") is None:
            return _not_installed("numpy")
        stats = _compare_npy(original, replay, path, tolerance)
        if isinstance(stats, BytesFallback):
            return stats
        drain(original)
        drain(replay)
        report = _arrays_report("npy", path, [stats], tolerance)
        details = stats.details()
        del details["name"]
        return report.model_copy(update={"details": details})


class NpzComparator:
    """``.npz``: every member array (by name) like an ``.npy``; members are streamed, never pickled."""

    name = "npz"

    def matches(self, path: str, head: bytes) -> bool:
        return sniff_format(path, head) == ("npz", None)

    def compare(self, original: BinaryIO, replay: BinaryIO, *, path: str, tolerance: Tolerance) -> ComparatorResult:
        if _library("numpy") is None:
            return _not_installed("numpy")
        with _seekable(original, ".npz") as file_a, _seekable(replay, ".npz") as file_b:
            try:
                zip_a, zip_b = zipfile.ZipFile(file_a), zipfile.ZipFile(file_b)
            except zipfile.BadZipFile as exc:
                return BytesFallback(f"malformed npz: {exc}: compared as bytes")
            with zip_a, zip_b:
                return _compare_npz(zip_a, zip_b, path, tolerance)


def _compare_npz(zip_a: zipfile.ZipFile, zip_b: zipfile.ZipFile, path: str, tolerance: Tolerance) -> ComparatorResult:
    names_a, names_b = zip_a.namelist(), zip_b.namelist()
    arrays = []
    for member in [n for n in names_a if n in set(names_b)]:
        with zip_a.open(member) as member_a, zip_b.open(member) as member_b:
            stats = _compare_npy(member_a, member_b, member.removesuffix(".npy"), tolerance)  # type: ignore[arg-type]
        if isinstance(stats, BytesFallback):
            return BytesFallback(f"npz member {member!r}: {stats.note}")
        arrays.append(stats)
    return _arrays_report(
        "npz",
        path,
        arrays,
        tolerance,
        only_in_original=[n.removesuffix(".npy") for n in names_a if n not in set(names_b)],
        only_in_replay=[n.removesuffix(".npy") for n in names_b if n not in set(names_a)],
    )


# --- PyTorch -----------------------------------------------------------------------------------------


class TorchComparator:
    """PyTorch ``.pt`` / ``.pth`` (zip format) state dicts: each tensor by name, like NumPy arrays.

    Loaded with ``torch.load(weights_only=True, mmap=True)``; without torch the object is
    compared as bytes.
    """

    name = "pt"

    def matches(self, path: str, head: bytes) -> bool:
        return sniff_format(path, head) == ("pt", None)

    def compare(self, original: BinaryIO, replay: BinaryIO, *, path: str, tolerance: Tolerance) -> ComparatorResult:
        torch = _library("torch")
        if torch is None:
            return _not_installed("torch")
        with _local_path(original) as file_a, _local_path(replay) as file_b:
            try:
                state_a, state_b = _torch_load(torch, file_a), _torch_load(torch, file_b)
            except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError/UnpicklingError/... for bad files
                return BytesFallback(f"malformed pt ({type(exc).__name__}: {short(str(exc), 200)}): compared as bytes")
            leaves_a, leaves_b = _tensor_leaves(torch, state_a), _tensor_leaves(torch, state_b)
            arrays = [
                _compare_tensors(name, leaves_a[name], leaves_b[name], tolerance)
                for name in leaves_a
                if name in leaves_b
            ]
            return _arrays_report(
                "pt",
                path,
                arrays,
                tolerance,
                only_in_original=[n for n in leaves_a if n not in leaves_b],
                only_in_replay=[n for n in leaves_b if n not in leaves_a],
            )


@contextlib.contextmanager
def _local_path(stream: BinaryIO) -> Iterator[str]:
    name = getattr(stream, "name", None)
    if isinstance(name, str) and stream.seekable() and os.path.isfile(name):
        yield name
        return
    with _spilled(stream, ".pt") as copy:
        yield copy.name


def _torch_load(torch: Any, file: str) -> Any:
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except TypeError:  # torch < 2.1 has no mmap
        return torch.load(file, map_location="cpu", weights_only=True)


def _tensor_leaves(torch: Any, value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists of a state dict flattened to ``a.b.0``; non-tensor leaves kept as values."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return {prefix or "$": value}
    leaves: dict[str, Any] = {}
    for key, item in items:
        leaves.update(_tensor_leaves(torch, item, f"{prefix}.{key}" if prefix else str(key)))
    return leaves


def _compare_tensors(name: str, a: Any, b: Any, tolerance: Tolerance) -> _ArrayStats:
    if not (hasattr(a, "shape") and hasattr(b, "shape")):  # a plain value (an epoch, a name)
        stats = _ArrayStats(name, ((), ()), (type(a).__name__, type(b).__name__))
        if _is_json_number(a) and _is_json_number(b):
            same = tolerance.matches(float(a), float(b))
        else:
            same = type(a) is type(b) and bool(a == b)
        if not same:
            stats.problem = f"value {short(a, 40)} -> {short(b, 40)}"
        return stats
    shape_a, shape_b = tuple(a.shape), tuple(b.shape)
    stats = _ArrayStats(name, (shape_a, shape_b), (str(a.dtype), str(b.dtype)))
    if shape_a != shape_b:
        stats.problem = f"shape {shape_a} -> {shape_b}"
        return stats
    if a.dtype != b.dtype:
        stats.problem = f"dtype {a.dtype} -> {b.dtype}"
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    step = max(1, ARRAY_CHUNK_BYTES // 8)
    for offset in range(0, flat_a.numel(), step):
        chunk_a = _tensor_numpy(flat_a[offset : offset + step])
        chunk_b = _tensor_numpy(flat_b[offset : offset + step])
        stats.add(chunk_a, chunk_b, offset, tolerance)
    return stats


def _tensor_numpy(tensor: Any) -> NDArray[Any]:
    if tensor.is_complex():
        return tensor.detach().cpu().numpy()  # type: ignore[no-any-return]
    if tensor.is_floating_point():
        return tensor.detach().cpu().double().numpy()  # type: ignore[no-any-return]
    return tensor.detach().cpu().numpy()  # type: ignore[no-any-return]


# --- text --------------------------------------------------------------------------------------------


def _normalized(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _endings(text: str) -> str:
    kinds = [k for k, mark in (("crlf", "\r\n"), ("lf", "\n"), ("cr", "\r")) if mark in text]
    return "+".join(kinds) or "none"


def _diff_lines(lines_a: list[str], lines_b: list[str], path: str) -> tuple[list[str], int, int, int]:
    """The first :data:`MAX_DIFF_LINES` lines of a unified diff, and lines removed, added, in all."""
    shown: list[str] = []
    removed = added = total = 0
    for line in difflib.unified_diff(lines_a, lines_b, f"original/{path}", f"replay/{path}", lineterm=""):
        total += 1
        if line.startswith("-") and not line.startswith("---"):
            removed += 1
        elif line.startswith("+") and not line.startswith("+++"):
            added += 1
        if len(shown) < MAX_DIFF_LINES:
            shown.append(short(line.rstrip("\n"), 200))
    return shown, removed, added, total


class TextComparator:
    """Text: a unified diff (truncated). Tolerance does not apply: text is equivalent only when it is
    identical after normalising line endings (CRLF/CR to LF), and the report says so."""

    name = "text"

    def matches(self, path: str, head: bytes) -> bool:
        return sniff_format(path, head) == ("text", None)

    def compare(self, original: BinaryIO, replay: BinaryIO, *, path: str, tolerance: Tolerance) -> ComparatorResult:
        data_a = read_up_to(original, TEXT_DIFF_MAX_BYTES + 1)
        data_b = read_up_to(replay, TEXT_DIFF_MAX_BYTES + 1)
        if len(data_a) > TEXT_DIFF_MAX_BYTES or len(data_b) > TEXT_DIFF_MAX_BYTES:
            return _compare_long_text(HeadThenRest(data_a, original), HeadThenRest(data_b, replay), path, tolerance)
        text_a, text_b = data_a.decode("utf-8", "backslashreplace"), data_b.decode("utf-8", "backslashreplace")
        if _normalized(text_a) == _normalized(text_b):
            return _same_after_endings(path, tolerance, _endings(text_a), _endings(text_b), text_a.count("\n"))
        lines_a = _normalized(text_a).splitlines(keepends=True)
        lines_b = _normalized(text_b).splitlines(keepends=True)
        shown, removed, added, total = _diff_lines(lines_a, lines_b, path)
        return ObjectComparison(
            path=path,
            verdict="differs",
            format="text",
            tolerance=tolerance,
            summary=f"text: {removed} lines removed, {added} added ({len(lines_a)} -> {len(lines_b)} lines)",
            details={
                "lines": {"original": len(lines_a), "replay": len(lines_b)},
                "lines_removed": removed,
                "lines_added": added,
                "diff": shown,
                "diff_truncated": total > len(shown),
                "tolerance_applies": False,
            },
        )


def _same_after_endings(
    path: str, tolerance: Tolerance, endings_a: str, endings_b: str, lines: int
) -> ObjectComparison:
    return ObjectComparison(
        path=path,
        verdict="equivalent",
        format="text",
        tolerance=tolerance,
        summary=f"text: identical after normalizing line endings ({endings_a} vs {endings_b}); tolerance does not apply to text",
        details={
            "line_endings": {"original": endings_a, "replay": endings_b},
            "lines": lines,
            "tolerance_applies": False,
        },
        note="only the line endings differ",
    )


def _compare_long_text(raw_a: io.RawIOBase, raw_b: io.RawIOBase, path: str, tolerance: Tolerance) -> ObjectComparison:
    """Large text, line by line in lockstep: lines compared by position, a diff around the first difference."""
    texts = [
        io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8", errors="backslashreplace", newline="")
        for raw in (raw_a, raw_b)
    ]
    before: list[str] = []
    window_a: list[str] = []
    window_b: list[str] = []
    first = None
    differing = count_a = count_b = 0
    endings: tuple[set[str], set[str]] = (set(), set())
    kinds = {"\r\n": "crlf", "\n": "lf", "\r": "cr"}
    for line_a, line_b in itertools.zip_longest(*texts):
        count_a += line_a is not None
        count_b += line_b is not None
        for seen, line in zip(endings, (line_a, line_b), strict=True):
            if line is not None and line != line.rstrip("\r\n"):
                seen.add(kinds.get(line[len(line.rstrip("\r\n")) :], "?"))
        norm_a = None if line_a is None else line_a.rstrip("\r\n") + "\n"
        norm_b = None if line_b is None else line_b.rstrip("\r\n") + "\n"
        if norm_a != norm_b:
            differing += 1
            first = max(count_a, count_b) if first is None else first
        if first is None:
            before = [*before[-2:], norm_a or ""]
        elif len(window_a) < 50:
            window_a += [norm_a] if norm_a is not None else []
            window_b += [norm_b] if norm_b is not None else []
    if not differing:
        names = ["+".join(sorted(seen)) or "none" for seen in endings]
        return _same_after_endings(path, tolerance, names[0], names[1], count_a)
    shown, _, _, total = _diff_lines(before + window_a, before + window_b, path)
    return ObjectComparison(
        path=path,
        verdict="differs",
        format="text",
        tolerance=tolerance,
        summary=f"text: {differing} lines differ by position, the first at line {first} ({count_a} -> {count_b} lines)",
        details={
            "lines": {"original": count_a, "replay": count_b},
            "lines_differing_by_position": differing,
            "first_differing_line": first,
            "diff": shown,
            "diff_truncated": True,
            "tolerance_applies": False,
        },
        note=f"large text (over {TEXT_DIFF_MAX_BYTES // 2**20} MiB): the diff shows the first difference only",
    )


# --- the built-in set --------------------------------------------------------------------------------


def builtin_comparators() -> list[Comparator]:
    """The built-in comparators, in the order a registry tries them."""
    return [
        ParquetComparator(),
        NpyComparator(),
        NpzComparator(),
        TorchComparator(),
        CsvComparator("csv"),
        CsvComparator("tsv"),
        JsonComparator(),
        TextComparator(),
    ]


def builtin_registry() -> ComparatorRegistry:
    """A new registry holding the built-in comparators."""
    return ComparatorRegistry(builtin_comparators())


def install_builtin_comparators(registry: ComparatorRegistry | None = None) -> ComparatorRegistry:
    """Add the built-in comparators to ``registry`` (the process-wide one by default), after those
    already there; a name that is registered already is left as it is. Idempotent."""
    registry = default_registry if registry is None else registry
    for comparator in builtin_comparators():
        if comparator.name not in registry.names():
            registry.register(comparator)
    return registry
