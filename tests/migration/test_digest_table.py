"""The incremental RAM digest: the digest tables the save and load loops keep.

A table holds, per page, the hash of what the destination holds (0 for a
zero page); its digest must equal, by construction, the digest of a full
read of that RAM, so a table on one side can be checked against a full read
on the other.  The source's table knows only what was sent: the full read
(``x-ram-digest-full``) is what catches a dirty page the tracking lost, and
the table is what catches a page garbled on its way."""

from __future__ import annotations

import os
import random

import pytest

from support import rewrite_between_rounds, wait_until
from xbzrle import Guest
from xbzrle._backend import load_core
from xbzrle.guest.digest import digest_table, ram_digest, table_digest
from xbzrle.migration.manager import MigrationManager
from xbzrle.migration.status import MigrationStatus
from xbzrle.stream import StreamParser
from xbzrle.stream import records as ev
from xbzrle.stream.load import PageLoader

_core = load_core()
PAGE = 4096
NAME = b"pc.ram"
S = MigrationStatus


def all_dirty(npages: int) -> bytearray:
    return bytearray(b"\xff" * (((npages + 63) // 64) * 8))


def full_table(ram) -> bytearray:
    """The table a full read of ``ram`` gives (what the loops' tables must equal)."""
    table = digest_table(len(ram))
    _core.table_fill(ram, table)
    return table


def save_round(ram, mode, cache, table, cont, backoff=None, bitmap=None):
    npages = len(ram) // PAGE
    bitmap = all_dirty(npages) if bitmap is None else bitmap
    chunks, page, buf = [], 0, bytearray(1 << 16)
    while page < npages:
        pos, page, cont, _ = _core.save_pages(buf, 0, ram, bitmap, page, NAME, 0, mode, cache,
                                              cont, None, backoff, table)
        chunks.append(bytes(buf[:pos]))
    return chunks, cont


def load_round(chunks, dest, table, last):
    for chunk in chunks:
        pos, last, status, _ = _core.load_pages(chunk, 0, [(NAME, dest, None, table)], last,
                                                True, 0)
        assert pos == len(chunk) and status == 0
    return last


def test_the_digest_of_a_table_is_the_digest_of_a_full_read():
    rng = random.Random(3)
    ram = bytearray(64 * PAGE)
    for p in range(0, 64, 3):
        ram[p * PAGE:(p + 1) * PAGE] = rng.randbytes(PAGE)
    ram[5 * PAGE + 4095] = 1  # data only in a page's last byte
    table = full_table(ram)
    assert table_digest(len(ram), table) == ram_digest(ram)
    entries = memoryview(table).cast("Q")
    assert entries[1] == 0 and entries[0] == _core.page_digest_hash(ram[:PAGE]) != 0
    assert _core.page_digest_hash(bytes(PAGE)) == 0  # zero pages: the marker
    # Pairs in page order, first_index numbering the first page, as page_hashes.
    assert _core.table_pairs(table, 7) == _core.page_hashes(ram, 7)


def test_every_kind_of_record_leaves_both_tables_equal_to_a_full_read():
    """Plain round, XBZRLE rounds (misses, deltas, unchanged, zero refresh,
    overflow, back-off), the last stage and QEMU's copy design: after each
    round the source's table, the destination's table and a full read of the
    destination agree."""
    npages = 96
    ram = bytearray(os.urandom(npages * PAGE))
    ram[:8 * PAGE] = bytes(8 * PAGE)
    dest = bytearray(npages * PAGE)
    src_table, dst_table = digest_table(len(ram)), digest_table(len(dest))
    cache = _core.PageCache(1 << 20)
    backoff = bytearray(npages)
    last, cont = -1, False

    def round_(mode, use_cache=True):
        nonlocal last, cont
        chunks, cont = save_round(ram, mode, cache if use_cache else None, src_table, cont,
                                  backoff if mode in (_core.SAVE_XBZRLE, _core.SAVE_LAST)
                                  else None)
        last = load_round(chunks, dest, dst_table, last)
        assert dest == ram
        assert bytes(src_table) == bytes(dst_table) == bytes(full_table(dest))

    round_(_core.SAVE_PLAIN, use_cache=False)
    round_(_core.SAVE_XBZRLE)  # all misses
    for p in range(8, npages, 2):
        ram[p * PAGE + 100] ^= 0x5A  # deltas; the others unchanged
    ram[20 * PAGE:21 * PAGE] = bytes(PAGE)  # a page that became zero
    ram[30 * PAGE:31 * PAGE] = os.urandom(PAGE)  # overflow
    ram[2 * PAGE] = 9  # a zero page that got data: a miss
    round_(_core.SAVE_XBZRLE)
    ram[30 * PAGE:31 * PAGE] = os.urandom(PAGE)  # backing off: sent whole
    ram[40 * PAGE + 7] ^= 1
    round_(_core.SAVE_XBZRLE)
    for p in range(8, npages, 5):
        ram[p * PAGE + 9] ^= 0x33
    ram[50 * PAGE:51 * PAGE] = os.urandom(PAGE)
    round_(_core.SAVE_LAST)  # deltas against the cache, which is left alone
    ram[60 * PAGE + 1] ^= 1
    ram[3 * PAGE:4 * PAGE] = bytes(PAGE)
    round_(_core.SAVE_QEMU_COPY)


def test_a_page_record_is_copied_and_hashed_in_one_read():
    """The load loop copies a PAGE record into RAM and hashes it in one pass:
    the entry is the page's hash, 0 for a record of zeros (a page that turned
    zero between the source's zero check and its copy), and the bytes land
    whole, on a destination page that held other data before.  (The hash's
    AVX2 or portable kernel is this process's: scripts/asan-test runs this
    file once per XBZRLE_SIMD path.)"""
    rng = random.Random(11)
    pages = [rng.randbytes(PAGE), bytes(PAGE), bytes(PAGE - 1) + b"\x01", rng.randbytes(PAGE)]
    stream = bytearray()
    for index, page in enumerate(pages):
        flags = 0x08 if index == 0 else 0x08 | 0x20  # PAGE, then PAGE | CONTINUE
        stream += (index * PAGE | flags).to_bytes(8, "big")
        if index == 0:
            stream += bytes([len(NAME)]) + NAME
        stream += page
    dest = bytearray(b"\xee" * (len(pages) * PAGE))
    table = digest_table(len(dest))
    load_round([bytes(stream)], dest, table, -1)
    assert dest == b"".join(pages)
    assert [int.from_bytes(table[8 * i:8 * i + 8], "little") for i in range(len(pages))] \
        == [_core.guest_page_hash(p) for p in pages]
    assert int.from_bytes(table[8:16], "little") == 0
    assert bytes(table) == bytes(full_table(dest))


def test_the_zero_copy_path_hashes_the_guest_page_it_references():
    npages = 40
    ram = bytearray(os.urandom(npages * PAGE))
    ram[PAGE:2 * PAGE] = bytes(PAGE)
    table = digest_table(len(ram))
    refs = bytearray(_core.SAVE_REF_SIZE * npages)
    out = bytearray(1 << 20)
    *_, nrefs = _core.save_pages(out, 0, ram, all_dirty(npages), 0, NAME, 0, _core.SAVE_PLAIN,
                                 None, False, refs, None, table)
    assert nrefs == npages - 1
    assert bytes(table) == bytes(full_table(ram))


def test_source_and_destination_tables_agree_while_native_writers_race_the_loop():
    """The guest writes its pages while they are encoded and copied: the table
    takes the hash of the bytes that really went out (the record, or the cache
    after the delta), so after every round it equals the destination's."""
    npages = 48
    with Guest(ram="1M", tracker="scan") as guest:
        for kind, offset in (("loadgen", 0), ("sparse", 16 * PAGE), ("dense", 32 * PAGE)):
            guest.start_workload(kind, offset=offset, size=15 * PAGE)
        with memoryview(guest.blocks["pc.ram"]) as view:
            ram = view[:npages * PAGE]
            cache = _core.PageCache(1 << 20)
            dest = bytearray(npages * PAGE)
            src_table, dst_table = digest_table(len(dest)), digest_table(len(dest))
            last, cont = -1, False
            try:
                for rnd in range(2000):
                    mode = _core.SAVE_PLAIN if rnd == 0 else _core.SAVE_XBZRLE
                    chunks, cont = save_round(ram, mode, cache if mode else None, src_table,
                                              cont)
                    last = load_round(chunks, dest, dst_table, last)
                    assert bytes(src_table) == bytes(dst_table), rnd
            finally:
                guest.stop()
            assert guest.pages_written > 2000
            chunks, cont = save_round(ram, _core.SAVE_LAST, cache, src_table, cont)
            load_round(chunks, dest, dst_table, last)
            assert dest == ram
            assert bytes(src_table) == bytes(dst_table) == bytes(full_table(dest))
            ram.release()


def test_the_loaders_record_by_record_path_keeps_the_table_too():
    """PageLoader.apply (the parser's path without the compiled loop) and the
    fast path both keep it; a RAM that held data before starts from its pages."""
    from xbzrle.stream import StreamWriter

    w = StreamWriter()
    old = os.urandom(PAGE)
    new = bytearray(old)
    new[100:104] = b"abcd"
    records = [w.zero_page("pc.ram", 3 * PAGE),  # clears data that was there
               w.normal_page("pc.ram", 4 * PAGE, old),
               w.normal_page("pc.ram", 5 * PAGE, bytes(PAGE)),  # a PAGE record of zeros
               w.zero_page("pc.ram", 6 * PAGE)[:-1] + b"\x07",  # a ZERO record filling 0x07
               w.xbzrle_page("pc.ram", 4 * PAGE, _core.encode(old, bytes(new)))]
    for fast in (False, True):
        with Guest(ram="1M") as guest:
            guest.stop()
            block = guest.blocks["pc.ram"]
            with memoryview(block) as view:
                view[9 * PAGE:10 * PAGE] = os.urandom(PAGE)  # data the stream never touches
                view[3 * PAGE:4 * PAGE] = os.urandom(PAGE)
            stream = (w.header() + w.section_start(0, "ram", 0, 4)
                      + w.ram_blocks([("pc.ram", block.size)]) + w.eos() + w.footer(0)
                      + w.section_end(0) + b"".join(records) + w.eos() + w.footer(0) + w.eof())
            loader = PageLoader(guest.blocks, xbzrle=True, anonymous=True, tables=True)
            parser = StreamParser()
            if fast:
                parser.page_sink = loader.sink
            parser.feed(stream)
            for event in parser.events():
                if isinstance(event, ev.ZeroPage | ev.NormalPage | ev.XbzrlePage):
                    loader.apply(event)
            assert loader.counts.scanned == 5 and loader.counts.xbzrle == 1
            with memoryview(block) as view:
                assert view[4 * PAGE:5 * PAGE] == new and view[6 * PAGE] == 7
            assert loader.digest("pc.ram") == block.digest()
            loader.forget("pc.ram")
            assert loader.digest("pc.ram") is None  # written otherwise: no table, a full read
            loader.release()


@pytest.mark.parametrize("dest_full", [False, True], ids=["dest-table", "dest-full-read"])
def test_table_mode_catches_a_page_garbled_on_its_way(tmp_path, dest_full):
    """A byte flipped inside a PAGE record of a file: stream: the destination's
    table (or its full read, with x-ram-digest-full there) hashes what it
    wrote, which is not what the source's table says."""
    marker = os.urandom(PAGE)
    stream = tmp_path / "stream"
    with Guest(ram="8M") as src:
        with memoryview(src.blocks["pc.ram"]) as view:
            view[77 * PAGE:78 * PAGE] = marker
        src.stop()
        m = MigrationManager(src)
        assert m.migrate(f"file:{stream}").wait(60) == S.COMPLETED
    data = bytearray(stream.read_bytes())
    at = data.find(marker)
    assert at > 0 and data.find(marker, at + 1) < 0
    intact = bytes(data)
    data[at + 1000] ^= 0x01
    for content, verdict in ((intact, S.COMPLETED), (bytes(data), S.FAILED)):
        stream.write_bytes(content)
        with Guest(ram="8M") as dst:
            dst.stop()
            dm = MigrationManager(dst)
            dm.set_capability("x-ram-digest-full", dest_full)
            inc = dm.incoming(f"file:{stream}", resume=False)
            assert inc.wait(60) == verdict, inc.error
            if verdict == S.FAILED:
                assert "digest mismatch" in inc.error
            else:  # the table's digest is the full read's
                assert inc.digests["destination"] == dst.digest() == inc.digests["source"]


@pytest.mark.parametrize("full", [True, False], ids=["full-read", "table"])
def test_full_mode_catches_a_write_the_dirty_tracking_missed(full):
    """The bitmap tracker sees only the built-in workloads' writes: a write
    through a plain view between two rounds is lost.  The source's full read
    (x-ram-digest-full) sees it and the destination refuses the guest; the
    table, which knows only what was sent, cannot (its documented limit)."""
    src, dst = Guest(ram="8M", tracker="bitmap"), Guest(ram="8M")
    try:
        dst.stop()  # no workload on the source: nothing else rewrites the page
        src_m, dst_m = MigrationManager(src), MigrationManager(dst)
        src_m.set_capability("x-ram-digest-full", full)
        src_m.set_parameters(max_bandwidth=0, downtime_limit=0)
        inc = dst_m.incoming("tcp:127.0.0.1:0", resume=False)
        lost = os.urandom(PAGE)

        def write_behind_the_trackers_back(count: int) -> None:
            if count == 1:  # after the first round sent every page
                with memoryview(src.blocks["pc.ram"]) as view:
                    view[-PAGE:] = lost

        src_m.add_pass_listener(write_behind_the_trackers_back)
        mig = src_m.migrate(f"tcp:127.0.0.1:{inc.port}", max_rounds=3)
        mig.wait(60)
        dst_m.wait(30)
        with memoryview(dst.blocks["pc.ram"]) as view:
            assert bytes(view[-PAGE:]) != lost  # the page never went out
        if full:
            assert mig.status == S.FAILED and inc.status == S.FAILED
            assert "digest mismatch" in inc.error
            wait_until(lambda: src.running)  # the source guest runs on
        else:
            assert mig.status == S.COMPLETED and inc.status == S.COMPLETED
            assert src.digest() != dst.digest()
    finally:
        src.close()
        dst.close()


def test_a_migration_with_xbzrle_rounds_gives_table_digests_equal_to_full_reads():
    """Both sides' digests come from their tables; each equals a full read of
    its own RAM once the migration is over (writer threads, XBZRLE rounds)."""
    src, dst = Guest(ram="16M"), Guest(ram="16M")
    try:
        dst.stop()
        src.start_workload("loadgen")
        src_m, dst_m = MigrationManager(src), MigrationManager(dst)
        for m in (src_m, dst_m):
            m.set_capability("xbzrle", True)
        src_m.set_parameters(max_bandwidth=0, downtime_limit=0, xbzrle_cache_size=8 << 20)
        rewrite_between_rounds(src_m, src)
        inc = dst_m.incoming("tcp:127.0.0.1:0", resume=False)
        mig = src_m.migrate(f"tcp:127.0.0.1:{inc.port}", max_rounds=4)
        assert mig.wait(60) == S.COMPLETED, mig.error
        assert dst_m.wait(30) == S.COMPLETED
        assert src_m.query()["xbzrle-cache"]["pages"] > 0
        assert inc.digests["source"] == src.digest() == dst.digest() \
            == inc.digests["destination"]
    finally:
        src.close()
        dst.close()
