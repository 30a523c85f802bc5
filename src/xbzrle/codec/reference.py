"""The XBZRLE codec in plain Python: the readable specification.

The compiled core must produce exactly the bytes this module produces and
refuse exactly the deltas it refuses; the tests hold both to that.  It is
about a hundred times slower, and chosen with ``XBZRLE_BACKEND=python``.

Format (QEMU's, see docs/codec.md): the XOR of the old and new page is cut
into alternating runs of zero bytes and non-zero bytes.  A delta is::

    delta = (zrun nzrun)*        zrun  = length
                                 nzrun = length byte{length}

with lengths in ULEB128 of at most two bytes (14 bits).  The canonical
encoding has maximal runs, a first zero run that may be empty, and no
trailing zero run; identical pages encode to nothing.
"""

from __future__ import annotations

import mmap
import operator
import re
from array import array
from collections.abc import Iterable, Iterator
from typing import TypeAlias

from ..errors import DecodeError

# Anything with the buffer protocol (numpy arrays too); listed for readers.
Buffer: TypeAlias = bytes | bytearray | memoryview | mmap.mmap

MAX_PAGE_SIZE = 16384
MAX_RUN = 0x3FFF  # the longest run a 14-bit length can describe
_NONZERO_RUN = re.compile(rb"[^\x00]+")


def _bytes_of(buf: Buffer) -> memoryview:
    return memoryview(buf).cast("B")


def _check_page_size(size: int, what: str) -> None:
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise ValueError(f"{what} of {size} bytes: XBZRLE pages hold 1 to {MAX_PAGE_SIZE} bytes")


def _check_same_length(a: memoryview, b: memoryview, what: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{what} differ in length ({len(a)} and {len(b)} bytes)")


def _check_whole_pages(size: int, page_size: int) -> None:
    _check_page_size(page_size, "page_size")
    if size % page_size:
        raise ValueError(f"buffers of {size} bytes do not hold whole pages of {page_size} bytes")


# ---- ULEB128 ----


def uleb128_encode(n: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, low bits first, bit 7 means "more"."""
    n = operator.index(n)
    if n < 0:
        raise ValueError(f"ULEB128 encodes non-negative integers, got {n!r}")
    if n >= 1 << 64:
        raise ValueError(f"ULEB128 value over 64 bits: {n!r}")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def uleb128_decode(buf: Buffer, pos: int = 0) -> tuple[int, int]:
    """(value, next position) of the ULEB128 number starting at buf[pos]."""
    data = _bytes_of(buf)
    if not 0 <= pos <= len(data):
        raise ValueError(f"pos {pos} is outside the buffer of {len(data)} bytes")
    value = shift = 0
    for i in range(pos, len(data)):
        value |= (data[i] & 0x7F) << shift
        if value >> 64:
            raise DecodeError(f"ULEB128 at offset {pos}: value over 64 bits", pos)
        if not data[i] & 0x80:
            return value, i + 1
        shift += 7
    raise DecodeError(f"ULEB128 at offset {pos}: truncated", pos)


def _read_length(delta: memoryview, i: int) -> tuple[int, int] | None:
    """A run length as QEMU reads it: (value, size), or None past two bytes."""
    if not delta[i] & 0x80:
        return delta[i], 1
    if delta[i + 1] & 0x80:
        return None
    return (delta[i] & 0x7F) | (delta[i + 1] << 7), 2


# ---- one page ----


def encode(old: Buffer, new: Buffer, limit: int | None = None) -> bytes | None:
    """XBZRLE delta turning page old into page new.

    b"" when the pages are equal, None when the delta would be longer than
    limit bytes (default: the page length) or a run would not fit in 14 bits.
    """
    old_bytes, new_bytes = _bytes_of(old), _bytes_of(new)
    _check_same_length(old_bytes, new_bytes, "old and new pages")
    _check_page_size(len(old_bytes), "page")
    if limit is None:
        limit = len(old_bytes)
    elif operator.index(limit) < 0:
        raise ValueError(f"limit must be None or >= 0, got {limit!r}")
    size = len(old_bytes)
    xor = (int.from_bytes(old_bytes, "little") ^ int.from_bytes(new_bytes, "little")).to_bytes(
        size, "little"
    )
    out = bytearray()
    zero_run_start = 0
    for run in _NONZERO_RUN.finditer(xor):
        start, end = run.span()
        if start - zero_run_start > MAX_RUN or end - start > MAX_RUN:
            return None
        out += uleb128_encode(start - zero_run_start)
        out += uleb128_encode(end - start) + new_bytes[start:end]
        if len(out) > limit:
            return None  # stop early: it only grows
        zero_run_start = end
    return bytes(out)


def _runs(
    delta: memoryview, page_len: int, page: int | None = None
) -> Iterator[tuple[int, bytes]]:
    """Validate a delta as QEMU's decoder does, yielding (page offset, new bytes).

    Each error names the offset of the length field at fault (and the page
    index, in a batch).
    """

    def refuse(offset: int, reason: str) -> DecodeError:
        where = "XBZRLE delta" if page is None else f"XBZRLE delta of page {page}"
        error = DecodeError(f"{where} at offset {offset}: {reason}", offset)
        if page is not None:
            error.page = page
        return error

    i = pos = 0
    while i < len(delta):
        if len(delta) - i < 2:
            raise refuse(i, "truncated zero run length (fewer than 2 bytes left)")
        length = _read_length(delta, i)
        if length is None:
            raise refuse(i, "zero run length over two bytes")
        zrun, used = length
        if zrun == 0 and i != 0:
            raise refuse(i, "zero run of length 0 (only the first run may be empty)")
        if pos + zrun > page_len:
            raise refuse(i, "zero run past the page end")
        pos += zrun
        i += used

        if len(delta) - i < 2:
            raise refuse(i, "truncated non-zero run length (fewer than 2 bytes left)")
        length = _read_length(delta, i)
        if length is None:
            raise refuse(i, "non-zero run length over two bytes")
        nzrun, used = length
        if nzrun == 0:
            raise refuse(i, "non-zero run of length 0")
        if pos + nzrun > page_len:
            raise refuse(i, "non-zero run past the page end")
        if i + used + nzrun > len(delta):
            raise refuse(i, "non-zero run data past the end of the delta")
        yield pos, bytes(delta[i + used : i + used + nzrun])
        pos += nzrun
        i += used + nzrun


def _writable_bytes(page: Buffer) -> memoryview:
    view = memoryview(page)
    if view.readonly:
        raise TypeError(f"page must be a writable buffer, not read-only {type(page).__name__}")
    return view.cast("B")


def decode(delta: Buffer, old: Buffer) -> bytes:
    """The new page: old with the delta applied."""
    page = bytearray(_bytes_of(old))
    decode_into(delta, page)
    return bytes(page)


def decode_into(delta: Buffer, page: Buffer) -> None:
    """Apply the delta in place; the page is untouched if the delta is refused."""
    delta_bytes = _bytes_of(delta)
    # Released even when the delta is refused: a traceback that kept the view
    # alive would pin the caller's buffer (an mmap could not be closed).
    with _writable_bytes(page) as target:
        _check_page_size(len(target), "page")
        for pos, data in list(_runs(delta_bytes, len(target))):  # validate all, then write
            target[pos : pos + len(data)] = data


def is_zero(buf: Buffer) -> bool:
    """True when every byte is 0 (a zero page is sent without its bytes)."""
    return not any(_bytes_of(buf))


# ---- batches of pages ----


def encode_pages(old: Buffer, new: Buffer, page_size: int = 4096) -> tuple[bytes, array[int]]:
    """Encode every page of two equal buffers, with limit = page_size.

    Returns (deltas, lengths): lengths is array('i'), per page 0 unchanged,
    -1 overflow, else the length of its delta; deltas concatenated in order.
    """
    old_bytes, new_bytes = _bytes_of(old), _bytes_of(new)
    _check_same_length(old_bytes, new_bytes, "old and new buffers")
    _check_whole_pages(len(old_bytes), page_size)
    deltas, lengths = bytearray(), array("i")
    for start in range(0, len(old_bytes), page_size):
        page = slice(start, start + page_size)
        delta = encode(old_bytes[page], new_bytes[page])
        lengths.append(-1 if delta is None else len(delta))
        deltas += delta or b""
    return bytes(deltas), lengths


def decode_pages(
    deltas: Buffer, lengths: Iterable[int], pages: Buffer, page_size: int = 4096
) -> None:
    """Apply encode_pages' output in place; refuse everything before writing.

    A DecodeError names the page (also as ``.page``) and the offset in its delta.
    """
    delta_bytes, target = _bytes_of(deltas), _writable_bytes(pages)
    _check_whole_pages(len(target), page_size)
    if isinstance(lengths, memoryview) and lengths.ndim != 1:
        dims = lengths.ndim
        raise TypeError(f"lengths must be one-dimensional, got a buffer of {dims} dimensions")
    lengths = [operator.index(n) for n in lengths]
    if len(lengths) != len(target) // page_size:
        raise ValueError(f"{len(lengths)} lengths for {len(target) // page_size} pages")
    remaining = len(delta_bytes)  # each length against what is left, as the C core must
    for index, n in enumerate(lengths):
        if n < -1:
            raise ValueError(
                f"lengths[{index}] is {n}: expected -1 (overflow), 0 (unchanged) or a delta length"
            )
        if n > remaining:
            raise ValueError(f"lengths[{index}] is {n} but only {remaining} bytes of deltas remain")
        remaining -= max(n, 0)
    if remaining:
        total = len(delta_bytes) - remaining
        raise ValueError(f"lengths add up to {total} bytes but deltas holds {len(delta_bytes)}")

    writes, start = [], 0
    for index, n in enumerate(lengths):
        if n <= 0:
            continue
        runs = _runs(delta_bytes[start : start + n], page_size, page=index)
        writes += [(index * page_size + pos, data) for pos, data in runs]
        start += n
    for pos, data in writes:
        target[pos : pos + len(data)] = data
