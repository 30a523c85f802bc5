"""decode_pages checks the deltas of several pages at once (two side by side
on the portable path, sixteen in vector lanes on the x86 paths), with a fast
walk that folds most checks into flags and re-checks a delta exactly when
they trip: it must still accept and refuse exactly what the reference does,
name the same page and offset, and write nothing when any delta of the batch
is refused."""

from __future__ import annotations

import random
import threading

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


TINY_DELTAS = (b"\x00\x01\x07", b"\x05\x01\x09", b"\x00\x02\x01\x02")


def random_batch(rng: random.Random, old: bytes, page_count: int, damaged: set[int], *,
                 whole: float, tiny: float = 0.0) -> tuple[bytes, list[int]]:
    """Deltas for the pages of ``old``: a share ``whole`` unchanged or sent whole
    (length 0 or -1), a share ``tiny`` of 1-3 byte deltas, the rest valid deltas;
    the pages in ``damaged`` get their delta mutated."""
    deltas, lengths = [], []
    for index in range(page_count):
        page = old[index * PAGE : (index + 1) * PAGE]
        choice = rng.random()
        if choice < whole:
            lengths.append(rng.choice([0, -1]))
            continue
        if choice < whole + tiny:
            delta = rng.choice(TINY_DELTAS)
        else:
            delta, _ = valid_delta(rng, page)
        if index in damaged:
            delta = mutate(rng, delta)
        deltas.append(delta)
        lengths.append(len(delta))
    return b"".join(deltas), lengths


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 11), st.lists(st.integers(0, 10), max_size=3))
def test_batches_with_a_damaged_delta_match_the_reference(seed, page_count, damaged):
    rng = random.Random(seed)
    old = rng.randbytes(PAGE * page_count)
    joined, lengths = random_batch(rng, old, page_count, set(damaged), whole=0.15)
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


def length_fields(delta: bytes) -> list[int]:
    """Offsets of every length field of a valid delta."""
    fields, i = [], 0
    while i < len(delta):
        fields.append(i)
        _, i = reference.uleb128_decode(delta, i)
        fields.append(i)
        count, i = reference.uleb128_decode(delta, i)
        i += count
    return fields


@pytest.mark.parametrize("page_size", [4096, 16384])
def test_a_fault_at_any_length_field_is_found_where_the_reference_finds_it(simd_path, page_size):
    """Long deltas (the fast walk's ground: one- and two-byte zero runs, runs
    of 128 bytes and more) with one length field damaged in each of the ways
    QEMU refuses, at every field in turn, between two valid deltas."""
    rng = random.Random(page_size)
    old = rng.randbytes(3 * page_size)
    new = bytearray(old)
    for page in range(3):
        for _ in range(40):
            start = page * page_size + rng.randrange(page_size - 200)
            for i in range(start, start + rng.choice([1, 1, 2, 3, 9, 70, 130, 190])):
                new[i] ^= rng.randrange(1, 256)
    pages = [bytes(old[k * page_size : (k + 1) * page_size]) for k in range(3)]
    deltas = [reference.encode(pages[k], bytes(new[k * page_size : (k + 1) * page_size]),
                               limit=10**6) for k in range(3)]
    middle = deltas[1]
    damages = [lambda d, at: d[:at] + b"\x00" + d[at + 1 :],          # empty run
               lambda d, at: d[:at] + b"\x80\x80" + d[at + 2 :],     # over two bytes
               lambda d, at: d[:at] + b"\xff\x7f" + d[at + 2 :],     # past the page end
               lambda d, at: d[:at] + b"\x80\x00" + d[at + 1 :],     # non-canonical 0
               lambda d, at: d[:at] + b"\x81\x00" + d[at + 1 :],     # non-canonical 1
               lambda d, at: d[: at + 1]]                               # truncated
    for at in length_fields(middle):
        for damage in damages:
            damaged = damage(middle, at)
            joined = deltas[0] + damaged + deltas[2]
            lengths = [len(deltas[0]), len(damaged), len(deltas[2])]
            assert outcome(core, joined, lengths, bytes(old)) == outcome(
                reference, joined, lengths, bytes(old)), (at, damaged[at : at + 3])
            got, want = bytearray(pages[1]), bytearray(pages[1])
            results = []
            for impl, page in ((core, got), (reference, want)):
                try:
                    impl.decode_into(damaged, page)
                    results.append(None)
                except DecodeError as exc:
                    results.append((str(exc), exc.offset))
            assert results[0] == results[1] and got == want, (at, damaged[at : at + 3])


@pytest.mark.parametrize("seed", range(12))
def test_batches_longer_than_the_lanes_match_the_reference(simd_path, seed):
    """Batches of 17 to 60 pages (more than one round of sixteen lanes), with
    unchanged and overflowing pages, deltas of 1 to 3 bytes, and damaged
    deltas anywhere, on every SIMD path."""
    rng = random.Random(seed)
    page_count = rng.randrange(17, 61)
    old = rng.randbytes(PAGE * page_count)
    damaged = set(rng.sample(range(page_count), rng.choice([0, 0, 1, 2])))
    joined, lengths = random_batch(rng, old, page_count, damaged, whole=0.1, tiny=0.1)
    assert outcome(core, joined, lengths, old) == outcome(reference, joined, lengths, old)


def test_a_page_position_past_32_bits_is_refused(simd_path):
    """A delta of 262,144 runs, each a zero run of 16,383 bytes and one byte:
    its page position reaches 2**32 (where a 32-bit lane would wrap back to
    0, inside the page); the second run is already past the page end."""
    page_size = 16384
    delta = b"\xff\x7f\x01\x55" * 262144
    pages = bytearray(2 * page_size)
    with pytest.raises(DecodeError) as caught:
        core.decode_pages(b"\x00\x01\x09" + delta, [3, len(delta)], pages, page_size=page_size)
    assert caught.value.page == 1 and caught.value.offset == 4
    assert "zero run past the page end" in str(caught.value)
    assert pages == bytes(2 * page_size)


# ---- the run list of the x86 paths (struct xbz_run_list in codec_kernels.c) ----
# The check pass lists the runs of rounds of sixteen sparse deltas (a quarter
# of their pages at most) and the apply pass copies from the list; dense
# rounds, rounds after the list is full, and the runs after each fast walk
# (the last 4 bytes of a delta) are walked.  These batches mix all of them.

BIG_PAGE = 4096


def sparse_page(rng: random.Random, old: bytes, runs: int, tail: bool) -> bytes:
    """A page with `runs` short changes; with `tail`, its delta ends in a
    3-byte run (zero run under 128, one byte), which the fast walk leaves to
    the exact loop."""
    new = bytearray(old)
    places = sorted(rng.sample(range(0, BIG_PAGE - 200, 3), runs))
    for at in places:
        for i in range(at, at + rng.choice([1, 1, 2])):
            new[i] ^= rng.randrange(1, 256)
    if tail:
        new[BIG_PAGE - 1] ^= 0x5A
    return bytes(new)


def mixed_batch(rng: random.Random, page_count: int) -> tuple[bytes, bytes]:
    old = rng.randbytes(BIG_PAGE * page_count)
    new = bytearray(old)
    for index in range(page_count):
        page = old[index * BIG_PAGE : (index + 1) * BIG_PAGE]
        kind = rng.random()
        if kind < 0.1:
            continue  # unchanged
        if kind < 0.2:  # dense: more than a quarter of the page
            changed = bytes(b ^ 1 if i % 4 == 0 else b for i, b in enumerate(page))
        else:
            changed = sparse_page(rng, page, rng.randrange(1, 60), rng.random() < 0.5)
        new[index * BIG_PAGE : (index + 1) * BIG_PAGE] = changed
    return old, bytes(new)


@pytest.mark.parametrize("seed", range(4))
def test_sparse_rounds_decode_from_the_run_list(simd_path, seed):
    """Listed rounds, walked dense rounds between them, unchanged pages and
    3-byte last runs: every page ends as the encoded one."""
    rng = random.Random(seed)
    old, new = mixed_batch(rng, rng.randrange(20, 120))
    deltas, lengths = core.encode_pages(old, new)
    pages = bytearray(old)
    core.decode_pages(deltas, lengths, pages)
    assert pages == new


def tiny_page(rng: random.Random, old: bytes, tail: bool) -> bytes:
    """The seed pattern's page: one byte changed every 1024 bytes, a delta
    of 16 bytes or less (tiny: its rounds are walked, two pages side by
    side); with `tail`, the last change is the page's last byte."""
    new = bytearray(old)
    start = BIG_PAGE - 1 - 3 * 1024 if tail else rng.randrange(1024)
    for at in range(start, BIG_PAGE, 1024):
        new[at] = (new[at] + 1) & 0xFF
    return bytes(new)


@pytest.mark.parametrize("seed", range(4))
def test_tiny_rounds_between_listed_rounds_decode(simd_path, seed):
    """Blocks of 1-40 pages of one kind each: tiny deltas (walked in pairs,
    odd blocks leaving one page alone), sparse ones (listed), dense ones and
    unchanged pages, in every order: every page ends as the encoded one."""
    rng = random.Random(100 + seed)
    page_count = 400
    old = rng.randbytes(BIG_PAGE * page_count)
    new = bytearray(old)
    index = 0
    while index < page_count:
        kind = rng.choice(["tiny", "tiny", "sparse", "dense", "unchanged"])
        for _ in range(min(rng.randrange(1, 41), page_count - index)):
            page = old[index * BIG_PAGE : (index + 1) * BIG_PAGE]
            if kind == "tiny":
                page = tiny_page(rng, page, rng.random() < 0.5)
            elif kind == "sparse":
                page = sparse_page(rng, page, rng.randrange(20, 60), rng.random() < 0.5)
            elif kind == "dense":
                page = bytes(b ^ 1 if i % 4 == 0 else b for i, b in enumerate(page))
            new[index * BIG_PAGE : (index + 1) * BIG_PAGE] = page
            index += 1
    deltas, lengths = core.encode_pages(old, bytes(new))
    assert any(0 < n < 24 for n in lengths) and any(n > 100 for n in lengths)
    pages = bytearray(old)
    core.decode_pages(deltas, lengths, pages)
    assert pages == new


def test_a_batch_whose_runs_outgrow_the_list_is_decoded_whole(simd_path):
    """About 24 MiB of run records (7,000 pages of 300 runs each: listed
    records take 128 bytes a step for sixteen pages), more than the list's
    16 MiB: the rounds past it are walked, and every page still decodes (the
    portable path keeps no list and walks them all)."""
    page_count, rng = 7000, random.Random(7)
    old = bytearray(rng.randbytes(BIG_PAGE * page_count))
    new = bytearray(old)
    new[::13] = bytes((b + 1) & 0xFF for b in old[::13])  # 315 one-byte runs a page
    deltas, lengths = core.encode_pages(old, new)
    assert max(lengths) <= BIG_PAGE // 4  # sparse: every round is listed while room lasts
    core.decode_pages(deltas, lengths, old)
    assert old == new


def test_a_round_waiting_on_one_long_delta_is_decoded(simd_path):
    """Fifteen pages with one changed byte and one with 300 runs: the round's
    records would take far more than its deltas (every lane has a record
    at each of the long delta's steps), so it is walked, and decodes."""
    rng = random.Random(9)
    old = rng.randbytes(BIG_PAGE * 16)
    new = bytearray(old)
    for index in range(16):
        stride = 13 if index == 7 else BIG_PAGE
        for at in range(index * BIG_PAGE + 5, (index + 1) * BIG_PAGE, stride):
            new[at] ^= 0x81
    deltas, lengths = core.encode_pages(old, bytes(new))
    pages = bytearray(old)
    core.decode_pages(deltas, lengths, pages)
    assert pages == new


def test_threads_decode_with_their_own_run_lists():
    """Each thread keeps its own list: batches decoded at once in four
    threads (the GIL is released while they run) all come out right."""
    rng = random.Random(11)
    batches = [mixed_batch(rng, 64) for _ in range(4)]
    encoded = [core.encode_pages(old, new) for old, new in batches]
    failures = []

    def decode(index: int) -> None:
        old, new = batches[index]
        deltas, lengths = encoded[index]
        for _ in range(20):
            pages = bytearray(old)
            core.decode_pages(deltas, lengths, pages)
            if pages != new:
                failures.append(index)

    threads = [threading.Thread(target=decode, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_deltas_rewritten_during_a_decode_never_write_outside_the_pages(simd_path):
    """A thread rewrites the last page's delta while decode_pages runs on a
    large batch: each call applies or refuses, but the bytes after the pages
    are never written (the apply pass bounds every copy by its page, listed
    or walked, whatever the delta holds by the time it gets there)."""
    rng = random.Random(3)
    old, new = mixed_batch(rng, 511)
    last = bytearray(old[-BIG_PAGE:])
    for at in range(0, BIG_PAGE, 4):  # a dense last page: walked, not listed
        last[at] ^= 1
    old, new = old, new[:-BIG_PAGE] + bytes(last)
    deltas, lengths = core.encode_pages(old, new)
    shared = bytearray(deltas)
    tail = len(shared) - lengths[-1]
    guard = b"\xA5" * BIG_PAGE
    buffer = bytearray(old + guard)
    pages = memoryview(buffer)[: len(old)]
    stop = threading.Event()

    def scribble() -> None:
        noise = random.Random(4)
        while not stop.is_set():
            for _ in range(64):
                shared[noise.randrange(tail, len(shared))] = noise.choice([0x7F, 0xFF, 0x80, 0])
            for at in range(tail, len(shared)):
                shared[at] = deltas[at]

    writer = threading.Thread(target=scribble)
    writer.start()
    try:
        for _ in range(300):
            try:
                core.decode_pages(shared, lengths, pages)
            except DecodeError:
                pass
    finally:
        stop.set()
        writer.join()
    assert buffer[len(old):] == guard
