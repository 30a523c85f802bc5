"""Fuzz the compiled decoder and decode_pages against the reference twin.

Any bytes as a delta, any old page: the compiled core and the pure-Python
reference agree (same page, or both DecodeError); decode_pages with any
lengths either applies exactly what the reference applies or raises the
documented ValueError/TypeError family, and never writes when it refuses.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import FUZZ
from xbzrle import DecodeError
from xbzrle.codec import implementations, reference

core = implementations().get("c")
pytestmark = pytest.mark.skipif(core is None, reason="no compiled core")
DOCUMENTED = (ValueError, TypeError, OverflowError)


def uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


@st.composite
def deltas(draw, size: int) -> bytes:
    """Plausible deltas (run lengths near the page size) mixed with raw noise."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    out = bytearray()
    for _ in range(draw(st.integers(0, 12))):
        near_size = st.integers(max(0, size - 40), size + 40)
        out += uleb(draw(st.one_of(st.integers(0, 40), near_size, st.integers(0, 2**35))))
        n = draw(st.one_of(st.integers(0, 40), near_size))
        out += uleb(n) + draw(st.binary(min_size=0, max_size=min(n, 64)))
    return bytes(out)


@FUZZ
@given(st.data())
def test_decode_matches_the_reference_on_any_bytes(data):
    size = data.draw(st.sampled_from([1, 7, 64, 4096]))
    old = random.Random(data.draw(st.integers(0, 2**32))).randbytes(size)
    delta = data.draw(deltas(size))
    try:
        want = reference.decode(delta, old)
    except DecodeError:
        with pytest.raises(DecodeError):
            core.decode(delta, old)
        return
    assert core.decode(delta, old) == want


@FUZZ
@given(st.data())
def test_decode_pages_applies_what_the_reference_applies_or_refuses(data):
    pages = data.draw(st.integers(1, 4))
    size = 4096
    blob = data.draw(st.binary(max_size=600))
    lengths = data.draw(st.lists(st.one_of(
        st.integers(-2, 80), st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, -(2**63)]),
        st.just(len(blob))), min_size=pages - 1, max_size=pages + 1))
    target = bytearray(random.Random(data.draw(st.integers(0, 2**32))).randbytes(size * pages))
    twin = bytearray(target)
    try:
        reference.decode_pages(blob, lengths, twin)
    except (DecodeError, *DOCUMENTED) as exc:
        with pytest.raises((DecodeError, *DOCUMENTED)):
            core.decode_pages(blob, lengths, target)
        assert target == bytearray(twin), f"the core wrote before refusing ({exc})"
        return
    core.decode_pages(blob, lengths, target)
    assert target == twin


@FUZZ
@given(st.integers(0, 2**32), st.lists(st.tuples(st.integers(0, 4095), st.integers(1, 300)),
                                       max_size=40))
def test_encode_then_decode_is_identity(seed, changes):
    rng = random.Random(seed)
    old = rng.randbytes(4096)
    new = bytearray(old)
    for start, length in changes:
        new[start:start + length] = rng.randbytes(len(new[start:start + length]))
    new = bytes(new)
    delta = core.encode(old, new)
    if delta is None:  # overflow: the page goes whole
        return
    assert core.decode(delta, old) == new
