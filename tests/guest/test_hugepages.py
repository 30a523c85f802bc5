"""Guest RAM asks for huge pages; a destination fills them only where the
host keeps freed memory backed."""

from __future__ import annotations

import pytest

from support import mapping_field
from xbzrle.guest import Guest, hugepages
from xbzrle.guest.hugepages import (
    VIRTIO_ID_BALLOON,
    balloon_features,
    huge_pages_pay_off,
    huge_pages_pay_off_here,
)
from xbzrle.migration.manager import MigrationManager
from xbzrle.migration.status import MigrationStatus as S

PAGE = 4096
HUGE = 2 << 20

REPORTING = "0110010" + "0" * 57  # bit 5: free page reporting (bits 1, 2 and 5 set)
NO_REPORTING = "0110000" + "0" * 57


def test_free_page_reporting_keeps_ram_on_small_pages():
    assert huge_pages_pay_off([]) is True  # bare metal, or no balloon
    assert huge_pages_pay_off([NO_REPORTING]) is True
    assert huge_pages_pay_off([REPORTING]) is False
    assert huge_pages_pay_off([NO_REPORTING, REPORTING]) is False
    assert huge_pages_pay_off(["01"]) is True  # too short to say: not reporting


def device(root, name: str, device_id: int, features: str) -> None:
    entry = root / name
    entry.mkdir()
    (entry / "device").write_text(f"0x{device_id:04x}\n")
    (entry / "features").write_text(features + "\n")


def test_balloon_features_reads_only_balloons(tmp_path):
    device(tmp_path, "virtio0", VIRTIO_ID_BALLOON, REPORTING)
    device(tmp_path, "virtio1", 2, REPORTING)  # a block device with the same bit set
    (tmp_path / "virtio2").mkdir()  # unreadable entry: skipped
    assert balloon_features(tmp_path) == [REPORTING]
    assert balloon_features(tmp_path / "missing") == []


def vm_flags(block) -> list[str]:
    return mapping_field(block.address, "VmFlags").split()


def test_guest_ram_asks_for_huge_pages_and_can_take_them_back():
    with Guest("8M") as guest:
        block = guest.blocks["pc.ram"]
        assert "hg" in vm_flags(block) and "nh" not in vm_flags(block)
        block.advise_small_pages()
        assert "nh" in vm_flags(block) and "hg" not in vm_flags(block)
        block.close()
        with pytest.raises(ValueError, match="closed"):
            block.advise_small_pages()


@pytest.fixture
def sparse_stream(tmp_path):
    """A saved 16 MiB guest holding one written page per 2 MiB."""
    stream = tmp_path / "stream"
    with Guest("16M") as src:
        with memoryview(src.blocks["pc.ram"]) as view:
            for at in range(0, len(view), HUGE):
                view[at:at + PAGE] = b"\xa5" * PAGE
        src.stop()
        assert MigrationManager(src).migrate(f"file:{stream}").wait(60) == S.COMPLETED
    return stream


@pytest.mark.parametrize("cheap", [True, False], ids=["fresh-huge-pages-cheap", "dear"])
def test_a_destination_fills_small_pages_where_huge_ones_are_dear(sparse_stream, monkeypatch,
                                                                   cheap):
    """Where filling fresh huge pages is dear (a balloon reporting free pages),
    the incoming migration turns the destination's RAM to 4 KiB pages before
    the first page is written, and it stays so: its memory is the eight pages
    the stream carried.  Elsewhere it keeps asking for huge pages."""
    monkeypatch.setattr(hugepages, "_PAY_OFF_HERE", cheap)
    with Guest("16M") as dst:
        dst.stop()
        block = dst.blocks["pc.ram"]
        assert "hg" in vm_flags(block)
        incoming = MigrationManager(dst).incoming(f"file:{sparse_stream}", resume=False)
        assert incoming.wait(60) == S.COMPLETED, incoming.error
        assert incoming.digests["destination"] == incoming.digests["source"]
        flags = vm_flags(block)
        assert ("hg" in flags, "nh" in flags) == (cheap, not cheap)
        if not cheap:
            assert mapping_field(block.address, "AnonHugePages") == "0 kB"
            assert int(mapping_field(block.address, "Rss").split()[0]) == 8 * PAGE // 1024


def test_this_machines_answer_is_its_balloons():
    assert huge_pages_pay_off_here() is huge_pages_pay_off(balloon_features())
