"""Hostile or odd arguments to the codec get the documented exceptions.

Regression tests for issue 13 section 1: a wrapping sum of delta lengths
let ``decode_pages`` read past the delta buffer, and strided views or
integers beyond 64 bits escaped as ``BufferError``/``OverflowError``.  The
compiled core and the pure-Python twin must raise the same types.
"""

from __future__ import annotations

import ctypes
import mmap
from array import array
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from xbzrle.codec import implementations

IMPLEMENTATIONS = implementations()
PAGE = 4096


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def impl(request):
    return IMPLEMENTATIONS[request.param]


@contextmanager
def deltas_before_a_guard_page(content: bytes) -> Iterator[memoryview]:
    """The bytes of content, ending right before a page that cannot be read.

    A checker that walks past the end of the deltas faults at once (the
    test process dies) instead of reading whatever follows the buffer.
    """
    size = mmap.PAGESIZE
    region = mmap.mmap(-1, 2 * size)
    anchor = ctypes.c_char.from_buffer(region)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.mprotect(ctypes.addressof(anchor) + size, size, 0) == 0  # PROT_NONE
    view = memoryview(region)[size - len(content) : size]
    view[:] = content
    try:
        yield view
    finally:
        view.release()
        del anchor
        region.close()


@pytest.mark.parametrize(
    "lengths",
    [
        [2**63 - 1, 2**63 - 1, 5],  # wraps to 3 in 64 bits
        [2**63 - 1, 2**63 - 1, 7],  # wraps to exactly 5 = len(deltas)
        [2**64 - 1, 6, 0],  # wraps to 5 as well
        [5, 2**64 - 5, 5],
    ],
)
def test_decode_pages_never_trusts_a_sum_of_lengths(impl, lengths):
    pages = bytearray(3 * PAGE)
    with deltas_before_a_guard_page(bytes([0, 3, 1, 2, 3])) as deltas:  # one valid delta
        with pytest.raises(ValueError, match=r"lengths\[\d\] is \d+"):
            impl.decode_pages(deltas, lengths, pages)
    assert pages == bytes(3 * PAGE)


@pytest.mark.parametrize("typecode", ["q", "Q"])
def test_decode_pages_wrapping_lengths_in_a_buffer(impl, typecode):
    if typecode == "q":
        lengths = array("q", [2**63 - 1, 2**63 - 1, 7])
    else:
        lengths = array("Q", [2**64 - 1, 6, 0])
    with pytest.raises(ValueError, match=r"lengths\[\d\]"):
        impl.decode_pages(bytes([0, 3, 1, 2, 3]), lengths, bytearray(3 * PAGE))


def test_decode_pages_lengths_that_leave_bytes_over(impl):
    with pytest.raises(ValueError, match="lengths add up to 0 bytes but deltas holds 2"):
        impl.decode_pages(b"ab", [0, 0], bytearray(2 * PAGE))


@pytest.mark.parametrize("huge", [2**64, 2**64 + 5, -(2**64), 10**30])
def test_decode_pages_lengths_beyond_64_bits_are_value_errors(impl, huge):
    with pytest.raises(ValueError, match=r"lengths\[0\] is"):
        impl.decode_pages(b"", [huge, 0], bytearray(2 * PAGE))


def test_decode_pages_accepts_strided_lengths(impl):
    old = bytes(range(256)) * 32
    new = bytearray(old)
    new[5000] ^= 1
    deltas, lengths = impl.encode_pages(old, bytes(new))
    spread = array("q", [n for n in lengths for _ in range(3)])  # each length three times
    pages = bytearray(old)
    impl.decode_pages(deltas, memoryview(spread)[::3], pages)
    assert pages == new


def test_decode_pages_refuses_lengths_of_two_dimensions(impl):
    grid = memoryview(array("i", [0, 0])).cast("B").cast("i", (1, 2))
    with pytest.raises(TypeError, match="one-dimensional"):
        impl.decode_pages(b"", grid, bytearray(2 * PAGE))


def strided(size: int) -> memoryview:
    return memoryview(bytearray(2 * size))[::2]


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.encode(strided(PAGE), bytes(PAGE)),
        lambda m: m.encode(bytes(PAGE), strided(PAGE)),
        lambda m: m.decode(b"", strided(PAGE)),
        lambda m: m.decode(strided(4), bytes(PAGE)),
        lambda m: m.decode_into(b"", strided(PAGE)),
        lambda m: m.encode_pages(strided(PAGE), bytes(PAGE)),
        lambda m: m.encode_pages(bytes(PAGE), strided(PAGE)),
        lambda m: m.decode_pages(strided(2), [0], bytearray(PAGE)),
        lambda m: m.decode_pages(b"", [0], strided(PAGE)),
        lambda m: m.is_zero(strided(PAGE)),
        lambda m: m.uleb128_decode(strided(4)),
    ],
    ids=["encode old", "encode new", "decode old", "decode delta", "decode_into page",
         "encode_pages old", "encode_pages new", "decode_pages deltas", "decode_pages pages",
         "is_zero", "uleb128_decode"],
)
def test_strided_buffers_are_type_errors(impl, call):
    with pytest.raises(TypeError):
        call(impl)


@pytest.mark.parametrize("size", [2**64, 2**63, -(2**64)])
def test_page_sizes_beyond_64_bits_are_value_errors(impl, size):
    with pytest.raises(ValueError, match="page_size of"):
        impl.encode_pages(bytes(PAGE), bytes(PAGE), page_size=size)
    with pytest.raises(ValueError, match="page_size of"):
        impl.decode_pages(b"", [0], bytearray(PAGE), page_size=size)


def test_uleb128_position_beyond_64_bits_is_a_value_error(impl):
    with pytest.raises(ValueError, match="outside the buffer"):
        impl.uleb128_decode(b"\x00", 2**64)


def test_read_only_page_is_a_type_error(impl):
    with pytest.raises(TypeError):
        impl.decode_into(b"", bytes(PAGE))
    with pytest.raises(TypeError):
        impl.decode_pages(b"", [0], bytes(PAGE))
