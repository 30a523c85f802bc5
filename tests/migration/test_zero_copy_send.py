"""The zero-copy send: PAGE payloads written by writev straight from guest RAM.

The stream must be byte for byte the copy path's (QEMU reads it, the rate
limiter counts it), over files, pipes and sockets, and the save loop must
refuse it where the cache is filled from the bytes sent (XBZRLE rounds)."""

from __future__ import annotations

import fcntl
import os
import socket
import ssl
import threading

import pytest

from xbzrle import Guest
from xbzrle._backend import load_core
from xbzrle.migration.source import SourceConfig, SourceMigration
from xbzrle.migration.status import MigrationStatus
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


def _copy_path(ram, buf_size, mode=_core.SAVE_PLAIN):
    out, page, cont, bitmap = [], 0, False, _bitmap(len(ram) // PAGE)
    buf = bytearray(buf_size)
    while page < len(ram) // PAGE:
        pos, page, cont, _ = _core.save_pages(buf, 0, ram, bitmap, page, NAME, 0, mode, None,
                                              cont)
        out.append(bytes(buf[:pos]))
    return out


def _zero_copy_path(ram, buf_size, mode=_core.SAVE_PLAIN, splice=False):
    """Each buffer through write_records into a pipe; returns the chunks read back."""
    out, page, cont, bitmap = [], 0, False, _bitmap(len(ram) // PAGE)
    buf = bytearray(buf_size)
    refs = bytearray(_core.SAVE_REF_SIZE * (buf_size // PAGE + 1))
    while page < len(ram) // PAGE:
        pos, page, cont, counts, nrefs = _core.save_pages(buf, 0, ram, bitmap, page, NAME, 0,
                                                          mode, None, cont, refs)
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


@pytest.mark.parametrize("xbzrle", [False, True])
def test_a_paused_guests_stream_is_the_same_with_and_without_zero_copy(tmp_path, xbzrle):
    """Whole migrations of a stopped guest into file: (plain rounds, XBZRLE rounds
    and the last stage), once copying every page and once by writev."""
    with Guest(ram="8M") as guest:
        with memoryview(guest.blocks["pc.ram"]) as view:
            view[:] = _ram_with_every_kind(2048)
        guest.stop()
        copied = _migrate_to_file(guest, tmp_path / "copied", True, xbzrle)
        guest.stop()
        sent = _migrate_to_file(guest, tmp_path / "writev", False, xbzrle)
    assert sent == copied


def test_channels_offer_writev_only_for_bytes_they_pass_unchanged(tmp_path):
    """Plain sockets, files and pipes take page payloads from guest RAM; a TLS
    socket must encrypt them, so it offers no descriptor (the copy path)."""
    a, b = socket.socketpair()
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).wrap_socket(
        a.dup(), server_hostname="peer", do_handshake_on_connect=False)
    try:
        assert SocketChannel(a).writev_fd() == a.fileno()
        assert FileChannel(fd).writev_fd() == fd
        assert SocketChannel(tls).writev_fd() is None
    finally:
        tls.close()
        a.close()
        b.close()
        os.close(fd)
