"""DirtyBitmap: the page set a sync returns and the save loop walks."""

from __future__ import annotations

import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xbzrle.guest import DirtyBitmap


@st.composite
def page_sets(draw):
    npages = draw(st.integers(0, 700))
    pages = draw(st.sets(st.integers(0, npages - 1))) if npages else set()
    return npages, pages


@settings(max_examples=60, deadline=None)
@given(page_sets())
def test_pages_round_trip_through_words(case):
    npages, pages = case
    bitmap = DirtyBitmap(npages, pages)
    assert list(bitmap.pages()) == sorted(pages)
    assert bitmap.count() == len(pages)
    words = memoryview(bitmap).cast("B").cast("Q").tolist()
    assert len(words) == (npages + 63) // 64
    decoded = {w * 64 + i for w, word in enumerate(words) for i in range(64) if word >> i & 1}
    assert decoded == pages
    assert all(p in bitmap for p in pages)
    assert all(p not in bitmap for p in set(range(npages)) - pages)


def test_buffer_is_little_endian_uint64_words():
    bitmap = DirtyBitmap(130, [0, 63, 64, 129])
    raw = bytes(memoryview(bitmap))
    assert raw == (
        (1 | 1 << 63).to_bytes(8, "little") + (1).to_bytes(8, "little") + (2).to_bytes(8, "little")
    )
    view = memoryview(bitmap)
    assert view.format == "Q" and view.itemsize == 8 and view.shape == (3,)


def test_full_sets_exactly_npages():
    bitmap = DirtyBitmap.full(100)
    assert bitmap.count() == 100
    assert list(bitmap.pages()) == list(range(100))
    assert 100 not in bitmap and -1 not in bitmap


def test_union_equality_and_editing():
    a, b = DirtyBitmap(200, [1, 150]), DirtyBitmap(200, [2, 150])
    assert list((a | b).pages()) == [1, 2, 150]
    assert a == DirtyBitmap(200, [150, 1]) and a != b
    a |= b
    assert list(a.pages()) == [1, 2, 150]
    a.discard(150)
    a.add(199)
    assert list(a.pages()) == [1, 2, 199]
    c = a.copy()
    a.clear()
    assert a.count() == 0 and c.count() == 3
    assert isinstance(c.pages(), array.array) and c.pages().typecode == "Q"


def test_out_of_range_pages_are_refused():
    with pytest.raises(IndexError):
        DirtyBitmap(10, [10])
    with pytest.raises(IndexError):
        DirtyBitmap(10).add(-1)
    with pytest.raises(ValueError):
        DirtyBitmap(10) | DirtyBitmap(11)
    assert "x" not in DirtyBitmap(10)
