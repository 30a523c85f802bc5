"""The parser's fast path: page records applied where they lie in the fed buffer.

``StreamParser.feed`` hands runs of page records to the page sink (the
compiled load loop) on the caller's buffer itself; only what the sink leaves
(a partial record, anything that is not a page) is copied into the parser.
Whatever the chunking, the RAM, the events and the errors are those of the
record-by-record path.
"""

from __future__ import annotations

import os
import random

import pytest

from xbzrle._backend import load_core
from xbzrle.errors import StreamError
from xbzrle.stream import StreamParser, StreamWriter
from xbzrle.stream import records as ev
from xbzrle.stream.load import PageLoader

_core = load_core()
PAGE = 4096
NPAGES = 64


def stream_and_ram(bad_at: int | None = None) -> tuple[bytes, bytes]:
    """A stream of PAGE, ZERO and XBZRLE records for one block, and the RAM it builds."""
    rng = random.Random(5)
    w = StreamWriter()
    ram = bytearray(NPAGES * PAGE)
    records = []
    for p in range(NPAGES):
        if p % 4 == 3:
            records.append(w.zero_page("pc.ram", p * PAGE))
            continue
        data = rng.randbytes(PAGE)
        ram[p * PAGE:(p + 1) * PAGE] = data
        records.append(w.normal_page("pc.ram", p * PAGE, data))
    for p in range(0, NPAGES, 5):  # a second round: XBZRLE deltas on some pages
        if p % 4 == 3:
            continue
        old = bytes(ram[p * PAGE:(p + 1) * PAGE])
        new = bytearray(old)
        new[::1024] = bytes((b + 1) & 0xFF for b in old[::1024])
        ram[p * PAGE:(p + 1) * PAGE] = new
        records.append(w.xbzrle_page("pc.ram", p * PAGE, _core.encode(old, bytes(new))))
    if bad_at is not None:
        records.insert(bad_at, w.normal_page("pc.ram", NPAGES * PAGE, bytes(PAGE)))
    stream = (w.header() + w.section_start(0, "ram", 0, 4) + w.ram_blocks([("pc.ram", len(ram))])
              + w.eos() + w.footer(0) + w.section_end(0) + b"".join(records) + w.eos()
              + w.footer(0) + w.eof())
    return stream, bytes(ram)


def load(stream: bytes, chunk: int, sink: bool) -> tuple[bytearray, list, PageLoader]:
    dest = bytearray(NPAGES * PAGE)
    loader = PageLoader({"pc.ram": dest}, xbzrle=True)
    parser = StreamParser()
    if sink:
        parser.page_sink = loader.sink
    events = []
    view = memoryview(stream)
    for start in range(0, len(stream), chunk):
        buf = bytearray(view[start:start + chunk])
        parser.feed(buf)
        buf[:] = os.urandom(len(buf))  # the caller reuses its buffer at once
        for event in parser.events():
            if isinstance(event, ev.ZeroPage | ev.NormalPage | ev.XbzrlePage):
                loader.apply(event)
            events.append(event)
    parser.close()
    loader.release()
    return dest, events, loader


@pytest.mark.parametrize("chunk", [13, 4096, 4105, 65536, 1 << 20])
def test_in_place_sink_builds_the_same_ram_as_record_by_record(chunk):
    stream, ram = stream_and_ram()
    fast, events, loader = load(stream, chunk, sink=True)
    slow, slow_events, slow_loader = load(stream, chunk, sink=False)
    assert fast == slow == ram
    kinds = ("scanned", "zero", "normal", "xbzrle")
    assert [getattr(loader.counts, k) for k in kinds] == \
        [getattr(slow_loader.counts, k) for k in kinds]
    assert loader.counts.scanned == NPAGES + len(range(0, NPAGES, 5)) - 3
    if chunk >= 4105:  # whole records per chunk: the sink took them where they lay
        assert any(isinstance(e, ev.PagesLoaded) for e in events)
    # The events around the pages keep their order and offsets.
    others = [e for e in events if not isinstance(e, ev.PagesLoaded)]
    slow_others = [e for e in slow_events
                   if not isinstance(e, ev.ZeroPage | ev.NormalPage | ev.XbzrlePage)]
    assert [(type(e), e.stream_offset) for e in others] == \
        [(type(e), e.stream_offset) for e in slow_others]


@pytest.mark.parametrize("chunk", [4105, 1 << 20])
def test_a_bad_record_fails_at_its_offset_with_the_fast_path(chunk):
    stream, _ = stream_and_ram(bad_at=20)
    errors = []
    for sink in (True, False):
        with pytest.raises(StreamError) as info:
            load(stream, chunk, sink)
        errors.append(info.value.offset)
    assert errors[0] == errors[1]


def test_zero_records_populate_nothing_and_page_records_only_their_pages():
    """Memory follows what the stream carries: the load loop populates the pages
    PAGE records write (in runs) and never a page that only gets a ZERO record."""
    from xbzrle import Guest

    w = StreamWriter()
    with Guest(ram="1M") as guest:
        guest.stop()
        block = guest.blocks["pc.ram"]
        view = memoryview(block)
        data = _core.data_map(view, False)
        written = set(range(10, 40)) | {100, 101, 200}
        records = b"".join(
            w.normal_page("pc.ram", p * PAGE, bytes([p % 251 + 1]) * PAGE) if p in written
            else w.zero_page("pc.ram", p * PAGE) for p in range(256))
        pos, _, _, counts = _core.load_pages(records, 0, [(b"pc.ram", view, data)], -1, True, 0)
        assert pos == len(records) and counts.normal == len(written)
        present = _core.data_map(view, False)
        assert {p for p in range(256) if present[p]} == written
        assert all(view[p * PAGE] == p % 251 + 1 for p in written)
        view.release()


def test_page_bytes_are_not_copied_into_the_parser_whatever_the_cut():
    """Reads end anywhere inside records: the parser keeps at most the cut record
    (a few KiB), never the read's page bytes, so its memory does not follow the
    read size."""
    import tracemalloc

    stream, ram = stream_and_ram()
    chunk = 32768 + 123  # never on a record boundary
    chunks = [bytearray(stream[i:i + chunk]) for i in range(0, len(stream), chunk)]
    dest = bytearray(NPAGES * PAGE)
    loader = PageLoader({"pc.ram": dest}, xbzrle=True)
    parser = StreamParser()
    parser.page_sink = loader.sink
    tracemalloc.start()
    try:
        for index, buf in enumerate(chunks):
            if index == 2:  # the first read (header records) is parsed as usual: not counted
                tracemalloc.reset_peak()
            parser.feed(buf)
            for event in parser.events():
                assert not isinstance(event, ev.ZeroPage | ev.NormalPage | ev.XbzrlePage)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    parser.close()
    loader.release()
    assert dest == ram
    assert peak < 32 * 1024, peak


def rounds_stream(rounds: int, pages: int) -> tuple[bytes, bytes]:
    """``rounds`` PART sections of ``pages`` full pages each, as our source ends a round."""
    w = StreamWriter()
    ram = bytearray(pages * PAGE)
    out = [w.header(), w.section_start(0, "ram", 0, 4), w.ram_blocks([("pc.ram", len(ram))]),
           w.eos(), w.footer(0)]
    for r in range(rounds):
        out.append(w.section_end(0) if r == rounds - 1 else w.section_part(0))
        for p in range(pages):
            page = bytes([(r * 7 + p) % 251 + 1]) * PAGE
            ram[p * PAGE:(p + 1) * PAGE] = page
            out.append(w.normal_page("pc.ram", p * PAGE, page))
        out += [w.eos(), w.footer(0)]
    return b"".join(out + [w.eof()]), bytes(ram)


def feed_in_pieces(parser: StreamParser, loader: PageLoader, data: memoryview, events: list):
    """The extractor's loop: feed_some, pull the events, feed the rest."""
    while True:
        taken = parser.feed_some(data)
        for event in parser.events():
            if isinstance(event, ev.ZeroPage | ev.NormalPage | ev.XbzrlePage):
                loader.apply(event)
            events.append(event)
        if taken == len(data):
            return
        assert 0 < taken < len(data)
        data = data[taken:]


@pytest.mark.parametrize("chunk", [13, 4105, 65536, 1 << 20])
def test_feed_some_gives_the_events_and_ram_of_feed(chunk):
    stream, ram = rounds_stream(rounds=9, pages=40)
    fed, fed_events, fed_loader = load(stream, chunk, sink=True)
    dest = bytearray(len(ram))
    loader = PageLoader({"pc.ram": dest}, xbzrle=True)
    parser = StreamParser()
    parser.page_sink = loader.sink
    events: list = []
    for start in range(0, len(stream), chunk):
        feed_in_pieces(parser, loader, memoryview(stream)[start:start + chunk], events)
    parser.close()
    events += list(parser.events())
    loader.release()
    assert bytes(dest) == ram == bytes(fed[:len(ram)])
    assert loader.counts.normal == fed_loader.counts.normal == 9 * 40

    def others(evs):
        return [(type(e), e.stream_offset) for e in evs if not isinstance(e, ev.PagesLoaded)]

    assert others(events) == others(fed_events)


def test_feed_some_keeps_the_pages_after_a_round_out_of_the_parser():
    """With feed, the rest of a read after a round's EOS was copied into the
    parser's buffer; feed_some buffers a few hundred bytes of it."""
    import tracemalloc

    stream, ram = rounds_stream(rounds=24, pages=60)
    chunk = 1 << 20
    dest = bytearray(len(ram))
    loader = PageLoader({"pc.ram": dest}, xbzrle=True)
    peaks = {}
    for mode in ("feed", "feed_some"):
        parser = StreamParser()
        parser.page_sink = loader.sink
        tracemalloc.start()
        try:
            for index, start in enumerate(range(0, len(stream), chunk)):
                data = memoryview(stream)[start:start + chunk]
                if index == 2:  # the first read (header records) is parsed as usual
                    tracemalloc.reset_peak()
                if mode == "feed":
                    parser.feed(data)
                    list(parser.events())
                else:
                    feed_in_pieces(parser, loader, data, [])
            _, peaks[mode] = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        parser.close()
    loader.release()
    assert bytes(dest) == ram
    assert peaks["feed_some"] < 64 * 1024 < 512 * 1024 < peaks["feed"], peaks
