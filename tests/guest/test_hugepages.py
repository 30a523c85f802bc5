"""Guest RAM takes huge pages only where the host keeps freed memory backed."""

from __future__ import annotations

from support import mapping_field
from xbzrle.guest import Guest
from xbzrle.guest.hugepages import (
    VIRTIO_ID_BALLOON,
    balloon_features,
    huge_pages_pay_off,
    use_huge_pages,
)

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


def test_guest_ram_follows_this_machines_rule():
    with Guest("8M") as guest:
        flags = mapping_field(guest.blocks["pc.ram"].address, "VmFlags").split()
    assert ("hg" in flags) is use_huge_pages()
    assert ("nh" in flags) is not use_huge_pages()
