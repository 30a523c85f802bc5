"""decode_pages parses four deltas at a time: it must still accept and refuse
exactly what the reference does, name the same page and offset, and write
nothing when any delta of the batch is refused."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xbzrle import DecodeError
from xbzrle.codec import implementations, reference

core = implementations().get("c")
pytestmark = pytest.mark.skipif(core is None, reason="no compiled core")
PAGE = 256


def valid_delta(rng: random.Random, old: bytes) -> tuple[bytes, bytes]:
    new = bytearray(old)
    for _ in range(rng.randrange(1, 12)):
        start = rng.randrange(PAGE)
        for i in range(start, min(PAGE, start + rng.choice([1, 2, 5, 40, 130]))):
            new[i] ^= rng.randrange(1, 256)
    delta = reference.encode(old, bytes(new), limit=10**6)
    return delta, bytes(new)


def mutate(rng: random.Random, delta: bytes) -> bytes:
    out = bytearray(delta)
    for _ in range(rng.randrange(1, 4)):
        pos = rng.randrange(len(out) + 1)
        action = rng.choice(["flip", "set", "insert", "delete", "cut"])
        if action == "flip" and pos < len(out):
            out[pos] ^= 1 << rng.randrange(8)
        elif action == "set" and pos < len(out):
            out[pos] = rng.choice([0, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        elif action == "insert":
            out.insert(pos, rng.choice([0, 0x80, 0xFF, 1]))
        elif action == "delete" and pos < len(out):
            del out[pos]
        else:
            del out[pos:]
    return bytes(out)


def outcome(impl, deltas: bytes, lengths: list[int], old: bytes):
    pages = bytearray(old)
    try:
        impl.decode_pages(deltas, lengths, pages, page_size=PAGE)
    except DecodeError as exc:
        assert pages == old  # nothing written
        return ("refused", str(exc), exc.offset, exc.page)
    except ValueError as exc:
        assert pages == old
        return ("bad lengths", type(exc).__name__)
    return ("applied", bytes(pages))


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 11), st.lists(st.integers(0, 10), max_size=3))
def test_batches_with_a_damaged_delta_match_the_reference(seed, page_count, damaged):
    rng = random.Random(seed)
    old = rng.randbytes(PAGE * page_count)
    deltas, lengths = [], []
    for index in range(page_count):
        page = old[index * PAGE : (index + 1) * PAGE]
        choice = rng.random()
        if choice < 0.15:
            lengths.append(rng.choice([0, -1]))  # unchanged or sent whole
            continue
        delta, _ = valid_delta(rng, page)
        if index in damaged:
            delta = mutate(rng, delta)
        deltas.append(delta)
        lengths.append(len(delta))
    joined = b"".join(deltas)
    assert outcome(core, joined, lengths, old) == outcome(reference, joined, lengths, old)


def test_valid_batches_of_every_size_apply_every_page():
    rng = random.Random(5)
    for page_count in range(1, 14):
        old = rng.randbytes(PAGE * page_count)
        deltas, lengths, expected = [], [], bytearray(old)
        for index in range(page_count):
            if index % 5 == 3:
                lengths.append(0)
                continue
            delta, new = valid_delta(rng, old[index * PAGE : (index + 1) * PAGE])
            deltas.append(delta)
            lengths.append(len(delta))
            expected[index * PAGE : (index + 1) * PAGE] = new
        pages = bytearray(old)
        core.decode_pages(b"".join(deltas), lengths, pages, page_size=PAGE)
        assert pages == expected, page_count
