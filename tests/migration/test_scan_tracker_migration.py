"""Migrating under the ``scan`` dirty tracker, which sees contents, not writes.

A page the source sends while it holds other bytes than at the sync, and
that is restored to those bytes before the next sync, looks untouched to a
tracker comparing contents with the last sync: the destination kept the
bytes sent.  Under ``scan`` the source syncs against what the destination
holds (the save loop's digest tables) and so sends the page again.

The race is built, not waited for: the test is the stream's reader (a FIFO),
changes the page after the sync (a pass listener, in the migration thread),
and restores it as soon as it has read the page's record, while the source
is still blocked mid-round on the bytes behind it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import threading

import pytest

from support import wait_until
from xbzrle import Guest
from xbzrle._backend import load_core
from xbzrle.guest.digest import digest_table
from xbzrle.migration.manager import MigrationManager
from xbzrle.migration.status import MigrationStatus as S

_core = load_core()
PAGE = 4096
RAM = "8M"
PAGE_SENT_TORN = 0  # the first page of the block: first in every round that sends it
FILLER = range(16, 16 + 768)  # 3 MiB of pages resent behind it in the same round
READ = 65536


def write_page(guest: Guest, page: int, data: bytes) -> None:
    with memoryview(guest.blocks["pc.ram"]) as view:
        view[page * PAGE:(page + 1) * PAGE] = data


def write_filler(guest: Guest) -> None:
    with memoryview(guest.blocks["pc.ram"]) as view:
        view[FILLER.start * PAGE:FILLER.stop * PAGE] = os.urandom(len(FILLER) * PAGE)


def read_stream(fd: int, on_chunk) -> bytes:
    """Everything the source writes into the FIFO, ``on_chunk(stream, new)`` after each read."""
    stream = bytearray()
    while True:
        ready, _, _ = select.select([fd], [], [], 60)
        assert ready, "the source wrote nothing for 60 s"
        try:
            chunk = os.read(fd, READ)
        except BlockingIOError:
            continue
        if not chunk:
            return bytes(stream)
        stream += chunk
        on_chunk(stream, len(chunk))


@pytest.mark.parametrize("xbzrle", [False, True], ids=["plain", "xbzrle"])
def test_a_page_changed_while_sent_and_restored_before_the_sync_is_sent_again(tmp_path, xbzrle):
    fifo, saved = tmp_path / "stream", tmp_path / "saved"
    os.mkfifo(fifo)
    at_sync, while_sent = os.urandom(PAGE), os.urandom(PAGE)
    with Guest(ram=RAM, tracker="scan") as src:
        # No workload: only the test writes this RAM.
        write_page(src, PAGE_SENT_TORN, os.urandom(PAGE))
        write_filler(src)
        manager = MigrationManager(src)
        manager.set_capability("xbzrle", xbzrle)
        manager.set_parameters(max_bandwidth=0, downtime_limit=0)  # rounds until nothing is dirty

        def on_status(status: S) -> None:
            if status == S.ACTIVE:  # after setup's sync: both are dirty at the first sync
                write_page(src, PAGE_SENT_TORN, at_sync)
                write_filler(src)

        def on_pass(count: int) -> None:
            if count == 1:  # after the sync that found the page dirty, before its send
                write_page(src, PAGE_SENT_TORN, while_sent)

        manager.add_status_listener(on_status)
        manager.add_pass_listener(on_pass)
        restored = []

        def restore_once_sent(stream: bytearray, new: int) -> None:
            # Its PAGE record (round 1 sends it whole: the first round does not
            # fill the cache) is in what was read: the source has written at
            # most a pipe's worth more, and 3 MiB of filler follow in the same
            # round, so the next sync is still to come.
            if not restored and stream.find(while_sent, len(stream) - new - PAGE) >= 0:
                write_page(src, PAGE_SENT_TORN, at_sync)
                restored.append(True)

        mig = manager.migrate(f"file:{fifo}", max_rounds=6)
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # never blocks on a failed source
        try:
            assert len(FILLER) * PAGE > 2 * fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) + READ + (1 << 20)
            saved.write_bytes(read_stream(fd, restore_once_sent))
        finally:
            os.close(fd)
        assert mig.wait(60) == S.COMPLETED, mig.error
        assert restored
        with memoryview(src.blocks["pc.ram"]) as view:
            source_ram = bytes(view)

    with Guest(ram=RAM) as dst:
        dst.stop()
        dst_manager = MigrationManager(dst)
        dst_manager.set_capability("xbzrle", xbzrle)
        inc = dst_manager.incoming(f"file:{saved}", resume=False)
        assert inc.wait(60) == S.COMPLETED, inc.error
        with memoryview(dst.blocks["pc.ram"]) as view:
            page = view[PAGE_SENT_TORN * PAGE:(PAGE_SENT_TORN + 1) * PAGE]
            assert page == at_sync, "the destination kept the bytes sent mid-change"
            assert view == source_ram


def release(fifo) -> None:
    """Let a command blocked in ``read go < fifo`` go on (it opens the FIFO soon, if not yet)."""
    def opened() -> int | None:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:  # ENXIO: no reader yet
            assert exc.errno == errno.ENXIO, exc
            return None
    fd = wait_until(opened, 60)
    os.write(fd, b"go\n")
    os.close(fd)


def test_a_page_sent_from_guest_ram_and_read_after_a_change_is_sent_again(tmp_path):
    """Into a pipe, a zero-copy round hangs the guest's page itself in the pipe
    (vmsplice): its reader copies what the page holds when it reads, later than
    the save loop hashed it.  The command here reads nothing until the page was
    changed after the sync that followed its send; the test restores it once
    the page's record came through.  Under ``scan`` the rounds copy pages, so
    what the destination holds is what the source hashed."""
    ctl, data = tmp_path / "go", tmp_path / "stream"
    os.mkfifo(ctl)
    os.mkfifo(data)
    at_sync, read_late = os.urandom(PAGE), os.urandom(PAGE)
    stream = bytearray()

    def reader() -> None:
        with open(data, "rb", buffering=0) as f:
            while chunk := f.read(READ):
                stream.extend(chunk)

    with Guest(ram=RAM, tracker="scan") as src:  # all zero but one page: a short round 0
        write_page(src, PAGE_SENT_TORN, os.urandom(PAGE))
        manager = MigrationManager(src)
        manager.set_parameters(max_bandwidth=0, downtime_limit=0)

        def on_status(status: S) -> None:
            if status == S.ACTIVE:  # dirty at the first sync: round 1 sends it
                write_page(src, PAGE_SENT_TORN, at_sync)

        def on_pass(count: int) -> None:
            if count == 2:  # round 1 sent the page, the sync found it clean
                write_page(src, PAGE_SENT_TORN, read_late)
                release(ctl)
                wait_until(lambda: stream.find(at_sync) >= 0 or stream.find(read_late) >= 0,
                           60, message="the page's record never came through")
                write_page(src, PAGE_SENT_TORN, at_sync)

        manager.add_status_listener(on_status)
        manager.add_pass_listener(on_pass)
        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        mig = manager.migrate(f"exec:read go < {ctl}; exec cat > {data}", max_rounds=6)
        assert mig.wait(60) == S.COMPLETED, mig.error
        thread.join(60)
        with memoryview(src.blocks["pc.ram"]) as view:
            source_ram = bytes(view)

    saved = tmp_path / "saved"
    saved.write_bytes(stream)
    with Guest(ram=RAM) as dst:
        dst.stop()
        inc = MigrationManager(dst).incoming(f"file:{saved}", resume=False)
        assert inc.wait(60) == S.COMPLETED, inc.error
        with memoryview(dst.blocks["pc.ram"]) as view:
            assert view == source_ram


def test_the_scan_tracker_reports_pages_that_differ_from_the_destinations_table():
    with Guest(ram="1M", tracker="scan") as guest:
        log = guest.dirty_log
        write_page(guest, 3, b"\x01" * PAGE)
        write_page(guest, 5, b"\x02" * PAGE)
        assert list(log.sync()["pc.ram"].pages()) == [3, 5]
        table = digest_table(guest.blocks["pc.ram"].size)  # a destination with zero pages...
        with memoryview(guest.blocks["pc.ram"]) as view, memoryview(table) as entries:
            _core.table_fill(view[:4 * PAGE], entries[:4 * 8])  # ...then pages 0-3 sent
        assert log.follow_destination({"pc.ram": table})
        # Nothing changed since the last sync, but page 5 is not what the destination holds:
        # reported at every sync until it is sent.
        assert list(log.sync()["pc.ram"].pages()) == [5]
        assert list(log.sync()["pc.ram"].pages()) == [5]
        with memoryview(guest.blocks["pc.ram"]) as view:
            _core.table_fill(view, table)  # page 5 sent
        assert list(log.sync()["pc.ram"].pages()) == []
        table[3 * 8:4 * 8] = bytes(8)  # the destination holds a zero page 3 (entry 0)
        assert list(log.sync()["pc.ram"].pages()) == [3]
        log.follow_destination(None)
        assert list(log.sync()["pc.ram"].pages()) == []  # back to "changed since the last sync"
        write_page(guest, 3, bytes(PAGE))
        assert list(log.sync()["pc.ram"].pages()) == [3]


def test_trackers_that_see_writes_need_no_table():
    with Guest(ram="1M", tracker="bitmap") as guest:
        assert not guest.dirty_log.follow_destination(
            {"pc.ram": digest_table(guest.blocks["pc.ram"].size)})
