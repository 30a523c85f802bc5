"""QEMU's mapped-ram files (QEMU 9.0+ ``file:`` migrations): bitmaps and pages at fixed offsets.

With the ``mapped-ram`` capability the stream's MEM_SIZE list is followed,
block by block, by a header (:class:`~xbzrle.stream.records.MappedRamBlock`),
a bitmap of the pages present and a region holding every page at
``pages_offset + page index * 4096``; the stream goes on after that region.
The parser reads the headers and skips the regions (a reader holding the
file jumps over them); this module reads what they hold, with random access:

- only the bitmap is read in full (in bounded chunks), then only the pages
  it marks: a block that claims 16 GiB and holds one page costs one page of
  reading, writing and hashing;
- every offset is checked against the file's real size before it is used,
  and nothing is allocated from a size the file merely claims.

The bitmap is QEMU's ``unsigned long`` array as a 64-bit little-endian host
writes it: bit ``i`` (of byte ``i // 8``, bit ``i % 8``) is page ``i``.
Pages that were zero are absent (QEMU clears their bit and writes nothing),
so an absent page is a zero page, even if stale bytes sit in its slot.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import mmap
import os
import re
import stat
import struct
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from .._backend import load_core
from ..errors import StreamError
from ..stream.constants import PAGE_SIZE
from ..stream.parser import StreamParser
from ..stream.records import MappedRamBlock

if TYPE_CHECKING:  # type checkers see the compiled core's stub (_core.pyi)
    from .. import _core
else:
    _core = load_core()

__all__ = [
    "LoadedBlock",
    "MappedRamInfo",
    "RandomAccessFile",
    "bitmap_runs",
    "check_in_file",
    "count_present",
    "file_chunks",
    "load_block",
    "present_runs",
    "read_presence",
    "stream_size",
]

BITMAP_CHUNK = 64 * 1024  # bytes of bitmap read at once: 512 Ki pages, 2 GiB of RAM
LOAD_PIECE = 1 << 20  # bytes of pages read per call, as QEMU's MAPPED_RAM_LOAD_BUF_SIZE
_NONZERO = re.compile(rb"[^\x00]+")
_WORD_BYTES = 64  # bit runs are found in pieces this long, so shifts stay cheap
_BE64 = struct.Struct(">Q")


class RandomAccessFile:
    """Positional reads of a stream file, checked against its real size."""

    def __init__(self, f: BinaryIO | io.BufferedIOBase, name: str = "") -> None:
        self.fd = f.fileno()
        self.size = os.fstat(self.fd).st_size
        self.name = name

    def readinto_at(self, offset: int, view: memoryview) -> int:
        """Fill ``view`` from ``offset``; returns the bytes read (fewer only at the end)."""
        done = 0
        while done < len(view):
            n = os.preadv(self.fd, [view[done:]], offset + done)
            if n == 0:
                break
            done += n
        return done

    def read_at(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        with memoryview(buf) as view:
            n = self.readinto_at(offset, view)
        return bytes(buf[:n])


def _fail(block: MappedRamBlock, message: str) -> StreamError:
    offset = block.stream_offset
    return StreamError(f"stream offset {offset}: mapped-ram block '{block.block}': {message}",
                       offset)


def check_in_file(block: MappedRamBlock, file_size: int) -> None:
    """StreamError unless the block's bitmap and pages region lie inside the file."""
    bitmap_end = block.bitmap_offset + block.bitmap_size
    if bitmap_end > file_size:
        raise _fail(block, f"bitmap at offset {block.bitmap_offset} ends at {bitmap_end}, "
                           f"past the end of the file ({file_size} bytes)")
    if block.pages_end > file_size:
        raise _fail(block, f"pages region at offset {block.pages_offset} ends at "
                           f"{block.pages_end}, past the end of the file ({file_size} bytes)")


def bitmap_runs(bitmap: bytes | bytearray | memoryview, first_page: int = 0,
                ) -> Iterator[tuple[int, int]]:
    """Runs of set bits as ``(page, count)``; ``bitmap`` starts at page ``first_page``.

    Zero bytes are skipped by the regex engine and set bits are found with
    integer operations on pieces of at most 64 bytes, so the work follows
    the runs present, not the bytes of the bitmap.  Runs crossing a piece
    boundary come out in several parts (:func:`present_runs` joins them).
    """
    data = bytes(bitmap)
    for match in _NONZERO.finditer(data):
        start, end = match.span()
        for piece in range(start, end, _WORD_BYTES):
            piece_end = min(piece + _WORD_BYTES, end)
            bits = (piece_end - piece) * 8
            x = int.from_bytes(data[piece:piece_end], "little")
            page = first_page + piece * 8
            if x == (1 << bits) - 1:
                yield page, bits
                continue
            while x:
                zeros = (x & -x).bit_length() - 1
                x >>= zeros
                page += zeros
                ones = (~x & (x + 1)).bit_length() - 1
                yield page, ones
                x >>= ones
                page += ones


def _bitmap_chunks(file: RandomAccessFile, block: MappedRamBlock,
                   ) -> Iterator[tuple[int, bytes]]:
    """``(first page, bytes)`` of the block's bitmap, in bounded chunks; checks the tail."""
    npages = block.pages
    for at in range(0, block.bitmap_size, BITMAP_CHUNK):
        length = min(BITMAP_CHUNK, block.bitmap_size - at)
        data = file.read_at(block.bitmap_offset + at, length)
        if len(data) != length:
            raise _fail(block, f"the file ends inside the bitmap at offset "
                               f"{block.bitmap_offset + len(data) + at}")
        first = at * 8
        if first + length * 8 > npages:
            # The last 64-bit word covers up to 63 pages past the block's end.
            beyond = int.from_bytes(data, "little") >> (npages - first)
            if beyond:
                page = npages + (beyond & -beyond).bit_length() - 1
                raise _fail(block, f"the bitmap marks page {page}, past the block's "
                                   f"{npages} pages")
        yield first, data


def present_runs(file: RandomAccessFile, block: MappedRamBlock) -> Iterator[tuple[int, int]]:
    """Maximal runs ``(first page, count)`` of the pages present in the file, ascending."""
    check_in_file(block, file.size)
    run_start, run_len = -1, 0
    for first, data in _bitmap_chunks(file, block):
        for page, count in bitmap_runs(data, first):
            if page == run_start + run_len:
                run_len += count
                continue
            if run_len:
                yield run_start, run_len
            run_start, run_len = page, count
    if run_len:
        yield run_start, run_len


def count_present(file: RandomAccessFile, block: MappedRamBlock) -> int:
    """How many of the block's pages the file holds (a popcount of its bitmap)."""
    check_in_file(block, file.size)
    return sum(int.from_bytes(data, "little").bit_count()
               for _, data in _bitmap_chunks(file, block))


@dataclass
class MappedRamInfo:
    """One block's layout as ``analyze`` shows it; ``pages_present`` once the bitmap was read."""

    block: MappedRamBlock
    pages_present: int | None = None

    def to_dict(self) -> dict[str, Any]:
        b = self.block
        return {"name": b.block, "size": b.size, "stream_offset": b.stream_offset,
                "header_version": b.version, "page_size": b.page_size,
                "bitmap_offset": b.bitmap_offset, "bitmap_size": b.bitmap_size,
                "pages_offset": b.pages_offset, "pages_end": b.pages_end,
                "pages": b.pages, "pages_present": self.pages_present}


def read_presence(infos: list[MappedRamInfo], file: RandomAccessFile) -> None:
    """Fill ``pages_present`` of every block from its bitmap; StreamError on a bad layout."""
    for info in infos:
        info.pages_present = count_present(file, info.block)


@dataclass
class LoadedBlock:
    """What :func:`load_block` put into one block."""

    pages: int = 0
    runs: int = 0
    present_sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"pages_present": self.pages, "runs": self.runs,
                "present_sha256": self.present_sha256}


def load_block(file: RandomAccessFile, block: MappedRamBlock, dest: memoryview) -> LoadedBlock:
    """Read every page present straight into ``dest`` (the block's bytes, zero elsewhere).

    ``present_sha256`` hashes, for each maximal run of pages present in
    ascending order, ``be64 byte offset``, ``be64 byte length`` and the
    bytes: it covers everything the file carries and nothing it does not.
    """
    if len(dest) != block.size:
        raise _fail(block, f"destination of {len(dest)} bytes for a block of {block.size}")
    digest = hashlib.sha256()
    loaded = LoadedBlock()
    for page, count in present_runs(file, block):
        start, length = page * PAGE_SIZE, count * PAGE_SIZE
        digest.update(_BE64.pack(start) + _BE64.pack(length))
        for at in range(start, start + length, LOAD_PIECE):
            piece = dest[at:min(at + LOAD_PIECE, start + length)]
            got = file.readinto_at(block.pages_offset + at, piece)
            if got != len(piece):
                raise _fail(block, f"the file ends inside page {(at + got) // PAGE_SIZE} "
                                   f"at offset {block.pages_offset + at + got}")
            digest.update(piece)
        loaded.pages += count
        loaded.runs += 1
    loaded.present_sha256 = digest.hexdigest()
    return loaded


def file_chunks(f: io.BufferedIOBase, parser: StreamParser, size: int = 1 << 20, *,
                reuse: bool = False) -> Iterator[bytes | memoryview]:
    """Read a stream file for ``parser``, jumping over mapped-ram regions when ``f`` can seek.

    The consumer must pull the parser's events after each chunk (before asking
    for the next one): the jump happens when the parser waits for a region's end.
    A region that ends past the end of the file is not jumped to, so the
    parser reports the stream as ending inside it.  ``reuse``: every chunk is
    read into one buffer (``readinto``) and given as a view of it, valid
    until the next one is asked for: no allocation per read.
    """
    file_size = stream_size(f)
    buffer = bytearray(size) if reuse else None
    while True:
        target = parser.skip_target
        if target is not None and file_size is not None and target <= file_size:
            f.seek(target)
            parser.jump(target)
        if buffer is None:
            chunk = f.read(size)
            if not chunk:
                return
            yield chunk
            continue
        n = f.readinto(buffer)
        if not n:
            return
        yield memoryview(buffer)[:n]


def mapped_file_chunks(f: BinaryIO | io.BufferedIOBase, parser: StreamParser, size: int = 4 << 20,
                       on_progress: Callable[[int], None] | None = None,
                       ) -> Iterator[memoryview] | None:
    """:func:`file_chunks` for a regular file, as views of a read-only mapping of it.

    The stream's bytes are handed over where they lie in the page cache:
    no ``read`` copies them into a buffer first (on tmpfs that copy was a
    fifth of ``extract``'s time).  Each chunk's pages are mapped with
    ``MADV_POPULATE_READ`` before it is given out, which turns what would
    be a SIGBUS on access (an I/O error, a file cut short meanwhile) into an
    error here: that chunk is then read with ``pread`` instead, which
    reports it as a read would.  The pages of a chunk are unmapped again
    (``MADV_DONTNEED``) once the consumer asks for the next one, so the
    process's memory does not grow with the file.  A view is valid until the
    next chunk is asked for.  ``on_progress`` hears the position after each
    chunk.  Returns None (read the file instead) when ``f`` is not a
    non-empty regular file at hand or the kernel cannot populate a mapping.
    """
    try:
        fd = f.fileno()
        info = os.fstat(fd)
        start = f.tell()
    except (OSError, ValueError, AttributeError):
        return None
    file_size = info.st_size
    if not stat.S_ISREG(info.st_mode) or file_size == 0 or start >= file_size:
        return None
    try:
        mapped = mmap.mmap(fd, file_size, prot=mmap.PROT_READ)
    except (OSError, ValueError):
        return None
    try:
        _core.populate_read(mapped, 0, 1)  # the first page: can the kernel do it at all?
    except OSError:  # EINVAL before Linux 5.14: no way to map pages without SIGBUS risk
        mapped.close()
        return None
    return _mapped_chunks(mapped, fd, start, parser, size, on_progress)


def _unmap_pages(mapped: mmap.mmap, start: int, end: int) -> None:
    """Let go of the pages of mapped[start:end] (MADV_DONTNEED): every page from
    the one holding ``start`` up to the last one that ends by ``end`` (the page
    holding ``end`` belongs to what follows)."""
    first, last = start - start % mmap.PAGESIZE, end - end % mmap.PAGESIZE
    if last > first:
        mapped.madvise(mmap.MADV_DONTNEED, first, last - first)


class _MapAhead:
    """Maps the next piece of a mapped stream file on a thread of its own.

    ``MADV_POPULATE_READ`` of a piece (the kernel finding each page in the
    page cache and mapping it) was a quarter of ``extract``'s time, while
    the second core sat idle; run for piece k + 1 while the consumer applies
    piece k, ``extract`` of 1 GiB took 0.72-0.78 s instead of 0.80-0.86 s
    (docs/qemu.md, "How extract moves the bytes").  The thread's mapping is
    only a head start: the generator maps each piece itself before handing
    it out, and only that call's error counts.  A piece mapped ahead and then
    skipped (the parser jumped) is let go again, so that memory still does
    not grow with the file.
    """

    def __init__(self, mapped: mmap.mmap) -> None:
        self._mapped = mapped
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="extract-map-ahead")
        self._pending: Future[None] | None = None
        self._range = (0, 0)

    def start(self, pos: int, n: int) -> None:
        """Begin mapping mapped[pos:pos + n]."""
        if n > 0:
            self._range = (pos, n)
            self._pending = self._pool.submit(_core.populate_read, self._mapped, pos, n)

    def settle(self, pos: int) -> None:
        """Wait for the mapping begun last; let it go unless the next piece starts at pos."""
        if self._pending is None:
            return
        with contextlib.suppress(OSError):  # the generator's own call says what failed
            self._pending.result()
        self._pending = None
        start, n = self._range
        if pos != start:
            _unmap_pages(self._mapped, start, start + n)

    def close(self) -> None:
        self._pool.shutdown(wait=True)  # before the mapping is closed


def _mapped_chunks(mapped: mmap.mmap, fd: int, pos: int, parser: StreamParser, size: int,
                   on_progress: Callable[[int], None] | None) -> Iterator[memoryview]:
    end = len(mapped)
    whole = memoryview(mapped)
    ahead = _MapAhead(mapped)
    try:
        while True:
            target = parser.skip_target
            if target is not None and target <= end:
                pos = target
                parser.jump(target)
            ahead.settle(pos)
            if pos >= end:
                return
            n = min(size, end - pos)
            try:
                # Also after the thread mapped this piece: a file cut since
                # then has lost those pages again, and this says so.
                _core.populate_read(mapped, pos, n)
                chunk = whole[pos:pos + n]
            except OSError:
                # Unreadable pages, or the file was cut: a read says which.
                chunk = memoryview(os.pread(fd, n, pos))
                if not chunk:
                    return
                n = len(chunk)
            ahead.start(pos + n, min(size, end - pos - n))
            yield chunk
            del chunk
            _unmap_pages(mapped, pos, pos + n)
            pos += n
            if on_progress is not None:
                on_progress(pos)
    finally:
        ahead.close()
        whole.release()
        try:
            mapped.close()
        except BufferError:  # a view still held (by an exception's frames): closed when freed
            pass


def stream_size(f: BinaryIO | io.BufferedIOBase) -> int | None:
    """The size of a seekable stream file (mapped-ram files are read with jumps)."""
    try:
        return os.fstat(f.fileno()).st_size if f.seekable() else None
    except (OSError, ValueError):
        return None
