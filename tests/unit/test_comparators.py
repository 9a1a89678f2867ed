"""The comparison engine: equivalent within a tolerance, or differs and where, for every built-in format."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import random
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from airflow_repro.adapters.comparators import (
    CSV_BLOCK,
    builtin_registry,
    install_builtin_comparators,
)
from airflow_repro.core.comparison import (
    MAX_DETAILS_CHARS,
    MAX_DIFF_LINES,
    MAX_ITEMS,
    BytesFallback,
    ComparatorRegistry,
    ObjectComparison,
    Tolerance,
    comparator_for,
    compare_files,
    compare_objects,
    default_registry,
    register_comparator,
    sniff_format,
    unregister_comparator,
)
from airflow_repro.errors import StoreCorruption

NOISE = Tolerance(rel_tol=1e-6)


class _Unseekable(io.RawIOBase):
    """What a store hands out: a reader that cannot seek and has no file name."""

    def __init__(self, data: bytes, *, fail_at_eof: bool = False) -> None:
        super().__init__()
        self._data = io.BytesIO(data)
        self._fail = fail_at_eof

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._data.readinto(buffer)
        if not n and self._fail:
            raise StoreCorruption("content read does not match the recorded hash")
        return n


def _compare(path: str, original: bytes, replay: bytes, tolerance: Tolerance | None = None, **kw) -> ObjectComparison:
    """Through non-seekable streams, as verification will call it."""
    registry = kw.pop("registry", None) or builtin_registry()

    def opener(data: bytes):
        return lambda: io.BufferedReader(_Unseekable(data, **kw))

    result = compare_objects(path, opener(original), opener(replay), tolerance, registry=registry)
    json.loads(result.model_dump_json())  # every report serialises
    assert len(json.dumps(result.details, ensure_ascii=False)) <= MAX_DETAILS_CHARS
    return result


def _csv(rows: int, *, noise: float = 0.0, sep: str = ",", header: str | None = None, wide: bool = False) -> bytes:
    extra = ["lr", "step", "tag", "precision", "recall", "f1"] if wide else []
    header = header or sep.join(["id", "loss", "name", *extra])
    lines = [header]
    for i in range(rows):
        cells = [str(i), repr(i * 0.25 + (noise if i % 2 else 0.0)), f"n{i}"]
        more = [repr(i / 3), str(i * 7), "train", repr(1 / (i + 1)), repr(i / 7), repr(i / 11)] if wide else []
        lines.append(sep.join(cells + more))
    return ("\n".join(lines) + "\n").encode()


# --- tolerance ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["abs_tol", "rel_tol"])
@pytest.mark.parametrize("value", [-1e-9, math.nan, math.inf])
def test_a_negative_nan_or_infinite_tolerance_is_refused_with_the_fix(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=rf"{field} must be a finite number >= 0.*use 0 for an exact comparison"):
        Tolerance(**{field: value})


def test_tolerance_semantics() -> None:
    assert Tolerance().exact and Tolerance().describe() == "exact"
    assert Tolerance().matches(math.nan, math.nan)  # a reproduced NaN is reproduced
    assert not Tolerance(abs_tol=1.0).matches(math.nan, 1.0)
    assert Tolerance().matches(math.inf, math.inf) and not Tolerance(rel_tol=1.0).matches(math.inf, 1e308)
    assert Tolerance(rel_tol=1e-6).matches(1.0, 1.0 + 1e-9)
    assert not Tolerance(rel_tol=1e-6).matches(1.0, 1.0 + 1e-3)
    assert Tolerance(abs_tol=0.5).matches(0.0, 0.5)  # numpy isclose: |a-b| <= abs_tol + rel_tol*|original|


# --- CSV / TSV ---------------------------------------------------------------------------------------


def test_csv_within_the_tolerance_is_equivalent_with_the_largest_deviation() -> None:
    result = _compare("out/metrics.csv", _csv(5000), _csv(5000, noise=1e-9), NOISE)
    assert result.verdict == "equivalent" and result.format == "csv"
    assert result.max_abs_deviation == pytest.approx(1e-9, rel=1e-3)
    assert result.details["cells_within_tolerance"] == 2500
    assert result.details["column_stats"]["loss"]["within_tolerance"] == 2500
    assert "equal within abs_tol=0, rel_tol=1e-06" in result.summary and "'loss'" in result.summary


def test_csv_beyond_the_tolerance_names_the_cell_and_the_deviation() -> None:
    original = _csv(5000)
    replay = original.replace(b"\n4321,1080.25,", b"\n4321,1080.5,")
    result = _compare("metrics.csv", original, replay, NOISE)
    assert result.verdict == "differs"
    assert result.max_abs_deviation == pytest.approx(0.25)
    assert result.details["first_differing_rows"] == [
        {"row": 4321, "cells": {"loss": {"original": "1080.25", "replay": "1080.5"}}}
    ]
    assert result.details["cells_out_of_tolerance"] == 1 and result.details["rows_out_of_tolerance"] == 1
    assert "1 cell out of tolerance" in result.summary and "row 4321" in result.summary


def test_csv_text_cells_compare_exactly_and_numbers_by_value() -> None:
    original = b"id,label,score\n1,cat,1.0\n2,dog,2.0\n"
    assert _compare("a.csv", original, b"id,label,score\n1,cat,1.00\n2,dog,2\n").verdict == "equivalent"
    result = _compare("a.csv", original, b"id,label,score\n1,Cat,1.0\n2,dog,2.0\n", Tolerance(abs_tol=1.0))
    assert result.verdict == "differs"
    assert result.details["first_differing_rows"][0]["cells"] == {"label": {"original": "cat", "replay": "Cat"}}


def test_csv_schema_changes_differ() -> None:
    original = _csv(100)
    added = _csv(100, header="id,loss,name").replace(b"\n", b",x\n").replace(b"name,x\n", b"name,extra\n", 1)
    result = _compare("a.csv", original, added)
    assert result.verdict == "differs" and "column 'extra' added" in result.summary
    assert result.details["schema"]["added"] == ["extra"]

    reordered = b"loss,id\n0.5,1\n"
    result = _compare("a.csv", b"id,loss\n1,0.5\n", reordered)
    assert result.verdict == "differs" and result.details["schema"]["order_changed"]

    result = _compare("a.csv", b"id,flag\n1,3\n2,4\n", b"id,flag\n1,yes\n2,no\n")
    assert result.verdict == "differs" and "dtype of 'flag': int64 -> string" in result.summary


def test_csv_row_count_changes_differ() -> None:
    original = _csv(300)
    result = _compare("a.csv", original, original + b"300,75.0,n300\n")
    assert result.verdict == "differs" and result.details["rows"] == {"original": 300, "replay": 301}
    assert result.details["extra_rows"] == {"in": "replay", "first_row": 300, "count": 1}
    result = _compare("a.csv", original, original.rsplit(b"\n", 3)[0] + b"\n")
    assert result.details["rows"] == {"original": 300, "replay": 298}


def test_csv_with_quoted_fields_is_parsed_whole() -> None:
    original = b'id,text,v\n1,"hello, world",0.5\n2,"two\nlines",1.5\n3,plain,2.5\n'
    replay = original.replace(b"2.5\n", b"2.75\n")
    result = _compare("q.csv", original, replay)
    assert result.verdict == "differs"
    assert result.details["rows"] == {"original": 3, "replay": 3}
    assert result.details["first_differing_rows"] == [{"row": 2, "cells": {"v": {"original": "2.5", "replay": "2.75"}}}]


def test_tsv_and_line_endings() -> None:
    original = _csv(50, sep="\t")
    result = _compare("a.tsv", original, _csv(50, sep="\t", noise=1e-9), NOISE)
    assert result.verdict == "equivalent" and result.format == "tsv"
    result = _compare("a.csv", _csv(50), _csv(50).replace(b"\n", b"\r\n"))
    assert result.verdict == "equivalent" and "formatting only" in result.summary


def test_malformed_csv_is_compared_as_bytes_with_a_note() -> None:
    result = _compare("a.csv", b"a,b\n1,2\n", b"a,b\n1,2,3,4\n")
    assert result.format == "bytes" and result.verdict == "differs"
    assert result.note is not None and result.note.startswith("malformed csv") and "compared as bytes" in result.note
    result = _compare("a.csv", b"a,b\n1,2\n", b"\x00\x01\x02")
    assert result.format == "bytes" and "the replay is not" in (result.note or "")


def test_a_large_csv_compares_in_flat_memory(tmp_path: Path) -> None:
    """200k rows: memory stays well below the file size, whether one cell or every row differs."""
    rows = 200_000
    original = tmp_path / "a.csv"
    original.write_bytes(_csv(rows, wide=True))
    size = original.stat().st_size
    assert size > 32 * CSV_BLOCK
    registry = builtin_registry()
    _compare("warm.csv", b"a\n1\n", b"a\n2\n")  # imports happen outside the measurement
    for name, replay_bytes, verdict in (
        ("one_cell.csv", _csv(rows, wide=True).replace(b"\n150000,37500.0,", b"\n150000,37500.5,"), "differs"),
        ("noise.csv", _csv(rows, noise=1e-9, wide=True), "equivalent"),
    ):
        replay = tmp_path / name
        replay.write_bytes(replay_bytes)
        del replay_bytes
        tracemalloc.start()
        try:
            result = compare_files(original, replay, NOISE, registry=registry)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert result.verdict == verdict, result.summary
        assert result.details["rows"] == {"original": rows, "replay": rows}
        assert peak < size / 4, (name, peak, size)


def _oracle(original: bytes, replay: bytes, tolerance: Tolerance) -> tuple:
    """Both files parsed whole by the csv module, cells compared by position."""
    (head_a, *rows_a), (head_b, *rows_b) = (
        list(csv.reader(io.StringIO(d.decode(), newline=""))) for d in (original, replay)
    )
    out, bad_rows = 0, []
    for i, (row_a, row_b) in enumerate(zip(rows_a, rows_b, strict=False)):
        bad = 0
        for name in (c for c in head_a if c in head_b):
            x, y = row_a[head_a.index(name)], row_b[head_b.index(name)]
            with contextlib.suppress(ValueError):
                if x == y or tolerance.matches(float(x), float(y)):
                    continue
            bad += x != y
        out += bad
        bad_rows += [i] if bad else []
    return {"original": len(rows_a), "replay": len(rows_b)}, out, len(bad_rows), bad_rows[:MAX_ITEMS]


@pytest.mark.parametrize("seed", range(40))
def test_csv_fast_path_agrees_with_a_full_parse(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny blocks and windows put every boundary case in reach: edits, inserted rows, CRLF, no final newline."""
    from airflow_repro.adapters import comparators

    rng = random.Random(seed)
    monkeypatch.setattr(comparators, "CSV_BLOCK", rng.choice([16, 64, 4096]))
    monkeypatch.setattr(comparators, "CSV_WINDOW", rng.choice([8, 32, 2048]))
    rows = [[str(i), repr(round(rng.random(), 3)), rng.choice(["a", "bb", ""])] for i in range(rng.randint(0, 60))]
    edited = [list(r) for r in rows]
    for _ in range(rng.randint(0, 4)):
        if edited:
            i = rng.randrange(len(edited))
            edited[i][1] = (
                repr(float(edited[i][1]) + rng.choice([1e-12, 0.5])) if rng.random() < 0.7 else edited[i][1] + "0"
            )
    if rng.random() < 0.3:
        edited.insert(rng.randrange(len(edited) + 1), ["99", "0.1", "inserted"])
    if rng.random() < 0.2 and edited:
        edited.pop()
    newline = rng.choice(["\n", "\r\n"])

    def dump(table: list[list[str]], header: str, newline: str = "\n", final: bool = True) -> bytes:
        return (newline.join([header, *(",".join(r) for r in table)]) + (newline if final else "")).encode()

    tolerance = Tolerance(rel_tol=1e-9)
    final = rng.random() < 0.8
    for header in ("id,v,s", '"id",v,s'):  # a quote: the whole file goes through pyarrow's CSV parser
        original, replay = dump(rows, header), dump(edited, header, newline, final)
        result = _compare("x.csv", original, replay, tolerance)
        rows_seen = [r["row"] for r in result.details["first_differing_rows"]]
        got = (
            result.details["rows"],
            result.details["cells_out_of_tolerance"],
            result.details["rows_out_of_tolerance"],
            rows_seen,
        )
        assert got == _oracle(original, replay, tolerance)
        assert result.verdict == ("equivalent" if got[0]["original"] == got[0]["replay"] and not got[1] else "differs")


def test_details_stay_bounded_when_every_cell_differs() -> None:
    original = _csv(20_000)
    replay = original.replace(b",n", b",m").replace(b",mame", b",name")
    result = _compare("a.csv", original, replay)
    assert result.details["cells_out_of_tolerance"] == 20_000
    assert len(result.details["first_differing_rows"]) == MAX_ITEMS
    wide = ",".join(f"c{i}" for i in range(60)).encode()
    row_a, row_b = ",".join("1" for _ in range(60)).encode(), ",".join("2" for _ in range(60)).encode()
    result = _compare("w.csv", wide + b"\n" + (row_a + b"\n") * 500, wide + b"\n" + (row_b + b"\n") * 500)
    assert result.details["columns_with_differences"] == 60
    assert len(result.details["column_stats"]) == MAX_ITEMS
    assert all(len(r["cells"]) <= MAX_ITEMS for r in result.details["first_differing_rows"])
    # long names and long non-ASCII values: still a report, bounded (_compare checks the size)
    wide = ",".join(f"{'column_' * 30}{i}" for i in range(60)).encode()
    row_a, row_b = ",".join("é" * 500 for _ in range(60)).encode(), ",".join("ü" * 500 for _ in range(60)).encode()
    result = _compare("w.csv", wide + b"\n" + (row_a + b"\n") * 50, wide + b"\n" + (row_b + b"\n") * 50)
    assert result.verdict == "differs" and result.format == "csv" and result.details["cells_out_of_tolerance"] == 3000


# --- Parquet -----------------------------------------------------------------------------------------


def _parquet(table: pa.Table, **kw) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, **kw)
    return sink.getvalue()


def _table(rows: int = 10_000, noise: float = 0.0) -> pa.Table:
    ids = np.arange(rows)
    return pa.table({"id": ids, "loss": (ids * 0.5 + 1.0) * (1 + noise), "name": [f"n{i}" for i in range(rows)]})


def test_parquet_within_the_tolerance_across_different_row_groups() -> None:
    original = _parquet(_table(), row_group_size=3000)
    replay = _parquet(_table(noise=1e-9), row_group_size=7000)
    result = _compare("features.parquet", original, replay, NOISE)
    assert result.verdict == "equivalent" and result.format == "parquet"
    assert result.details["rows"] == {"original": 10_000, "replay": 10_000}
    assert result.max_rel_deviation == pytest.approx(1e-9, rel=1e-3)


def test_parquet_beyond_the_tolerance_names_the_cell() -> None:
    table = _table()
    loss = table.column("loss").to_numpy().copy()
    loss[6789] += 0.125
    replay = table.set_column(1, "loss", pa.array(loss))
    result = _compare("f.parquet", _parquet(table), _parquet(replay), NOISE)
    assert result.verdict == "differs"
    assert result.details["first_differing_rows"][0]["row"] == 6789
    assert result.details["column_stats"]["loss"]["max_abs_deviation"] == pytest.approx(0.125)
    assert result.max_abs_deviation == pytest.approx(0.125)


def test_parquet_schema_changes_differ() -> None:
    table = _table(100)
    as_float = table.set_column(0, "id", table.column("id").cast(pa.float64()))
    result = _compare("f.parquet", _parquet(table), _parquet(as_float))
    assert result.verdict == "differs" and "dtype of 'id': int64 -> double" in result.summary
    assert result.details["cells_out_of_tolerance"] == 0  # the values are the same, the type is not
    added = table.append_column("extra", pa.array([1] * 100))
    result = _compare("f.parquet", _parquet(table), _parquet(added))
    assert result.verdict == "differs" and result.details["schema"]["added"] == ["extra"]
    result = _compare("f.parquet", _parquet(table), _parquet(table.slice(0, 90)))
    assert result.details["rows"] == {"original": 100, "replay": 90}


def test_parquet_nulls_and_text() -> None:
    original = pa.table({"v": [1.0, None, 3.0], "s": ["a", None, "c"]})
    replay = pa.table({"v": [1.0, None, None], "s": ["a", None, "d"]})
    result = _compare("f.parquet", _parquet(original), _parquet(replay))
    assert result.verdict == "differs" and result.details["cells_out_of_tolerance"] == 2
    assert result.details["first_differing_rows"] == [
        {"row": 2, "cells": {"v": {"original": "3.0", "replay": "null"}, "s": {"original": "c", "replay": "d"}}}
    ]


def test_malformed_parquet_is_compared_as_bytes_with_a_note() -> None:
    good = _parquet(_table(10))
    result = _compare("f.parquet", b"not parquet at all", good)
    assert result.format == "bytes" and result.note == (
        "malformed parquet (the original: no PAR1 magic at its start): compared as bytes"
    )
    truncated = good[:4] + b"\x00" * 64
    result = _compare("f.parquet", good, truncated)
    assert result.format == "bytes" and (result.note or "").startswith("malformed parquet")


# --- JSON --------------------------------------------------------------------------------------------


def _json(value: object) -> bytes:
    return json.dumps(value, indent=2).encode()


METRICS = {"metrics": {"loss": 0.25, "accuracy": 0.875, "per_class": [0.5, 0.75]}, "epochs": 3, "model": "mlp"}


def test_json_within_the_tolerance_key_order_aside() -> None:
    replay = {
        "model": "mlp",
        "epochs": 3,
        "metrics": {"per_class": [0.5, 0.75 + 1e-10], "accuracy": 0.875, "loss": 0.25},
    }
    result = _compare("m.json", _json(METRICS), _json(replay), NOISE)
    assert result.verdict == "equivalent" and result.format == "json"
    assert result.details["max_abs_deviation_at"] == "$.metrics.per_class[1]"
    assert result.max_abs_deviation == pytest.approx(1e-10, rel=1e-3)


def test_json_beyond_the_tolerance_names_the_path() -> None:
    replay = json.loads(json.dumps(METRICS))
    replay["metrics"]["loss"] = 0.5
    replay["metrics"]["per_class"].append(1.0)
    replay["model"] = 7
    del replay["epochs"]
    replay["new key"] = True
    result = _compare("m.json", _json(METRICS), _json(replay), NOISE)
    assert result.verdict == "differs"
    changes = {d["path"]: d for d in result.details["differences"]}
    assert changes["$.metrics.loss"] == {
        "path": "$.metrics.loss",
        "change": "changed",
        "original": "0.25",
        "replay": "0.5",
        "abs_deviation": 0.25,
    }
    assert changes["$.metrics.per_class"]["change"] == "length"
    assert changes["$.model"]["change"] == "type"
    assert changes["$.epochs"]["change"] == "removed"
    assert changes['$["new key"]']["change"] == "added"
    assert result.max_abs_deviation == pytest.approx(0.25)


def test_malformed_or_huge_json_is_compared_as_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _compare("m.json", _json(METRICS), b'{"metrics": ')
    assert result.format == "bytes" and (result.note or "").startswith("malformed json (the replay:")
    from airflow_repro.adapters import comparators

    monkeypatch.setattr(comparators, "JSON_MAX_BYTES", 16)
    result = _compare("m.json", _json(METRICS), _json({}))
    assert result.format == "bytes" and "json larger than" in (result.note or "")


def test_json_details_stay_bounded() -> None:
    result = _compare("m.json", _json({"v": list(range(5000))}), _json({"v": [i + 1 for i in range(5000)]}))
    assert result.details["differences_total"] == 5000 and len(result.details["differences"]) == MAX_ITEMS


# --- NumPy -------------------------------------------------------------------------------------------


def _npy(array: np.ndarray) -> bytes:
    sink = io.BytesIO()
    np.save(sink, array, allow_pickle=False)
    return sink.getvalue()


def test_npy_within_and_beyond_the_tolerance() -> None:
    base = np.linspace(1.0, 2.0, 300_000).reshape(300, 1000)
    result = _compare("emb.npy", _npy(base), _npy(base * (1 + 1e-9)), NOISE)
    assert result.verdict == "equivalent" and result.format == "npy"
    assert result.details["not_equal"] > 0 and result.details["out_of_tolerance"] == 0
    assert result.max_rel_deviation == pytest.approx(1e-9, rel=1e-3)
    changed = base.copy()
    changed[123, 456] += 0.5
    result = _compare("emb.npy", _npy(base), _npy(changed), NOISE)
    assert result.verdict == "differs"
    assert result.details["out_of_tolerance"] == 1
    assert result.details["first_out_of_tolerance"]["index"] == [123, 456]
    assert result.max_abs_deviation == pytest.approx(0.5)


def test_npy_shape_and_dtype_changes_differ() -> None:
    base = np.arange(12, dtype=np.float64)
    result = _compare("a.npy", _npy(base), _npy(base.reshape(3, 4)))
    assert result.verdict == "differs" and result.summary == "npy: shape (12,) -> (3, 4)"
    result = _compare("a.npy", _npy(base), _npy(base.astype(np.float32)))
    assert result.verdict == "differs" and "dtype float64 -> float32" in result.summary
    assert result.details["dtype"] == {"original": "float64", "replay": "float32"}
    result = _compare("a.npy", _npy(np.array([[1, 2], [3, 4]], order="F")), _npy(np.array([[1, 2], [3, 5]], order="F")))
    assert result.details["first_out_of_tolerance"]["index"] == [1, 1]


def test_npy_of_objects_or_malformed_is_compared_as_bytes() -> None:
    sink = io.BytesIO()
    np.save(sink, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    result = _compare("a.npy", sink.getvalue(), sink.getvalue() + b"x")
    assert result.format == "bytes" and "pickle, never loaded" in (result.note or "")
    result = _compare("a.npy", _npy(np.arange(3)), b"junk")
    assert result.format == "bytes" and "the replay is not: no \\x93NUMPY magic" in (result.note or "")
    result = _compare("a.npy", _npy(np.arange(3)), b"\x93NUMPY\x01\x00\x10\x00{'descr': nonsense}")
    assert result.format == "bytes" and (result.note or "").startswith("malformed npy")
    result = _compare("a.npy", _npy(np.arange(3)), _npy(np.arange(3))[:-4])
    assert result.format == "bytes" and "shorter than its header says" in (result.note or "")


def _npz(**arrays: np.ndarray) -> bytes:
    sink = io.BytesIO()
    np.savez_compressed(sink, **arrays)  # type: ignore[arg-type]
    return sink.getvalue()


def test_npz_per_array() -> None:
    a, b = np.arange(1000.0), np.ones((10, 10))
    result = _compare("w.npz", _npz(a=a, b=b), _npz(a=a + 1e-12, b=b), Tolerance(abs_tol=1e-9))
    assert result.verdict == "equivalent" and result.details["arrays_compared"] == 2
    result = _compare("w.npz", _npz(a=a, b=b), _npz(a=a, b=b * 2, c=a))
    assert result.verdict == "differs" and result.details["arrays_differing"] == 1
    assert result.details["arrays"][0]["name"] == "b" and result.details["arrays"][0]["out_of_tolerance"] == 100
    assert result.details["only_in_replay"] == ["c"]
    result = _compare("w.npz", _npz(a=a), b"PK\x03\x04 broken")
    assert result.format == "bytes" and "malformed npz" in (result.note or "")


# --- text, PyTorch, bytes ----------------------------------------------------------------------------


def test_text_unified_diff_tolerance_does_not_apply() -> None:
    original = "".join(f"step {i} loss 0.{i}\n" for i in range(50)).encode()
    replay = original.replace(b"step 20 loss 0.20\n", b"step 20 loss 0.2000001\n")
    result = _compare("train.log", original, replay, Tolerance(abs_tol=1.0))
    assert result.verdict == "differs" and result.format == "text"
    assert "-step 20 loss 0.20" in result.details["diff"] and "+step 20 loss 0.2000001" in result.details["diff"]
    assert result.details["tolerance_applies"] is False
    result = _compare("notes.md", original, original.replace(b"\n", b"\r\n"))
    assert result.verdict == "equivalent" and "identical after normalizing line endings" in result.summary


def test_text_diff_is_truncated_and_long_text_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    original = "".join(f"line {i}\n" for i in range(2000)).encode()
    replay = "".join(f"LINE {i}\n" for i in range(2000)).encode()
    result = _compare("a.txt", original, replay)
    assert len(result.details["diff"]) == MAX_DIFF_LINES and result.details["diff_truncated"]
    from airflow_repro.adapters import comparators

    monkeypatch.setattr(comparators, "TEXT_DIFF_MAX_BYTES", 1024)
    result = _compare("a.txt", original, original.replace(b"line 1500\n", b"line 1500!\n"))
    assert result.verdict == "differs" and result.details["first_differing_line"] == 1501
    assert result.details["lines_differing_by_position"] == 1
    assert "large text" in (result.note or "")
    result = _compare("a.txt", original, original.replace(b"\n", b"\r\n"))
    assert result.verdict == "equivalent" and result.details["line_endings"] == {"original": "lf", "replay": "crlf"}


def test_text_without_a_known_extension_is_recognised_by_content() -> None:
    assert sniff_format("README", b"hello\n") == ("text", None)
    assert sniff_format("blob", b"\x00\x01") == ("bytes", None)
    assert sniff_format("data", b"PAR1....") == ("parquet", None)
    assert sniff_format("x.json", b"\x00") == ("json", "does not start like a JSON value")


def test_pt_without_torch_is_compared_as_bytes() -> None:
    if "torch" in sys.modules or _importable("torch"):
        pytest.skip("torch is installed here")
    state = b"PK\x03\x04" + b"\x00" * 100
    result = _compare("model.pt", state, state[:-1] + b"\x01")
    assert result.format == "bytes" and result.note == "torch is not installed: compared as bytes"
    assert result.details["first_differing_offset"] == 103


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_a_missing_library_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    result = _compare("a.csv", b"a\n1\n", b"a\n2\n")
    assert result.format == "bytes" and result.note == "pyarrow is not installed: compared as bytes"


def test_bytes_comparison_reports_sizes_and_the_first_difference() -> None:
    original = bytes(range(256)) * 10_000
    replay = original[:1_000_000] + b"\xff" + original[1_000_001:] + b"tail"
    result = _compare("blob.bin", original, replay)
    assert result.format == "bytes" and result.note is None and result.verdict == "differs"
    assert result.details["size"] == {"original": 2_560_000, "replay": 2_560_004}
    assert result.details["first_differing_offset"] == 1_000_000
    assert result.details["bytes_at_first_difference"]["replay"].startswith("ff")


# --- the registry ------------------------------------------------------------------------------------


class _Broken:
    name = "broken-csv"

    def matches(self, path: str, head: bytes) -> bool:
        return path.endswith(".csv")

    def compare(self, original: BinaryIO, replay: BinaryIO, *, path: str, tolerance: Tolerance) -> ObjectComparison:
        raise ValueError("boom")


@pytest.fixture
def builtins_installed() -> Iterator[None]:
    install_builtin_comparators()
    yield


@pytest.mark.usefixtures("builtins_installed")
def test_a_comparator_that_raises_is_reported_and_does_not_crash() -> None:
    register_comparator(_Broken(), first=True)
    try:
        assert comparator_for("a.csv", b"a,b\n").name == "broken-csv"
        result = _compare("a.csv", b"a\n1\n", b"a\n2\n", registry=default_registry)
    finally:
        unregister_comparator("broken-csv")
    assert result.verdict == "differs" and result.format == "broken-csv"
    assert result.note == "comparator broken-csv raised ValueError: boom"
    assert comparator_for("a.csv", b"a,b\n").name == "csv"
    assert _compare("a.csv", b"a\n1\n", b"a\n1.0\n", registry=default_registry).verdict == "equivalent"


def test_a_comparator_returning_something_else_or_asking_for_bytes() -> None:
    class Odd(_Broken):
        name = "odd"

        def compare(self, original, replay, *, path, tolerance):
            return {"verdict": "equivalent"}

    class Shy(_Broken):
        name = "shy"

        def compare(self, original, replay, *, path, tolerance):
            original.read()
            return BytesFallback("shy: compared as bytes")

    registry = builtin_registry()
    with registry.registered(Odd(), first=True):
        result = _compare("a.csv", b"a\n1\n", b"a\n2\n", registry=registry)
        assert result.note is not None and result.note.startswith("comparator odd raised TypeError")
    with registry.registered(Shy(), first=True):
        result = _compare("a.csv", b"a\n1\n", b"a\n2\n", registry=registry)
        assert result.format == "bytes" and result.note == "shy: compared as bytes"
        assert result.details["size"] == {"original": 4, "replay": 4}  # opened again: read from the start
    assert registry.names()[0] == "parquet"


def test_outputs_read_from_the_store(tmp_path: Path) -> None:
    """How verification will call it: both objects through the store's verifying readers."""
    from airflow_repro.adapters.local_store import LocalStore

    store = LocalStore(tmp_path / "store")
    store.create_repository("repo")
    path = "out/predictions.parquet"
    original = store.commit("repo", "main", {path: store.stage_bytes("repo", _parquet(_table()))}, message="run")
    store.create_branch("repo", "replay", "main")
    replayed = store.stage_bytes("repo", _parquet(_table(noise=1e-9)))
    replay = store.commit("repo", "replay", {path: replayed}, message="replay")
    result = compare_objects(
        path,
        lambda: store.open_object("repo", original.id, path),
        lambda: store.open_object("repo", replay.id, path),
        NOISE,
        registry=builtin_registry(),
    )
    assert result.verdict == "equivalent" and result.format == "parquet", result.summary


def test_store_errors_propagate() -> None:
    with pytest.raises(StoreCorruption):
        _compare("a.csv", b"a\n1\n", b"a\n2\n", fail_at_eof=True)


def test_registry_rules() -> None:
    registry = ComparatorRegistry()
    registry.register(_Broken())
    with pytest.raises(ValueError, match="already registered: unregister it first"):
        registry.register(_Broken())
    with pytest.raises(KeyError, match="no comparator named 'nope'"):
        registry.unregister("nope")
    with pytest.raises(TypeError, match="is not a Comparator"):
        registry.register(object())  # type: ignore[arg-type]
    assert install_builtin_comparators(registry).names()[0] == "broken-csv"
    assert install_builtin_comparators(registry).names().count("csv") == 1  # idempotent


def test_a_registry_without_the_builtins_says_so() -> None:
    result = _compare("a.parquet", _parquet(_table(5)), _parquet(_table(6)), registry=ComparatorRegistry())
    assert result.format == "bytes"
    assert "no comparator for parquet is registered" in (result.note or "")


def test_reports_are_bounded_and_one_line() -> None:
    with pytest.raises(ValidationError, match="must bound them"):
        ObjectComparison(
            path="p",
            verdict="differs",
            format="x",
            tolerance=Tolerance(),
            summary="s",
            details={"rows": ["x" * 100] * 1000},
        )
    with pytest.raises(ValidationError, match="one line"):
        ObjectComparison(path="p", verdict="differs", format="x", tolerance=Tolerance(), summary="a\nb")
    report = ObjectComparison(
        path="p", verdict="differs", format="x", tolerance=Tolerance(), summary="s", max_abs_deviation=math.inf
    )
    assert json.loads(report.model_dump_json())["max_abs_deviation"] == "Infinity"
    result = _compare("m.json", b'{"v": NaN, "w": 1.0}', b'{"v": 1.0, "w": 1.0}')
    assert result.details["differences"][0]["abs_deviation"] == math.inf
    assert json.loads(result.model_dump_json())["details"]["differences"][0]["abs_deviation"] == "Infinity"


def test_the_core_module_imports_no_heavy_library() -> None:
    code = (
        "import sys, airflow_repro.core.comparison; "
        "print(sorted({'numpy', 'pyarrow', 'pandas', 'torch'} & {m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    code = "import sys, airflow_repro.adapters.comparators; print('numpy' in sys.modules or 'pyarrow' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )
