"""Opening a saved stream that may be compressed (gzip, xz, zstd).

People keep migration streams compressed (``migrate "exec:gzip > f.gz"`` is
QEMU's own documented example).  The compression is recognised by its magic
bytes, never by the file name, so ``vm.bin`` holding gzip data and
``vm.gz`` holding a raw stream both read right.  gzip and xz come from the
standard library, zstd from the ``zstandard`` package.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, cast

from ..errors import StreamError

#: Magic bytes at the start of each compressed format.
MAGICS = {
    "gzip": b"\x1f\x8b",
    "xz": b"\xfd7zXZ\x00",
    "zstd": b"\x28\xb5\x2f\xfd",
}


def sniff(head: bytes) -> str | None:
    """The compression whose magic ``head`` starts with, or None for a raw stream."""
    for name, magic in MAGICS.items():
        if head.startswith(magic):
            return name
    return None


class ByteReader(Protocol):
    """What is read of a stream: a file, or a decompressor (gzip, lzma, zstd), not a BinaryIO."""

    def read(self, size: int = -1, /) -> bytes: ...


@dataclass
class OpenedStream:
    """A readable stream of migration bytes, and what is known about the input."""

    reader: ByteReader
    compression: str | None
    raw: BinaryIO  # the file itself, for progress (its position in compressed bytes)
    size: int | None  # bytes in the file, None for a pipe


def stdin_file() -> io.BufferedIOBase:
    """Standard input's binary file, which reads into a buffer (``readinto``)."""
    # typing.TextIO.buffer is a BinaryIO, which does not declare readinto; the
    # interpreter's stdin is a TextIOWrapper over an io.BufferedReader.
    return cast(io.BufferedIOBase, sys.stdin.buffer)


def _decompressor(name: str, raw: BinaryIO) -> ByteReader:
    if name == "gzip":
        import gzip

        return gzip.GzipFile(fileobj=raw, mode="rb")
    if name == "xz":
        import lzma

        return lzma.LZMAFile(raw, "rb")
    try:
        import zstandard
    except ImportError:
        raise StreamError("the stream is zstd-compressed and the 'zstandard' package is "
                          "not installed (pip install zstandard)") from None
    return zstandard.ZstdDecompressor().stream_reader(raw)


@contextmanager
def open_stream(path: str | os.PathLike[str]) -> Iterator[OpenedStream]:
    """Open ``path`` ("-" is standard input), decompressing it if its bytes say so."""
    if str(path) == "-":
        raw: BinaryIO = sys.stdin.buffer
        size = None
        close = False
    else:
        raw = open(path, "rb")  # noqa: SIM115  (closed below)
        size = os.fstat(raw.fileno()).st_size or None
        close = True
    try:
        head = raw.peek(8)[:8] if hasattr(raw, "peek") else b""
        name = sniff(head)
        reader = raw if name is None else _decompressor(name, raw)
        yield OpenedStream(reader, name, raw, size)
    finally:
        if close:
            raw.close()


def read_chunks(opened: OpenedStream, size: int = 1 << 20) -> Iterator[bytes]:
    """The stream's bytes in chunks; a corrupt compressed file is a StreamError."""
    while True:
        try:
            chunk = opened.reader.read(size)
        except (EOFError, OSError, ValueError) as exc:
            if opened.compression is None:
                raise
            raise StreamError(f"the {opened.compression} data is corrupt: {exc}") from None
        except Exception as exc:  # zstandard.ZstdError derives from Exception only
            if opened.compression != "zstd":
                raise
            raise StreamError(f"the zstd data is corrupt: {exc}") from None
        if not chunk:
            return
        yield chunk


class ProgressReader:
    """A file that reports its read position after each read (for progress displays).

    Seeks, ``fileno`` and the rest go to the file itself, so readers that jump
    (mapped-ram regions) or read at offsets keep working.
    """

    def __init__(self, f: io.BufferedIOBase, on_progress: Callable[[int], None]) -> None:
        self._f = f
        self._on_progress = on_progress

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self._on_progress(self._f.tell())
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = self._f.readinto(buffer)
        self._on_progress(self._f.tell())
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)
