"""The compiled save and load loops, without sockets: their records parse with
the stream parser, they agree with each other, and the cache, the bytes sent
and the destination's page stay equal even while a writer races the loop."""

from __future__ import annotations

import dataclasses
import os
import random
import threading

import pytest

from xbzrle import StreamError
from xbzrle._backend import load_core
from xbzrle.stream import StreamParser, StreamWriter
from xbzrle.stream import constants as K
from xbzrle.stream import records as ev
from xbzrle.stream.counts import BatchCounts

_core = load_core()
PAGE = 4096
NAME = b"pc.ram"


def all_dirty(npages: int) -> bytearray:
    bm = bytearray(b"\xff" * (((npages + 63) // 64) * 8))
    return bm


def save_all(ram, bitmap, mode, cache, buf_size=1 << 16, cont=False):
    """Run the save loop to the end of the bitmap; return the chunks and summed counts."""
    chunks, totals, page = [], BatchCounts(), 0
    npages = len(ram) // PAGE
    buf = bytearray(buf_size)
    while page < npages:
        pos, page, cont, counts = _core.save_pages(buf, 0, ram, bitmap, page, NAME, 0, mode,
                                                   cache, cont)
        chunks.append(bytes(buf[:pos]))
        totals.add(BatchCounts.from_loop(counts))
    return chunks, totals, cont


def load_all(chunks, dest, xbzrle_ok=True, last=-1):
    for chunk in chunks:
        pos, last, status, _ = _core.load_pages(chunk, 0, [(NAME, dest)], last, xbzrle_ok, 0)
        assert pos == len(chunk) and status == 0
    return last


def test_loop_counts_carry_the_fields_of_batch_counts():
    """The loops' counts are matched by name, never by position."""
    assert _core.LoopCounts.__match_args__ == BatchCounts.FIELDS
    ram = bytearray(2 * PAGE)
    ram[PAGE] = 1
    _, _, _, counts = _core.save_pages(bytearray(1 << 16), 0, ram, all_dirty(2), 0, NAME, 0,
                                       _core.SAVE_PLAIN, None, False)
    got = BatchCounts.from_loop(counts)
    assert (got.scanned, got.zero, got.normal) == (2, 1, 1)
    assert got.wire_bytes == (8 + 1 + len(NAME) + 1) + (8 + PAGE)


@pytest.mark.parametrize("name", ["RAM_SAVE_FLAG_ZERO", "RAM_SAVE_FLAG_MEM_SIZE",
                                  "RAM_SAVE_FLAG_PAGE", "RAM_SAVE_FLAG_EOS",
                                  "RAM_SAVE_FLAG_CONTINUE", "RAM_SAVE_FLAG_XBZRLE",
                                  "ENCODING_FLAG_XBZRLE"])
def test_record_flags_of_the_c_loops_are_the_streams(name):
    assert getattr(_core, name) == getattr(K, name)


def test_plain_round_trip_and_records_parse_with_the_stream_parser():
    rng = random.Random(1)
    npages = 300
    ram = bytearray(npages * PAGE)
    for p in range(0, npages, 3):  # every third page holds data, the rest stay zero
        ram[p * PAGE:(p + 1) * PAGE] = rng.randbytes(PAGE)
    chunks, counts, _ = save_all(ram, all_dirty(npages), _core.SAVE_PLAIN, None, buf_size=20000)
    assert (counts.scanned, counts.zero, counts.normal) == (npages, 200, 100)
    dest = bytearray(npages * PAGE)
    load_all(chunks, dest)
    assert dest == ram
    # The same bytes wrapped in a stream parse into the same pages.
    w = StreamWriter()
    stream = (w.header() + w.section_start(0, "ram", 0, 4) + w.ram_blocks([("pc.ram", len(ram))])
              + w.eos() + w.footer(0) + w.section_end(0) + b"".join(chunks) + w.eos()
              + w.footer(0) + w.eof())
    p = StreamParser()
    p.feed(stream)
    p.close()
    pages = [e for e in p.events() if isinstance(e, ev.ZeroPage | ev.NormalPage)]
    assert len(pages) == npages
    assert [e.offset for e in pages] == [i * PAGE for i in range(npages)]


def test_only_dirty_pages_are_sent_and_their_bits_cleared():
    npages = 200
    ram = bytearray(os.urandom(npages * PAGE))
    bitmap = bytearray(((npages + 63) // 64) * 8)
    dirty = {0, 5, 63, 64, 65, 127, 199}
    for p in dirty:
        bitmap[p // 8] |= 1 << (p % 8)
    chunks, counts, _ = save_all(ram, bitmap, _core.SAVE_PLAIN, None)
    assert counts.scanned == len(dirty) and not any(bitmap)
    dest = bytearray(npages * PAGE)
    load_all(chunks, dest)
    for p in range(npages):
        page = dest[p * PAGE:(p + 1) * PAGE]
        assert (page == ram[p * PAGE:(p + 1) * PAGE]) == (p in dirty)


def test_xbzrle_rounds_miss_then_encode_then_skip_unchanged():
    npages = 64
    ram = bytearray(os.urandom(npages * PAGE))
    cache = _core.PageCache(1 << 20)
    dest = bytearray(npages * PAGE)
    # Round 1 of XBZRLE: every page is a cache miss, sent whole and cached.
    chunks, c, cont = save_all(ram, all_dirty(npages), _core.SAVE_XBZRLE, cache)
    assert c.cache_miss == npages and c.normal == npages and c.xbzrle == 0
    last = load_all(chunks, dest)
    # Round 2: four bytes per page changed: all XBZRLE records, small.
    for p in range(npages):
        for off in (0, 1024, 2048, 3072):
            ram[p * PAGE + off] ^= 0x5A
    chunks, c, cont = save_all(ram, all_dirty(npages), _core.SAVE_XBZRLE, cache, cont=cont)
    assert c.xbzrle == npages and c.cache_miss == 0
    assert sum(map(len, chunks)) < npages * 40
    last = load_all(chunks, dest, last=last)
    assert dest == ram
    # Round 3: nothing changed: nothing sent, counted as unchanged.
    chunks, c, cont = save_all(ram, all_dirty(npages), _core.SAVE_XBZRLE, cache, cont=cont)
    assert c.unchanged == npages and sum(map(len, chunks)) == 0 == c.wire_bytes
    # Overflow: a page rewritten completely goes whole and refreshes the cache.
    ram[0:PAGE] = os.urandom(PAGE)
    bm = bytearray(8)
    bm[0] = 1
    chunks, c, cont = save_all(ram, bm, _core.SAVE_XBZRLE, cache, cont=cont)
    assert c.overflow == 1 and c.normal == 1 and c.xbzrle_bytes == PAGE
    assert cache.lookup(0) == bytes(ram[0:PAGE])
    load_all(chunks, dest, last=last)
    assert dest == ram


def test_last_stage_leaves_the_cache_alone():
    npages = 8
    ram = bytearray(os.urandom(npages * PAGE))
    cache = _core.PageCache(1 << 20)
    save_all(ram, all_dirty(npages), _core.SAVE_XBZRLE, cache)
    before = [cache.lookup(p * PAGE) for p in range(npages)]
    ram[10] ^= 1
    save_all(ram, all_dirty(npages), _core.SAVE_LAST, cache)
    assert [cache.lookup(p * PAGE) for p in range(npages)] == before


def test_zero_page_refreshes_the_cached_copy():
    npages = 4
    ram = bytearray(os.urandom(npages * PAGE))
    cache = _core.PageCache(1 << 20)
    save_all(ram, all_dirty(npages), _core.SAVE_XBZRLE, cache)
    ram[PAGE:2 * PAGE] = bytes(PAGE)
    save_all(ram, all_dirty(npages), _core.SAVE_XBZRLE, cache)
    assert cache.lookup(PAGE) == bytes(PAGE)


def _round_with_table(ram, mode, cache, table, cont, buf_size):
    chunks, page, npages = [], 0, len(ram) // PAGE
    buf, bitmap, totals = bytearray(buf_size), all_dirty(npages), BatchCounts()
    while page < npages:
        pos, page, cont, counts = _core.save_pages(buf, 0, ram, bitmap, page, NAME, 0, mode,
                                                   cache, cont, None, None, table)
        chunks.append(bytes(buf[:pos]))
        totals.add(BatchCounts.from_loop(counts))
    return chunks, totals, cont


@pytest.mark.parametrize("buf_size", [1 << 16, 3 * PAGE + 100])
def test_xbzrle_rounds_give_the_stream_cache_and_table_of_qemus_design(buf_size):
    """Our round encodes from the live page straight into the record and
    applies the delta to the cached copy; QEMU's design (SAVE_QEMU_COPY: a
    private copy, encoded, then copied into the cache) must give the same
    stream, counts, cache and digest table: pages turned zero from random
    bytes and from a few bytes, a zero page unchanged and written, ordinary
    deltas, overflows and unchanged pages.  The small buffer puts records at
    its end."""
    npages = 24
    rng = random.Random(10)
    ram = bytearray(rng.randbytes(npages * PAGE))
    for p in range(8, 12):  # sparse pages: a few non-zero bytes
        ram[p * PAGE:(p + 1) * PAGE] = bytes(PAGE)
        for off in rng.sample(range(PAGE), 3):
            ram[p * PAGE + off] = 0x77
    for p in range(12, 16):  # zero pages
        ram[p * PAGE:(p + 1) * PAGE] = bytes(PAGE)
    ours, theirs = _core.PageCache(1 << 20), _core.PageCache(1 << 20)
    dest = bytearray(len(ram))
    tables = (bytearray(8 * npages), bytearray(8 * npages))
    cont = (False, False)
    last = -1
    for change in range(4):
        if change:
            for p in range(0, 4):  # random -> zero (overflow), then back
                ram[p * PAGE:(p + 1) * PAGE] = (bytes(PAGE) if change % 2
                                                else rng.randbytes(PAGE))
            for p in range(8, 10):  # a few bytes -> zero (a delta), then back
                ram[p * PAGE:(p + 1) * PAGE] = bytes(PAGE)
                if change % 2 == 0:
                    ram[p * PAGE + 5] = 0x11
            ram[12 * PAGE + 100] = change  # zero -> a byte (or back to zero)
            for p in range(16, 20):  # ordinary deltas
                ram[p * PAGE + rng.randrange(PAGE)] ^= 0x5A
        a = _round_with_table(ram, _core.SAVE_XBZRLE, ours, tables[0], cont[0], buf_size)
        b = _round_with_table(ram, _core.SAVE_QEMU_COPY, theirs, tables[1], cont[1], buf_size)
        assert a[0] == b[0]
        # encode_*: a clock sample that only our loop takes (x-encode-time)
        assert dataclasses.replace(a[1], encode_ns=0, encode_timed=0) == b[1]
        if change % 2:  # 4 overflow -> zero, 2 delta -> zero, 3 zero unchanged
            assert (a[1].zero, a[1].overflow, a[1].unchanged) == (9, 0, 10)
        elif change:  # the 4 pages back from zero to random bytes: overflows
            assert (a[1].zero, a[1].overflow) == (3, 4)
        cont = (a[2], b[2])
        assert ours.stats() == theirs.stats()
        for p in range(npages):
            assert ours.lookup(p * PAGE) == theirs.lookup(p * PAGE)
        assert tables[0] == tables[1]
        last = load_all(a[0], dest, last=last)
        assert dest == ram


def test_a_delta_where_the_buffer_leaves_the_encoder_no_slack_is_the_same_record():
    """The encoder writes past its delta; the loop encodes straight into the
    record only where the buffer has that slack, and near its end (a long
    block name, a record that just fits) through a scratch page: the record
    is the same either way, and the same as QEMU's design."""
    name = b"r" * 250
    max_record = 8 + 1 + 255 + 3 + PAGE  # the loop stops below this much room
    ram = bytearray(random.Random(3).randbytes(PAGE))
    ours, theirs = _core.PageCache(1 << 20), _core.PageCache(1 << 20)
    for cache, mode in ((ours, _core.SAVE_XBZRLE), (theirs, _core.SAVE_QEMU_COPY)):
        _core.save_pages(bytearray(1 << 16), 0, ram, all_dirty(1), 0, name, 0, mode, cache, False)
    cap = 1 << 16
    for room in (max_record, max_record + 100, max_record + 300):
        ram[room % PAGE] ^= 0x3C
        records = []
        for cache, mode in ((ours, _core.SAVE_XBZRLE), (theirs, _core.SAVE_QEMU_COPY)):
            buf = bytearray(cap)
            pos, _, _, counts = _core.save_pages(buf, cap - room, ram, all_dirty(1), 0, name, 0,
                                                 mode, cache, False)
            assert BatchCounts.from_loop(counts).xbzrle == 1
            records.append(bytes(buf[cap - room:pos]))
        assert records[0] == records[1]
        assert ours.lookup(0) == theirs.lookup(0) == bytes(ram)


def test_save_loop_races_a_writer_and_everything_stays_consistent(simd_path):
    """Cache, wire and destination agree on every page even while another
    thread rewrites pages under the loop (the cache takes each run's bytes
    from the delta as the encoder writes it), on every SIMD path."""
    npages = 512
    ram = bytearray(npages * PAGE)
    view = memoryview(ram)
    stop = threading.Event()

    def writer() -> None:
        rng = random.Random(7)
        while not stop.is_set():
            p = rng.randrange(npages)
            off = rng.randrange(0, PAGE - 64)
            view[p * PAGE + off:p * PAGE + off + 64] = rng.randbytes(64)

    t = threading.Thread(target=writer)
    t.start()
    cache = _core.PageCache(1 << 20)
    dest = bytearray(npages * PAGE)
    last, cont = -1, False
    try:
        for rnd in range(30):
            mode = _core.SAVE_PLAIN if rnd == 0 else _core.SAVE_XBZRLE
            chunks, _, cont = save_all(ram, all_dirty(npages), mode,
                                       cache if mode else None, buf_size=64 << 10, cont=cont)
            last = load_all(chunks, dest, last=last)
            if rnd:
                # Every cached page is exactly what the destination holds.
                for p in range(npages):
                    if p * PAGE in cache:
                        assert cache.lookup(p * PAGE) == bytes(dest[p * PAGE:(p + 1) * PAGE])
    finally:
        stop.set()
        t.join()
    chunks, _, _ = save_all(ram, all_dirty(npages), _core.SAVE_LAST, cache, cont=cont)
    load_all(chunks, dest, last=last)
    assert dest == ram


def test_cache_equals_destination_while_native_writers_hammer_the_pages():
    """No private copy: the delta is encoded from the live page and applied to the
    cached copy.  Three native workload threads (4 bytes, a word, whole pages per
    write) race the loop for 10,000 rounds; after every round each cached page
    equals the destination's, and the last stage makes the RAMs equal."""
    from xbzrle import Guest

    npages = 48  # the loop covers the workloads' 48 pages of the smallest guest
    with Guest(ram="1M", tracker="scan") as guest:
        block = guest.blocks["pc.ram"]
        for kind, offset in (("loadgen", 0), ("sparse", 16 * PAGE), ("dense", 32 * PAGE)):
            guest.start_workload(kind, offset=offset, size=15 * PAGE)
        view = memoryview(block)
        ram = view[:npages * PAGE]
        cache = _core.PageCache(1 << 20)
        dest = bytearray(npages * PAGE)
        last, cont = -1, False
        kinds = BatchCounts()
        try:
            for rnd in range(10_000):
                mode = _core.SAVE_PLAIN if rnd == 0 else _core.SAVE_XBZRLE
                chunks, counts, cont = save_all(ram, all_dirty(npages), mode,
                                                cache if mode else None, cont=cont)
                kinds.add(counts)
                last = load_all(chunks, dest, last=last)
                for p in range(npages):
                    if p * PAGE in cache:
                        assert cache.lookup(p * PAGE) == dest[p * PAGE:(p + 1) * PAGE], (rnd, p)
        finally:
            guest.stop()
        assert guest.pages_written > 10_000
        # Deltas, overflows (dense) and unchanged pages all took part.
        assert kinds.xbzrle and kinds.overflow and kinds.unchanged
        chunks, _, _ = save_all(ram, all_dirty(npages), _core.SAVE_LAST, cache, cont=cont)
        load_all(chunks, dest, last=last)
        assert dest == ram
        ram.release()
        view.release()


def test_load_loop_rejects_bad_records_without_writing():
    w = StreamWriter()
    good = w.normal_page("pc.ram", 0, b"\x01" * PAGE)
    dest = bytearray(2 * PAGE)
    cases = {
        "unknown RAM block": w.normal_page("other", 0, b"\x01" * PAGE),
        "outside its RAM block": bytes.fromhex("0000000000002002") + b"\x06pc.ram\x00",
        "not enabled": StreamWriter().xbzrle_page("pc.ram", 0, b"\x00\x01\x07"),
        "wrong encoding": bytes.fromhex("0000000000000040") + b"\x06pc.ram" + b"\x02\x00\x01\x00",
        "stream offset": StreamWriter().xbzrle_page("pc.ram", 0, b"\x00\x05\x07"),  # short
    }
    for reason, record in cases.items():
        ok = reason != "not enabled"
        with pytest.raises(StreamError, match=reason) as info:
            _core.load_pages(good + record, 0, [(NAME, dest)], -1, ok, 1000)
        assert info.value.offset >= 1000 + len(good)
        assert "stream offset" in str(info.value)
    # Records before the bad one were applied; the bad one wrote nothing.
    assert dest[:PAGE] == b"\x01" * PAGE and dest[PAGE:] == bytes(PAGE)


def test_load_loop_stops_at_incomplete_and_non_page_records():
    w = StreamWriter()
    rec = w.normal_page("pc.ram", 0, b"\x02" * PAGE)
    dest = bytearray(PAGE)
    pos, last, status, _ = _core.load_pages(rec[:-1], 0, [(NAME, dest)], -1, True, 0)
    assert (pos, status) == (0, 0) and dest == bytes(PAGE)
    pos, last, status, _ = _core.load_pages(rec + w.eos(), 0, [(NAME, dest)], -1, True, 0)
    assert pos == len(rec) and status == 2 and last == 0


def test_known_zero_pages_are_skipped_and_written_pages_are_still_zeroed():
    """The destination's map of pages that may hold data (from the kernel's page
    tables) lets ZERO records skip never-touched memory; it must never skip a
    page that holds data."""
    from xbzrle import Guest

    with Guest(ram=1 << 20) as guest:
        guest.stop()
        ram = guest.blocks["pc.ram"]
        view = memoryview(ram)
        view[3 * PAGE:3 * PAGE + 5] = b"hello"  # a page with data before the migration
        data = _core.data_map(ram, False)
        assert data[3] == 1 and data[7] == 0
        w = StreamWriter()
        w.ram_blocks([("pc.ram", ram.size)])
        records = (w.zero_page("pc.ram", 3 * PAGE) + w.zero_page("pc.ram", 7 * PAGE)
                   + w.normal_page("pc.ram", 9 * PAGE, b"\x09" * PAGE)
                   + w.zero_page("pc.ram", 9 * PAGE))
        pos, _, _, counts = _core.load_pages(records, 0, [(NAME, view, data)], -1, True, 0)
        assert pos == len(records) and counts.zero == 3 and counts.normal == 1
        assert bytes(view[3 * PAGE:4 * PAGE]) == bytes(PAGE)  # zeroed although it had data
        assert bytes(view[9 * PAGE:10 * PAGE]) == bytes(PAGE)  # written, then zeroed
        assert data[9] == 1
        view.release()


def _backoff_round(ram, cache, backoff, dest, last, change):
    """One XBZRLE round over one page after ``change(page)``; the destination applies it."""
    change(memoryview(ram)[:PAGE])
    chunks = []
    buf = bytearray(1 << 16)
    _, _, _, counts = _core.save_pages(buf, 0, ram, all_dirty(1), 0, NAME, 0,
                                       _core.SAVE_XBZRLE, cache, False, None, backoff)
    c = BatchCounts.from_loop(counts)
    chunks.append(bytes(buf[:c.wire_bytes]))
    last = load_all(chunks, dest, last=last)
    assert dest == ram  # whatever the loop decided, the destination holds the page
    return c, last


def test_overflow_backs_off_exponentially_and_keeps_the_cache_current():
    ram = bytearray(os.urandom(PAGE))
    cache = _core.PageCache(1 << 20)
    dest = bytearray(PAGE)
    backoff = bytearray(1)
    rewrite = lambda p: p.__setitem__(slice(None), os.urandom(PAGE))  # noqa: E731
    touch = lambda p: p.__setitem__(100, p[100] ^ 0xFF)  # noqa: E731
    c, last = _backoff_round(ram, cache, backoff, dest, -1, touch)
    assert c.cache_miss == 1  # the first time: cached, sent whole
    kinds, xbzrle_bytes = [], []
    changes = [rewrite] * 6 + [touch] * 5 + [rewrite] * 2
    for change in changes:
        c, last = _backoff_round(ram, cache, backoff, dest, last, change)
        kinds.append("overflow" if c.overflow else "skipped" if c.skipped_overflow
                     else "xbzrle" if c.xbzrle else "?")
        assert c.normal == c.overflow + c.skipped_overflow
        xbzrle_bytes.append(c.xbzrle_bytes)
    # overflow: skip once; again: skip twice; again: skip four times (small
    # changes too, while the cache slot follows the page); then the encoder
    # runs, the small change encodes in a few bytes (the slot was current)
    # and the back-off drops back: the next overflow skips once.
    assert kinds == ["overflow", "skipped", "overflow", "skipped", "skipped", "overflow",
                     "skipped", "skipped", "skipped", "skipped", "xbzrle", "overflow",
                     "skipped"]
    assert xbzrle_bytes[10] < 16


def test_back_off_state_is_checked():
    with pytest.raises(ValueError, match="backoff"):
        _core.save_pages(bytearray(1 << 16), 0, bytearray(2 * PAGE), all_dirty(2), 0, NAME, 0,
                         _core.SAVE_XBZRLE, _core.PageCache(1 << 20), False, None,
                         bytearray(1))
    with pytest.raises(BufferError):  # the loop writes it: a read-only buffer is refused
        _core.save_pages(bytearray(1 << 16), 0, bytearray(PAGE), all_dirty(1), 0, NAME, 0,
                         _core.SAVE_XBZRLE, _core.PageCache(1 << 20), False, None, b"\0")


def test_encoder_time_counts_only_pages_the_encoder_ran_on():
    """``encode_ns`` (``x-encode-time``) grows with encoder runs and with nothing else:
    not in plain rounds, not for cache misses or zero pages, not for pages the
    overflow back-off sends whole, not in the load loop."""
    npages = 64
    ram = bytearray(os.urandom(npages * PAGE))
    ram[:PAGE] = bytes(PAGE)  # one zero page
    cache = _core.PageCache(1 << 20)
    _, plain, _ = save_all(ram, all_dirty(npages), _core.SAVE_PLAIN, cache)
    assert plain.encode_ns == plain.encode_timed == 0
    chunks, misses, _ = save_all(ram, all_dirty(npages), _core.SAVE_XBZRLE, cache)
    assert misses.cache_miss == npages - 1  # all missed: no encoder
    assert misses.encode_ns == misses.encode_timed == 0
    for off in range(PAGE, len(ram), PAGE):
        ram[off + 7] ^= 0x5A
    _, hits, _ = save_all(ram, all_dirty(npages), _core.SAVE_XBZRLE, cache)
    assert hits.xbzrle == npages - 1 and hits.encode_ns > 0  # every non-zero page encoded
    # a sample is timed: the runs on every 32nd page (page 0 is zero: page 32 only)
    assert hits.encode_timed == 1 and hits.encode_time_ns >= hits.encode_ns

    dest = bytearray(npages * PAGE)
    loaded, last = BatchCounts(), -1
    for chunk in chunks:
        _, last, _, counts = _core.load_pages(chunk, 0, [(NAME, dest)], last, True, 0)
        loaded.add(BatchCounts.from_loop(counts))
    assert loaded.scanned > 0 and loaded.encode_ns == loaded.encode_timed == 0

    # A page in back-off goes whole without the encoder: no encoder time.
    backoff = bytearray([0x11])  # level 1, one skip to go
    page = bytearray(os.urandom(PAGE))
    one = _core.PageCache(1 << 20)
    save_one_page = lambda: BatchCounts.from_loop(_core.save_pages(  # noqa: E731
        bytearray(1 << 16), 0, page, all_dirty(1), 0, NAME, 0, _core.SAVE_XBZRLE, one, False,
        None, backoff)[3])
    assert save_one_page().cache_miss == 1
    page[9] ^= 1
    skipped = save_one_page()
    assert skipped.skipped_overflow == 1 and skipped.encode_ns == skipped.encode_timed == 0
    page[9] ^= 1
    encoded = save_one_page()
    assert encoded.xbzrle == encoded.encode_timed == 1 and encoded.encode_ns > 0
