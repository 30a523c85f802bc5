"""The encoder reads a page that another thread is writing (issue 10 section 2).

The save loop will encode straight from live guest RAM while vCPU threads
write it.  The encoder promises to take every structural decision (where a
run starts and ends, how long it is, whether the page overflows) from one
read of each byte.  Then whatever the writer does, the delta is well formed
(the strict decoder and QEMU's rules accept it) and it only differs from the
old page where the writer wrote or where the page had really changed.

A numpy thread rewrites the pages with XOR masks (numpy releases the GIL
for the whole loop) while the main thread encodes the same memory (the core
releases the GIL too), so both run at once on the machine's cores.
"""

from __future__ import annotations

import threading

import pytest

from xbzrle.codec import implementations

np = pytest.importorskip("numpy")
core = implementations().get("c")
pytestmark = pytest.mark.skipif(core is None, reason="no compiled core")

PAGE = 4096
PAGES = 32
ROUNDS = 2000


def qemu_accepts(delta: bytes, page_size: int) -> bool:
    """QEMU's rules, written out apart from both decoders: lengths of at
    most two bytes, the first zero run may be empty and later ones not,
    non-zero runs never empty, everything inside the page and the delta."""
    i = pos = 0
    first = True

    def length() -> int | None:
        nonlocal i
        if len(delta) - i < 2:
            return None
        if delta[i] & 0x80:
            if delta[i + 1] & 0x80:
                return None
            value = (delta[i] & 0x7F) | (delta[i + 1] << 7)
            i += 2
        else:
            value = delta[i]
            i += 1
        return value

    while i < len(delta):
        zrun = length()
        if zrun is None or (zrun == 0 and not first) or pos + zrun > page_size:
            return False
        first = False
        pos += zrun
        nzrun = length()
        if not nzrun or pos + nzrun > page_size or i + nzrun > len(delta):
            return False
        pos += nzrun
        i += nzrun
    return True


def writer_masks(rng) -> list:
    """XOR masks over the batch: each flips its bytes on and off again, so
    run boundaries appear and vanish while the encoder reads them."""
    size = PAGE * PAGES
    sparse = np.zeros(size, np.uint8)
    sparse[rng.choice(size, size // 50, replace=False)] = rng.integers(1, 256, size // 50)
    runs = np.zeros(size, np.uint8)
    for start in rng.choice(size - 100, 16 * PAGES, replace=False):
        runs[start : start + rng.integers(1, 100)] = rng.integers(1, 256)
    # Around the 64-byte block and 256-byte chunk edges the scan works on.
    edges = np.zeros(size, np.uint8)
    offsets = np.arange(size) % 256
    edges[(offsets >= 250) | (offsets < 3) | ((offsets >= 62) & (offsets < 66))] = 0x41
    dense = np.zeros(size, np.uint8)
    dense[1::2] = 0x5A  # every second byte: the overflow path
    return [sparse, runs, edges, dense]


def test_deltas_stay_well_formed_while_a_thread_writes_the_page(simd_path):
    rng = np.random.default_rng(10)
    old = rng.integers(0, 256, PAGE * PAGES, dtype=np.uint8)
    masks = writer_masks(rng)
    writable = np.logical_or.reduce([m != 0 for m in masks])
    # Bytes that really changed before the writer starts and that it never
    # touches: every delta must carry them.
    changed = np.zeros_like(writable)
    changed[rng.choice(np.flatnonzero(~writable), 40 * PAGES, replace=False)] = True
    live = old.copy()
    live[changed] ^= 0x80
    expected_fixed = np.where(writable, 0, live)

    stop = threading.Event()
    writes = [0]

    def write():
        while not stop.is_set():
            for mask in masks:
                np.bitwise_xor(live, mask, out=live)  # GIL released inside
                writes[0] += 1

    thread = threading.Thread(target=write)
    thread.start()
    seen_overflow = seen_delta = 0
    try:
        for round_ in range(ROUNDS):
            deltas, lengths = core.encode_pages(old, live)
            # The strict decoder refuses anything QEMU would refuse.
            decoded = old.copy()
            core.decode_pages(deltas, lengths, decoded)
            # Where the writer never wrote, the delta reproduces the page:
            # old bytes stay old, really changed bytes arrive.  Overflowed
            # pages are sent whole, so they are left out.
            sent = np.repeat(np.asarray(lengths) >= 0, PAGE)
            assert np.array_equal(np.where(writable | ~sent, 0, decoded),
                                  np.where(sent, expected_fixed, 0)), round_
            seen_overflow += int(np.count_nonzero(np.asarray(lengths) < 0))
            seen_delta += int(np.count_nonzero(np.asarray(lengths) > 0))
            if round_ % 50 == 0:
                start = 0
                for n in lengths:
                    if n > 0:
                        assert qemu_accepts(deltas[start : start + n], PAGE), round_
                        start += n
    finally:
        stop.set()
        thread.join()
    # The writer really ran during the rounds, and both outcomes occurred.
    assert writes[0] > ROUNDS // 10
    assert seen_delta > 0 and seen_overflow > 0


def test_single_page_encode_under_a_writer(simd_path):
    """The same through encode() on one 16 KiB page, decoded by decode()."""
    rng = np.random.default_rng(11)
    size = 16384
    old = rng.integers(0, 256, size, dtype=np.uint8)
    mask = np.zeros(size, np.uint8)
    mask[rng.choice(size, size // 20, replace=False)] = 0x33
    mask[1000:1200] = 0x7E
    writable = mask != 0
    live = old.copy()
    stop = threading.Event()

    def write():
        while not stop.is_set():
            np.bitwise_xor(live, mask, out=live)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        for round_ in range(ROUNDS):
            delta = core.encode(old, live)
            if delta is None:
                continue
            assert qemu_accepts(delta, size), round_
            decoded = np.frombuffer(core.decode(delta, old), np.uint8)
            assert np.array_equal(decoded[~writable], old[~writable]), round_
    finally:
        stop.set()
        thread.join()
