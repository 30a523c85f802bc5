"""Property tests: the compiled codec behaves exactly like the reference."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xbzrle import DecodeError
from xbzrle.codec import implementations, reference

core = implementations().get("c")
pytestmark = pytest.mark.skipif(core is None, reason="no compiled core")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


PAGE_SIZES = st.one_of(st.sampled_from([64, 256, 4096, 16384]), st.integers(1, 300))


@st.composite
def page_pairs(draw, sizes=PAGE_SIZES):
    """(old, new): random old page, new page with structured changes."""
    size = draw(sizes)
    rng = random.Random(draw(st.integers(0, 2**32)))
    old = rng.randbytes(size)
    xor = bytearray(size)
    kind = draw(st.sampled_from(["runs", "sparse", "random", "block-edges"]))
    if kind == "runs":
        for _ in range(draw(st.integers(0, 20))):
            start = draw(st.integers(0, size - 1))
            length = draw(st.integers(1, 130))
            for i in range(start, min(size, start + length)):
                xor[i] = rng.randrange(1, 256)
    elif kind == "sparse":
        for pos in draw(st.lists(st.integers(0, size - 1), max_size=60)):
            xor[pos] = rng.randrange(1, 256)
    elif kind == "random":
        density = draw(st.sampled_from([0.01, 0.1, 0.5, 0.9, 1.0]))
        for i in range(size):
            if rng.random() < density:
                xor[i] = rng.randrange(1, 256)
    else:  # runs that start or end at 64-byte block boundaries
        for block in draw(st.lists(st.integers(0, size // 64), max_size=8)):
            edge = block * 64 + draw(st.sampled_from([-2, -1, 0, 1]))
            for i in range(max(0, edge), min(size, edge + draw(st.integers(1, 70)))):
                xor[i] = 0xFF
    new = bytes(a ^ b for a, b in zip(old, xor, strict=True))
    return old, new


@SETTINGS
@given(page_pairs(), st.one_of(st.none(), st.integers(0, 40000)))
def test_compiled_encoder_matches_reference_on_every_simd_path(pair, limit):
    old, new = pair
    expected = reference.encode(old, new, limit)
    live = core.simd_path()
    try:
        for path in core.simd_paths():
            core.select_simd(path)
            assert core.encode(old, new, limit) == expected, path
    finally:
        core.select_simd(live)


@SETTINGS
@given(page_pairs())
def test_round_trip_and_limit(pair):
    old, new = pair
    delta = core.encode(old, new, limit=10**6)
    if delta is None:  # only a full 16 KiB run is beyond 14-bit lengths
        assert len(old) == 16384 and all(a != b for a, b in zip(old, new, strict=True))
        return
    assert core.decode(delta, old) == new
    assert (delta == b"") == (old == new)
    assert core.encode(old, new, len(delta)) == delta
    if delta:
        assert core.encode(old, new, len(delta) - 1) is None
    assert core.encode(old, new) == (delta if len(delta) <= len(old) else None)


def outcome(impl, delta, page):
    """What a decoder makes of a delta: the new page or the error it raises."""
    try:
        return ("ok", impl.decode(delta, page))
    except DecodeError as exc:
        return ("error", str(exc), exc.offset)


@st.composite
def suspicious_deltas(draw):
    """Random bytes, or a valid delta with a few bytes changed, inserted or cut."""
    page_len = draw(st.sampled_from([1, 2, 16, 100, 300]))
    if draw(st.booleans()):
        return draw(st.binary(max_size=48)), page_len
    rng = random.Random(draw(st.integers(0, 2**32)))
    old = rng.randbytes(page_len)
    new = bytearray(old)
    for _ in range(draw(st.integers(1, 6))):
        pos = rng.randrange(page_len)
        new[pos] ^= rng.randrange(1, 256)
    delta = bytearray(reference.encode(old, bytes(new), limit=10**6))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(0, len(delta))))
        value = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0x81, 0xFF, 0x3F]))
        if action == "set" and pos < len(delta):
            delta[pos] = value
        elif action == "insert":
            delta.insert(pos, value)
        elif action == "delete" and pos < len(delta):
            del delta[pos]
        else:
            del delta[pos:]
    return bytes(delta), page_len


@settings(max_examples=600, deadline=None)
@given(suspicious_deltas())
def test_both_decoders_accept_and_refuse_the_same_deltas(case):
    delta, page_len = case
    page = bytes(range(page_len)) if page_len < 256 else random.Random(1).randbytes(page_len)
    assert outcome(core, delta, page) == outcome(reference, delta, page)


@settings(max_examples=40, deadline=None)
@given(st.lists(page_pairs(st.just(256)), min_size=0, max_size=12))
def test_batches_match_reference(pairs):
    old = b"".join(o for o, _ in pairs)
    new = b"".join(n for _, n in pairs)
    deltas, lengths = core.encode_pages(old, new, page_size=256)
    ref_deltas, ref_lengths = reference.encode_pages(old, new, page_size=256)
    assert (deltas, lengths) == (ref_deltas, ref_lengths)
    pages, ref_pages = bytearray(old), bytearray(old)
    core.decode_pages(deltas, lengths, pages, page_size=256)
    reference.decode_pages(deltas, lengths, ref_pages, page_size=256)
    assert pages == ref_pages
    for index, n in enumerate(lengths):
        page = slice(index * 256, (index + 1) * 256)
        assert pages[page] == (old[page] if n == -1 else new[page])


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**64 - 1), st.binary(max_size=4))
def test_uleb128_matches_reference(value, prefix):
    encoded = core.uleb128_encode(value)
    assert encoded == reference.uleb128_encode(value)
    assert core.uleb128_decode(prefix + encoded, len(prefix)) == (value, len(prefix) + len(encoded))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=14), st.integers(0, 14))
def test_uleb128_decoders_agree_on_any_bytes(data, pos):
    pos = min(pos, len(data))

    def result(impl):
        try:
            return impl.uleb128_decode(data, pos)
        except DecodeError as exc:
            return (str(exc), exc.offset)

    assert result(core) == result(reference)
