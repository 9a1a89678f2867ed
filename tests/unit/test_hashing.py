"""Content hashing: BLAKE3 values, streaming equals one-shot, and the ``blake3:<hex>`` format."""

from __future__ import annotations

import io
import os

import blake3
import pytest

from airflow_repro.core.hashing import (
    HASH_ALGORITHM,
    HashingWriter,
    copy_and_hash,
    hash_bytes,
    hash_file,
    is_content_hash,
    parse_content_hash,
)
from airflow_repro.errors import ReproUserError

CHUNK = 64 * 1024  # a small chunk so the boundary cases stay fast


def reference(data: bytes) -> str:
    return "blake3:" + blake3.blake3(data).hexdigest()


def test_algorithm_name():
    assert HASH_ALGORITHM == "blake3"


@pytest.mark.parametrize(
    ("data", "hex_digest"),
    [
        # Published BLAKE3 digests, independent of the library under test.
        (b"", "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"),
        (b"abc", "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"),
    ],
)
def test_hash_bytes_matches_published_blake3_digests(data, hex_digest):
    assert hash_bytes(data) == f"blake3:{hex_digest}"


def test_hash_bytes_matches_blake3_library():
    data = os.urandom(300_000)
    assert hash_bytes(data) == reference(data)


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 7])
def test_streaming_file_hash_equals_one_shot_around_chunk_boundary(tmp_path, size):
    data = os.urandom(size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert hash_file(path, chunk_size=CHUNK) == (reference(data), size)


def test_large_multithreaded_hash_equals_single_threaded(tmp_path):
    # Big enough that the AUTO hasher really splits work across threads.
    data = os.urandom(3 * 1024 * 1024 + 123)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert hash_file(path, chunk_size=1024 * 1024) == (reference(data), len(data))


@pytest.mark.parametrize("size", [0, CHUNK - 1, CHUNK + 1, 2 * CHUNK])
def test_copy_and_hash_copies_exactly_and_hashes_in_one_pass(tmp_path, size):
    data = os.urandom(size)
    source = tmp_path / "src.bin"
    source.write_bytes(data)
    target = tmp_path / "dst.bin"
    with open(target, "wb", buffering=0) as out:
        result = copy_and_hash(source, out, chunk_size=CHUNK)
    assert result == (reference(data), size)
    assert target.read_bytes() == data


def test_hashing_writer_counts_and_hashes_what_it_writes():
    out = io.BytesIO()
    writer = HashingWriter(out)
    writer.write(b"hello ")
    writer.write(memoryview(b"world"))
    assert out.getvalue() == b"hello world"
    assert (writer.content_hash, writer.size) == (reference(b"hello world"), 11)


def test_parse_content_hash_returns_hex_digest():
    digest = "ab" * 32
    assert parse_content_hash(f"blake3:{digest}") == digest
    assert is_content_hash(f"blake3:{digest}")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "ab" * 32,  # no algorithm prefix
        "sha256:" + "ab" * 32,  # another algorithm
        "blake3:" + "ab" * 31,  # too short
        "blake3:" + "ab" * 33,  # too long
        "blake3:" + "AB" * 32,  # upper case
        "blake3:" + "zz" * 32,  # not hex
        " blake3:" + "ab" * 32,
        "blake3:" + "ab" * 32 + "\n",
        None,
        42,
    ],
)
def test_bad_content_hashes_are_rejected(bad):
    with pytest.raises(ReproUserError, match="malformed content hash"):
        parse_content_hash(bad)
    assert not is_content_hash(bad)
