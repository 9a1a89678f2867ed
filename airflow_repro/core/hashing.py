"""Content hashes: BLAKE3, written ``blake3:<64 hex>``.

Pure functions (no Airflow) shared by the data store, manifests and verification. Files are always
hashed as a stream through one preallocated buffer filled with ``readinto``, so memory stays flat
however large the file is (no whole-file reads, no mmap: an mmap'd file counts towards RSS as it
is touched). The hasher runs with ``max_threads=AUTO`` so that large chunks are hashed on all
cores; each chunk is big (8 MiB by default) so the threads have enough work per update.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import blake3

from airflow_repro.errors import ReproUserError

HASH_ALGORITHM = "blake3"
HASH_PREFIX = f"{HASH_ALGORITHM}:"
DIGEST_HEX_LENGTH = 64
DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024

_CONTENT_HASH_RE = re.compile(rf"{HASH_ALGORITHM}:([0-9a-f]{{{DIGEST_HEX_LENGTH}}})")


def new_hasher() -> blake3.blake3:
    """A BLAKE3 hasher allowed to use every core for large updates."""
    return blake3.blake3(max_threads=blake3.blake3.AUTO)


def format_content_hash(hex_digest: str) -> str:
    """``<64 hex>`` -> ``blake3:<64 hex>``."""
    return HASH_PREFIX + hex_digest


def parse_content_hash(content_hash: str) -> str:
    """Validate ``blake3:<64 lower-case hex>`` and return the bare hex digest."""
    match = _CONTENT_HASH_RE.fullmatch(content_hash) if isinstance(content_hash, str) else None
    if match is None:
        raise ReproUserError(
            f"malformed content hash {content_hash!r}: expected '{HASH_PREFIX}' followed by "
            f"{DIGEST_HEX_LENGTH} lower-case hex characters"
        )
    return match.group(1)


def is_content_hash(value: object) -> bool:
    return isinstance(value, str) and _CONTENT_HASH_RE.fullmatch(value) is not None


def hash_bytes(data: bytes | bytearray | memoryview) -> str:
    """The content hash of an in-memory value."""
    hasher = new_hasher()
    hasher.update(data)
    return format_content_hash(hasher.hexdigest())


def hash_stream(stream: BinaryIO, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[str, int]:
    """Hash an open binary stream from its current position to EOF: ``(content hash, size)``."""
    hasher = new_hasher()
    size = 0
    for chunk in iter_chunks(stream, chunk_size=chunk_size):
        hasher.update(chunk)
        size += len(chunk)
    return format_content_hash(hasher.hexdigest()), size


def hash_file(path: str | os.PathLike[str], *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[str, int]:
    """Hash a file as a stream: ``(content hash, size in bytes)``."""
    # buffering=0: readinto goes straight into our buffer, no second copy through io's buffer.
    with open(path, "rb", buffering=0) as stream:
        return hash_stream(stream, chunk_size=chunk_size)


def iter_chunks(stream: BinaryIO, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[memoryview]:
    """Yield successive chunks of ``stream`` as views of ONE reused buffer.

    A view is only valid until the next iteration: consume it (hash it, write it) before asking for
    the next one. Reusing the buffer is what keeps memory flat.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    buffer = bytearray(chunk_size)
    view = memoryview(buffer)
    try:
        while True:
            n = stream.readinto(view)  # type: ignore[attr-defined]  # raw and buffered files have it
            if not n:
                return
            yield view[:n]
    finally:
        view.release()


class HashingWriter:
    """Write to a binary file while hashing what is written, in the same pass.

    >>> with open(tmp, "wb") as out:
    ...     writer = HashingWriter(out)
    ...     writer.copy_from(source_stream)
    >>> writer.content_hash, writer.size
    """

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self._hasher = new_hasher()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._hasher.update(data)
        written = 0
        # A raw (unbuffered) file may write less than asked; loop until all of it is out.
        with memoryview(data) as view:
            while written < len(view):
                n = self._target.write(view[written:])
                written += len(view) - written if n is None else n
        self.size += written
        return written

    def copy_from(self, source: BinaryIO, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        """Copy ``source`` to EOF into the target, hashing every byte once."""
        for chunk in iter_chunks(source, chunk_size=chunk_size):
            self.write(chunk)

    @property
    def content_hash(self) -> str:
        return format_content_hash(self._hasher.hexdigest())


def copy_and_hash(
    source: str | os.PathLike[str], target: BinaryIO, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> tuple[str, int]:
    """Copy the file ``source`` into the open ``target`` and hash it in one pass."""
    writer = HashingWriter(target)
    with open(Path(source), "rb", buffering=0) as stream:
        writer.copy_from(stream, chunk_size=chunk_size)
    return writer.content_hash, writer.size
