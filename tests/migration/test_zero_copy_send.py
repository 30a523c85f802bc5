"""The zero-copy send: PAGE payloads written by writev straight from guest RAM.

The stream must be byte for byte the copy path's (QEMU reads it, the rate
limiter counts it), over files, pipes and sockets, and the save loop must
refuse it where the cache is filled from the bytes sent (XBZRLE rounds)."""

from __future__ import annotations

import fcntl
import os
import random
import socket
import ssl
import threading

import pytest

from xbzrle import Guest
from xbzrle._backend import load_core
from xbzrle.migration import source
from xbzrle.migration.manager import MigrationManager
from xbzrle.migration.source import SourceConfig, SourceMigration
from xbzrle.migration.status import MigrationStatus
from xbzrle.stream import parse_bytes
from xbzrle.stream import records as ev
from xbzrle.transport.channels import FileChannel, SocketChannel
from xbzrle.transport.uri import parse_uri

_core = load_core()
PAGE = 4096
NAME = b"pc.ram"


def _ram_with_every_kind(npages: int) -> bytearray:
    ram = bytearray(os.urandom(npages * PAGE))
    for p in range(0, npages, 3):  # every third page zero: ZERO records between PAGEs
        ram[p * PAGE:(p + 1) * PAGE] = bytes(PAGE)
    return ram


def _bitmap(npages: int) -> bytearray:
    return bytearray(b"\xff" * (((npages + 63) // 64) * 8))


def _copy_path(ram, buf_size, mode=_core.SAVE_PLAIN, bitmap=None, table=None):
    out, page, cont = [], 0, False
    bitmap = _bitmap(len(ram) // PAGE) if bitmap is None else bitmap
    buf = bytearray(buf_size)
    while page < len(ram) // PAGE:
        pos, page, cont, _ = _core.save_pages(buf, 0, ram, bitmap, page, NAME, 0, mode, None,
                                              cont, None, None, table)
        out.append(bytes(buf[:pos]))
    return out


def _zero_copy_path(ram, buf_size, mode=_core.SAVE_PLAIN, splice=False, bitmap=None,
                    table=None):
    """Each buffer through write_records into a pipe; returns the chunks read back."""
    out, page, cont = [], 0, False
    bitmap = _bitmap(len(ram) // PAGE) if bitmap is None else bitmap
    buf = bytearray(buf_size)
    refs = bytearray(_core.SAVE_REF_SIZE * (buf_size // PAGE + 1))
    while page < len(ram) // PAGE:
        pos, page, cont, counts, nrefs = _core.save_pages(buf, 0, ram, bitmap, page, NAME, 0,
                                                          mode, None, cont, refs, None, table)
        r, w = os.pipe()
        try:
            got = bytearray()
            reader = threading.Thread(target=_drain, args=(r, got))
            reader.start()
            sent = _core.write_records(w, buf, pos, refs, nrefs, ram, -1, splice)
            os.close(w)
            w = -1
            reader.join()
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
        assert sent == len(got) == counts.wire_bytes
        out.append(bytes(got))
    return out


def _drain(fd: int, into: bytearray) -> None:
    while chunk := os.read(fd, 1 << 16):
        into += chunk


@pytest.mark.parametrize("splice", [False, True], ids=["writev", "vmsplice"])
@pytest.mark.parametrize("mode", [_core.SAVE_PLAIN, _core.SAVE_LAST])
def test_write_records_sends_the_copy_paths_bytes_cut_in_the_same_buffers(mode, splice):
    """Same records, same buffer boundaries (so the same PART sections), through a
    pipe whose 64 KiB capacity forces partial writevs (or vmsplices)."""
    ram = _ram_with_every_kind(300)
    assert _zero_copy_path(ram, 1 << 16, mode, splice) == _copy_path(ram, 1 << 16, mode)


@pytest.mark.parametrize("mode", [_core.SAVE_PLAIN, _core.SAVE_LAST])
def test_zero_copy_rounds_with_a_table_send_and_hash_as_the_copy_path(mode):
    """With a digest table the zero-copy loop reads dirty pages four at a time,
    zero check and hash together: the records, the buffers and the table
    must be the one-page copy path's, for any spread of dirty pages (groups
    across bitmap words, a block ending with fewer than four left) and with
    zero pages anywhere in a group."""
    rng = random.Random(10)
    npages = 700
    ram = _ram_with_every_kind(npages)
    for p in rng.sample(range(npages), 60):  # zero pages at random places too
        ram[p * PAGE:(p + 1) * PAGE] = bytes(PAGE)
    dirty = bytearray(rng.randbytes(len(_bitmap(npages))))
    dirty[-1] |= 0x80  # the last page of the last word (past the block's end: never sent)
    tables = [bytearray(8 * npages), bytearray(8 * npages)]
    copied = _copy_path(ram, 1 << 16, mode, bytearray(dirty), tables[0])
    sent = _zero_copy_path(ram, 1 << 16, mode, False, bytearray(dirty), tables[1])
    assert sent == copied
    assert tables[1] == tables[0]
    expected = [_core.guest_page_hash(ram[p * PAGE:(p + 1) * PAGE])
                if dirty[p // 8] >> (p % 8) & 1 else 0 for p in range(npages)]
    assert list(memoryview(tables[0]).cast("Q")) == expected
    assert any(expected) and expected.count(0) > npages // 3  # sent pages, zero and not


def test_into_a_pipe_the_header_buffer_may_be_reused_before_the_reader_reads():
    """Into a pipe the pages are spliced, not copied, and nobody has read them when
    write_records returns: scribbling over the buffer of headers (the source
    reuses it for the next records at once) must not change what the reader gets."""
    ram = _ram_with_every_kind(12)
    buf = bytearray(1 << 16)
    refs = bytearray(_core.SAVE_REF_SIZE * 20)
    pos, _, _, _, nrefs = _core.save_pages(buf, 0, ram, _bitmap(12), 0, NAME, 0,
                                           _core.SAVE_PLAIN, None, False, refs)
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 18)  # room for it all: no reader yet
        expected = _copy_path(ram, 1 << 16)[0]
        assert _core.write_records(w, buf, pos, refs, nrefs, ram, -1, True) == len(expected)
        buf[:] = bytes([0xEE]) * len(buf)
        os.close(w)
        w = -1
        got = bytearray()
        _drain(r, got)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert bytes(got) == expected


def test_zero_copy_is_refused_where_the_cache_is_filled_from_the_record():
    ram = _ram_with_every_kind(4)
    cache = _core.PageCache(1 << 20)
    with pytest.raises(ValueError, match="only in plain rounds"):
        _core.save_pages(bytearray(1 << 16), 0, ram, _bitmap(4), 0, NAME, 0, _core.SAVE_XBZRLE,
                         cache, False, bytearray(1024))


def test_write_records_refuses_references_outside_ram():
    ram = bytearray(2 * PAGE)
    refs = bytearray(_core.SAVE_REF_SIZE)
    refs[8:16] = (2 * PAGE).to_bytes(8, "little")  # ram_offset past the end
    r, w = os.pipe()
    try:
        with pytest.raises(ValueError, match="out of range"):
            _core.write_records(w, bytearray(16), 16, refs, 1, ram)
    finally:
        os.close(r)
        os.close(w)


def test_write_records_reports_a_closed_reader():
    ram = _ram_with_every_kind(4)
    buf = bytearray(1 << 16)
    refs = bytearray(_core.SAVE_REF_SIZE * 20)
    pos, _, _, _, nrefs = _core.save_pages(buf, 0, ram, _bitmap(4), 0, NAME, 0, _core.SAVE_PLAIN,
                                           None, False, refs)
    r, w = os.pipe()
    os.close(r)
    try:
        with pytest.raises(BrokenPipeError):
            _core.write_records(w, buf, pos, refs, nrefs, ram)
    finally:
        os.close(w)


def _migrate_to_file(guest, path, copy_pages: bool, xbzrle: bool) -> bytes:
    config = SourceConfig(xbzrle=xbzrle, cache_size=1 << 20, max_bandwidth=0,
                          downtime_limit_ms=300, max_rounds=2, copy_pages=copy_pages)
    mig = SourceMigration(guest, parse_uri(f"file:{path}"), config)
    mig.start()
    mig.wait()
    assert mig.status == MigrationStatus.COMPLETED, mig.error
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("part_seconds", [0.0, float("inf")])
@pytest.mark.parametrize("xbzrle", [False, True])
def test_a_paused_guests_stream_is_the_same_with_and_without_zero_copy(tmp_path, monkeypatch,
                                                                       xbzrle, part_seconds):
    """Whole migrations of a stopped guest into file: (plain rounds, XBZRLE rounds
    and the last stage), once copying every page and once by writev.  Where
    a round's PART sections end depends on time (``PART_SECONDS``), so both
    runs take a fixed rule: a part per buffer, or a part per round."""
    monkeypatch.setattr(source, "PART_SECONDS", part_seconds)
    with Guest(ram="8M") as guest:
        with memoryview(guest.blocks["pc.ram"]) as view:
            view[:] = _ram_with_every_kind(2048)
        guest.stop()
        copied = _migrate_to_file(guest, tmp_path / "copied", True, xbzrle)
        guest.stop()
        sent = _migrate_to_file(guest, tmp_path / "writev", False, xbzrle)
    assert sent == copied


def _ram_parts(stream: bytes) -> tuple[int, int]:
    """(PART sections, END sections) of the RAM section in a stream."""
    events = parse_bytes(stream)
    ram_id = next(e.section_id for e in events
                  if isinstance(e, ev.SectionStart) and e.idstr == "ram")
    parts = sum(1 for e in events if isinstance(e, ev.SectionPart) and e.section_id == ram_id)
    ends = sum(1 for e in events if isinstance(e, ev.SectionEnd) and e.section_id == ram_id)
    return parts, ends


def test_a_rounds_part_spans_buffers_until_part_seconds(tmp_path, monkeypatch):
    """A round's PART section stays open across buffers, as QEMU's iteration
    does for up to 50 ms: with no time limit a round is one part, with none
    left every buffer ends its own; both streams load to the same RAM."""
    ram = os.urandom(2048 * PAGE)  # 8 MiB of PAGE records: more than eight 1 MiB buffers
    loaded = {}
    for part_seconds in (float("inf"), 0.0):
        monkeypatch.setattr(source, "PART_SECONDS", part_seconds)
        with Guest(ram="8M") as guest:
            with memoryview(guest.blocks["pc.ram"]) as view:
                view[:] = ram
            guest.stop()
            stream = _migrate_to_file(guest, tmp_path / f"parts-{part_seconds}", False, False)
        parts, ends = _ram_parts(stream)
        rounds = 1  # a paused guest: one round sends everything, the last stage nothing
        if part_seconds:
            assert (parts, ends) == (rounds, 1)
        else:
            assert parts >= 8 and ends == 1
        with Guest(ram="8M") as dest:
            dest.stop()
            inc = MigrationManager(dest).incoming(f"file:{tmp_path / f'parts-{part_seconds}'}",
                                                  resume=False)
            assert inc.wait(60) == MigrationStatus.COMPLETED, inc.error
            with memoryview(dest.blocks["pc.ram"]) as view:
                loaded[part_seconds] = bytes(view)
    assert loaded[0.0] == loaded[float("inf")] == bytes(ram)


def test_channels_offer_writev_only_for_bytes_they_pass_unchanged(tmp_path):
    """Plain sockets, files and pipes take page payloads from guest RAM; a TLS
    socket must encrypt them, so it offers no descriptor (the copy path)."""
    a, b = socket.socketpair()
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).wrap_socket(
        a.dup(), server_hostname="peer", do_handshake_on_connect=False)
    try:
        assert SocketChannel(a).raw_fd() == a.fileno()
        assert FileChannel(fd).raw_fd() == fd
        assert SocketChannel(tls).raw_fd() is None
    finally:
        tls.close()
        a.close()
        b.close()
        os.close(fd)
