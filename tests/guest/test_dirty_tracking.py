"""Every tracker must report every write: the property migration relies on.

The strongest check is a mirror: copy every reported page after each sync,
as a migration would; once the writers stop and a last sync is applied, the
mirror must equal the RAM byte for byte, however the writes raced the syncs.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support import mapping_field, wait_until
from xbzrle import _core
from xbzrle.guest import PAGE_SIZE, Guest

TRACKERS = ("uffd", "bitmap", "scan")
SEES_FOREIGN_WRITES = ("uffd", "scan")


def apply_sync(guest: Guest, mirrors: dict[str, bytearray]) -> int:
    """Copy each reported page into the mirror; returns how many."""
    copied = 0
    for name, pages in guest.dirty_log.sync().items():
        with memoryview(guest.blocks[name]) as ram:
            mirror = mirrors[name]
            for page in pages.pages():
                at = page * PAGE_SIZE
                mirror[at : at + PAGE_SIZE] = ram[at : at + PAGE_SIZE]
                copied += 1
    return copied


def assert_mirrors_equal(guest: Guest, mirrors: dict[str, bytearray]) -> None:
    for name, block in guest.blocks.items():
        with memoryview(block) as ram:
            if ram != mirrors[name]:
                differ = [
                    p for p in range(block.npages)
                    if ram[p * PAGE_SIZE : (p + 1) * PAGE_SIZE]
                    != mirrors[name][p * PAGE_SIZE : (p + 1) * PAGE_SIZE]
                ]
                pytest.fail(f"{name}: writes lost on pages {differ[:20]} ({len(differ)} pages)")


def fresh_mirrors(guest: Guest) -> dict[str, bytearray]:
    guest.dirty_log.mark_all()
    mirrors = {name: bytearray(block.size) for name, block in guest.blocks.items()}
    apply_sync(guest, mirrors)
    return mirrors


# Workloads for the race test.  loadgen is left out for scan: its bytes cycle
# mod 256, so a page can return to the contents it had at the previous sync
# while the mirror holds a later state, which a content hash cannot see.
RACE_WORKLOADS = {
    "uffd": ("loadgen", "sparse", "dense", "hotcold"),
    "bitmap": ("loadgen", "sparse", "dense", "hotcold"),
    "scan": ("sparse", "dense", "hotcold"),
}


@pytest.mark.parametrize("tracker", TRACKERS)
def test_c_workloads_racing_syncs_lose_no_write(tracker):
    kinds = RACE_WORKLOADS[tracker]
    # Big regions at a modest rate: most pages are written a few times only,
    # so a write missing from the log would usually be the page's last one.
    with Guest(blocks={"pc.ram": "32M", "vga.ram": "4M"}, tracker=tracker) as guest:
        guest.stop()
        mirrors = fresh_mirrors(guest)
        region = 8 << 20
        for i, kind in enumerate(kinds):
            guest.start_workload(kind, rate=50_000, offset=i * region, size=region - PAGE_SIZE)
        guest.start_workload("sparse", "vga.ram", rate=20_000)
        guest.cont()
        copied = 0
        for _ in range(40):
            time.sleep(0.005)
            copied += apply_sync(guest, mirrors)

        def every_workload_wrote() -> bool:  # a loaded machine may need more rounds
            nonlocal copied
            copied += apply_sync(guest, mirrors)
            return copied > 0 and all(w.ops > 0 for w in guest.workloads)

        wait_until(every_workload_wrote, interval=0.005)
        guest.stop()
        apply_sync(guest, mirrors)
        assert copied > 0
        assert all(w.ops > 0 for w in guest.workloads)
        assert_mirrors_equal(guest, mirrors)
        assert sum(b.count() for b in guest.dirty_log.sync().values()) == 0


def changed_pages(before: bytes, block) -> set[int]:
    with memoryview(block) as ram:
        pages = range(block.npages)
        return {p for p in pages if ram[p * PAGE_SIZE : (p + 1) * PAGE_SIZE] != page_of(before, p)}


def page_of(data: bytes, page: int) -> bytes:
    return data[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]


@pytest.mark.parametrize("tracker", TRACKERS)
@pytest.mark.parametrize("kind", ["loadgen", "sparse", "dense", "hotcold"])
def test_each_sync_reports_exactly_the_pages_a_workload_wrote(tracker, kind):
    rng = random.Random(kind)
    with Guest("1M", tracker=tracker) as guest:
        guest.stop()
        block = guest.blocks["pc.ram"]
        load = guest.start_workload(kind, offset=16 * PAGE_SIZE, size=200 * PAGE_SIZE)
        guest.dirty_log.sync()
        for _ in range(8):
            before = bytes(block)
            load.step(rng.randrange(1, 150))
            reported = set(guest.dirty_log.sync()["pc.ram"].pages())
            assert reported == changed_pages(before, block)
            assert 16 in reported  # the state page moves with every operation


@pytest.mark.parametrize("tracker", SEES_FOREIGN_WRITES)
def test_python_threads_racing_syncs_lose_no_write(tracker):
    with Guest("4M", tracker=tracker) as guest:
        mirrors = fresh_mirrors(guest)
        block = guest.blocks["pc.ram"]
        stop = threading.Event()

        def writer(seed: int) -> None:
            rng = random.Random(seed)
            with memoryview(block) as ram:
                while not stop.is_set():
                    page = rng.randrange(seed, block.npages, 4)  # disjoint page sets
                    at = page * PAGE_SIZE + rng.randrange(PAGE_SIZE - 8)
                    ram[at : at + 8] = rng.randbytes(8)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        try:
            for _ in range(30):
                time.sleep(0.003)
                apply_sync(guest, mirrors)
        finally:
            stop.set()
            for t in threads:
                t.join()
        apply_sync(guest, mirrors)
        assert_mirrors_equal(guest, mirrors)


@pytest.fixture(scope="module", params=SEES_FOREIGN_WRITES)
def python_written_guest(request):
    with Guest("2M", tracker=request.param) as guest:
        yield guest


@settings(max_examples=25, deadline=None)
@given(rounds=st.lists(st.sets(st.integers(0, 511), max_size=60), min_size=1, max_size=6))
def test_sync_reports_exactly_the_pages_written(python_written_guest, rounds):
    guest = python_written_guest
    guest.dirty_log.sync()
    block = guest.blocks["pc.ram"]
    with memoryview(block) as ram:
        for pages in rounds:
            for page in pages:
                at = page * PAGE_SIZE + (page * 7) % PAGE_SIZE
                ram[at] = (ram[at] + 1) % 256  # always a change, so scan sees it too
            reported = guest.dirty_log.sync()["pc.ram"]
            assert set(reported.pages()) == pages


def test_reading_ram_reports_nothing():
    with Guest("2M", tracker="uffd") as guest:
        guest.dirty_log.sync()
        assert guest.blocks["pc.ram"].digest()
        assert guest.dirty_log.sync()["pc.ram"].count() == 0


def test_bitmap_tracker_sees_workloads_and_marks_only():
    with Guest("2M", tracker="bitmap") as guest:
        guest.stop()
        guest.dirty_log.sync()
        with memoryview(guest.blocks["pc.ram"]) as ram:
            ram[5 * PAGE_SIZE] = 1
        assert guest.dirty_log.sync()["pc.ram"].count() == 0  # a foreign write: unseen
        guest.dirty_log.mark("pc.ram", 5)
        assert list(guest.dirty_log.sync()["pc.ram"].pages()) == [5]
        load = guest.start_workload("loadgen", size=8 * PAGE_SIZE)
        guest.dirty_log.sync()
        load.step(3)
        assert list(guest.dirty_log.sync()["pc.ram"].pages()) == [0, 1, 2, 3]


def test_mark_all_reports_every_page_once():
    with Guest(blocks={"a": "1M", "b": "2M"}) as guest:
        guest.dirty_log.mark_all()
        first = guest.dirty_log.sync()
        assert {n: b.count() for n, b in first.items()} == {"a": 256, "b": 512}
        assert sum(b.count() for b in guest.dirty_log.sync().values()) == 0


def test_uffd_sync_resumes_a_truncated_scan():
    """A full output vector ends the kernel walk early: the rest must follow."""
    ram = _core.GuestRam(1 << 20)
    tracker = _core.UffdTracker(ram, vec_len=1)
    try:
        written = set(range(0, 256, 2)) | {255}
        with memoryview(ram) as view:
            for page in written:
                view[page * PAGE_SIZE] = 1
        assert set(tracker.sync().pages()) == written
        assert tracker.sync().count() == 0
    finally:
        tracker.close()
        ram.close()


def test_untouched_pages_read_zero_and_cost_no_memory():
    with Guest("256M", tracker="scan") as guest:
        block = guest.blocks["pc.ram"]
        guest.dirty_log.sync()  # the scan reads every page
        with memoryview(block) as ram:
            for page in range(0, block.npages, 997):
                assert ram[page * PAGE_SIZE : (page + 1) * PAGE_SIZE] == bytes(PAGE_SIZE)
            ram[0:PAGE_SIZE * 10] = b"\x01" * (PAGE_SIZE * 10)
        # RAM may sit on transparent huge pages (as QEMU's does): ten written
        # pages cost at most the one 2 MiB page they fall in, never the 256 MiB.
        assert resident_kib(block.address) <= 2048 + 64


def resident_kib(address: int) -> int:
    """Rss of the mapping starting at ``address``, in KiB."""
    return int(mapping_field(address, "Rss").split()[0])


def test_uffd_sees_writes_made_by_the_kernel():
    with Guest("1M", tracker="uffd") as guest:
        guest.dirty_log.sync()
        with open("/dev/urandom", "rb") as source, memoryview(guest.blocks["pc.ram"]) as ram:
            source.readinto(ram[2 * PAGE_SIZE : 5 * PAGE_SIZE])
        assert list(guest.dirty_log.sync()["pc.ram"].pages()) == [2, 3, 4]


def huge_pages_kib(address: int) -> int:
    """AnonHugePages of the mapping starting at ``address``, in KiB."""
    return int(mapping_field(address, "AnonHugePages").split()[0])


def huge_pages_possible() -> bool:
    """Whether the kernel gives transparent huge pages to a mapping that asks."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as setting:
            return "[never]" not in setting.read()
    except OSError:
        return False


def test_uffd_first_sync_reports_the_pages_written_before_it():
    """The kernel tracker arms at the first sync; what was written before is not lost."""
    with Guest("64M", tracker="uffd") as guest:
        block = guest.blocks["pc.ram"]
        before = {0, 1, 9000}
        with memoryview(block) as ram:
            for page in before:
                ram[page * PAGE_SIZE] = 0xA5
            untouched = ram[20 << 20 : 30 << 20] == bytes(10 << 20)  # read, not written
        assert untouched
        first = set(guest.dirty_log.sync()["pc.ram"].pages())
        assert before <= first
        # Whole huge pages at most (512 pages each), and nothing that was only read.
        assert len(first) <= 2 * 512
        assert not first & set(range((20 << 20) // PAGE_SIZE, (30 << 20) // PAGE_SIZE))
        with memoryview(block) as ram:
            ram[5000 * PAGE_SIZE + 7] = 1
        assert list(guest.dirty_log.sync()["pc.ram"].pages()) == [5000]


def test_uffd_on_huge_pages_stays_page_granular_and_loses_no_write():
    """RAM filled before tracking sits on 2 MiB pages; the log still names 4 KiB pages."""
    with Guest("16M", tracker="uffd") as guest:
        block = guest.blocks["pc.ram"]
        block.advise_huge_pages()  # whatever this host's policy
        with memoryview(block) as ram:
            ram[:] = random.Random(7).randbytes(block.size)
        if huge_pages_possible():
            assert huge_pages_kib(block.address) > 0
        guest.stop()
        mirrors = fresh_mirrors(guest)  # the first sync: arms over the huge pages
        written = {3, 700, 2049, 4095}
        with memoryview(block) as ram:
            for page in written:
                ram[page * PAGE_SIZE + 100] ^= 0xFF
        assert set(guest.dirty_log.sync()["pc.ram"].pages()) == written
        with memoryview(block) as ram:
            for page in written:
                ram[page * PAGE_SIZE + 100] ^= 0xFF
        apply_sync(guest, mirrors)
        guest.start_workload("hotcold", rate=50_000)
        guest.cont()
        wait_until(lambda: apply_sync(guest, mirrors) >= 0 and guest.workloads[0].ops > 1000,
                   interval=0.005)
        guest.stop()
        apply_sync(guest, mirrors)
        assert_mirrors_equal(guest, mirrors)


def test_uffd_arming_sync_races_a_writer_without_losing_a_write():
    """A workload already writing when the tracker arms: the mirror still ends equal."""
    with Guest("32M", tracker="uffd") as guest:
        guest.start_workload("dense", rate=100_000)
        wait_until(lambda: guest.workloads[0].ops > 500, interval=0.002)
        mirrors = {name: bytearray(b.size) for name, b in guest.blocks.items()}  # RAM at creation
        assert apply_sync(guest, mirrors) > 0  # the arming sync: every page written so far
        wait_until(lambda: apply_sync(guest, mirrors) >= 0 and guest.workloads[0].ops > 5000,
                   interval=0.002)
        guest.stop()
        apply_sync(guest, mirrors)
        assert_mirrors_equal(guest, mirrors)
