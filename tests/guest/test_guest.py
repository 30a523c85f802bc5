"""Guest RAM: sizes, named blocks, zero-copy views, digests, the vm command."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import xbzrle
from support import wait_until
from xbzrle import ParameterError
from xbzrle.guest import PAGE_SIZE, Guest, parse_size
from xbzrle.guest.dirtylog import choose_tracker

SRC = str(Path(xbzrle.__file__).resolve().parents[1])


@pytest.mark.parametrize(
    ("text", "size"),
    [("256M", 256 << 20), ("1g", 1 << 30), ("1.5G", 3 << 29), ("512KiB", 512 << 10),
     ("4096", 4096), (1 << 20, 1 << 20), ("16G", 16 << 30)],
)
def test_sizes_parse_with_binary_suffixes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "bad", ["1023K", "17G", 0, -4096, "1M1", "abc", "1.0000001M", (1 << 20) + 1, 2.5, True]
)
def test_bad_ram_sizes_raise_parameter_error(bad):
    with pytest.raises(ParameterError) as info:
        Guest(bad)
    assert isinstance(info.value, ValueError)


def test_default_guest_has_one_pc_ram_block():
    with Guest("1M") as guest:
        assert list(guest.blocks) == ["pc.ram"]
        block = guest.blocks["pc.ram"]
        assert (block.name, block.size, block.npages) == ("pc.ram", 1 << 20, 256)
        assert block.address % PAGE_SIZE == 0
        assert guest.ram_size == 1 << 20 and guest.running


def test_machine_none_is_one_block_named_ram():
    with Guest(ram="4M", machine="none") as guest:
        assert [(n, b.size) for n, b in guest.blocks.items()] == [("ram", 4 << 20)]
        assert guest.machine.announced == "none"
        assert guest.main_block == "ram"
        load = guest.start_workload("sparse")  # on the machine's RAM block by default
        assert load.block == "ram"


def test_machine_pc_adds_qemu_72_firmware_blocks_in_stream_order():
    with Guest(ram="4M", machine="pc") as guest:
        assert [(n, b.size) for n, b in guest.blocks.items()] == [
            ("pc.ram", 4 << 20), ("/rom@etc/acpi/tables", 128 << 10), ("pc.bios", 256 << 10),
            ("pc.rom", 128 << 10), ("/rom@etc/table-loader", 4096),
            ("/rom@etc/acpi/rsdp", 4096)]
        assert guest.machine.announced == "pc-i440fx-7.2"
        assert guest.main_block == "pc.ram"
    with Guest(ram="4M", machine="pc-i440fx-7.2") as guest:  # QEMU's full name works too
        assert guest.machine.name == "pc"


def test_machine_types_refuse_what_they_cannot_be():
    with pytest.raises(ParameterError, match="machine type 'q35' is not supported"):
        Guest(ram="4M", machine="q35")
    with pytest.raises(ParameterError, match="fixed RAM block list"):
        Guest(ram="4M", machine="none", blocks={"a": "4M"})
    with Guest(ram="4M") as guest:
        assert guest.machine.announced == "xbzrle-vm" and guest.main_block == "pc.ram"


def test_blocks_are_named_ordered_and_writable_in_place():
    layout = {"pc.ram": "2M", "vga.vram": "1M", "pc.bios": 1 << 20}
    with Guest(blocks=layout) as guest:
        assert list(guest.blocks) == list(layout)
        vram = guest.blocks["vga.vram"]
        with memoryview(vram) as view:
            assert not view.readonly and len(view) == 1 << 20
            view[4096:4100] = b"abcd"
        assert bytes(vram.page(1)[:4]) == b"abcd"
        with pytest.raises(ParameterError, match="block name"):
            Guest(blocks={"": "1M"})
        with pytest.raises(ParameterError, match="at least one"):
            Guest(blocks={})


def test_numpy_sees_the_same_memory():
    np = pytest.importorskip("numpy")
    with Guest("1M") as guest:
        array = np.frombuffer(guest.blocks["pc.ram"], dtype=np.uint8)
        array[10] = 42
        assert guest.blocks["pc.ram"].page(0)[10] == 42
        del array


def test_digest_tells_equal_ram_from_different_ram():
    with Guest(blocks={"a": "1M", "b": "1M"}) as guest:
        digests = guest.digest()
        assert digests["a"] == digests["b"] and len(digests["a"]) == 64
        guest.blocks["b"].page(255)[-1] = 1
        assert guest.digest()["a"] != guest.digest()["b"]


def test_digest_and_scan_tracker_hash_pages_alike():
    """One page hash serves the RAM digest and the scan tracker: the digest's
    pairs are (page index, guest_page_hash(page)) for every non-zero page."""
    import random

    from xbzrle._backend import load_core

    core = load_core()
    rng = random.Random(3)
    # Pages are hashed four at a time (the rest one by one): a count that is
    # not a multiple of four, random pages and nearly empty ones mixed.
    written = sorted(set(rng.sample(range(256), 23)) | {255})
    with Guest(ram="1M") as guest:
        ram = guest.blocks["pc.ram"]
        for index in written:
            if index % 3:
                ram.page(index)[:] = rng.randbytes(4096)
            else:
                ram.page(index)[index] = 1 + index % 200
        pairs = core.page_hashes(ram)
        expected = b"".join(
            index.to_bytes(8, "little")
            + core.guest_page_hash(bytes(ram.page(index))).to_bytes(8, "little")
            for index in written)
        assert pairs == expected
        table = bytearray(8 * 256)
        core.table_fill(ram, table)
        assert core.table_pairs(table) == expected


def test_close_releases_ram_even_with_views_alive():
    guest = Guest("1M")
    block = guest.blocks["pc.ram"]
    view = memoryview(block)
    guest.close()
    assert block.closed
    view[0] = 1  # still mapped until the last view goes
    view.release()
    with pytest.raises(ValueError):
        memoryview(block)
    with pytest.raises(ValueError):
        guest.dirty_log.sync()


def test_auto_tracker_prefers_uffd_and_falls_back_to_bitmap():
    assert choose_tracker("auto", lambda: None)[0] == "uffd"
    assert choose_tracker("auto", lambda: "no uffd")[0] == "bitmap"
    assert choose_tracker("scan", lambda: None)[0] == "scan"
    with pytest.raises(ParameterError, match="unknown dirty tracker"):
        choose_tracker("soft-dirty", lambda: None)


def test_the_chosen_tracker_is_logged(caplog):
    with caplog.at_level(logging.INFO, logger="xbzrle.guest"):
        with Guest("1M") as guest:
            chosen = guest.dirty_log.tracker
    assert chosen in ("uffd", "bitmap")
    assert f"dirty log: {chosen} tracker" in caplog.text


def run_cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen(
        [sys.executable, "-m", "xbzrle", *args], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kwargs,
    )


def test_vm_command_prints_dirty_rates_for_n_seconds():
    proc = run_cli("vm", "--ram", "64M", "--workload", "sparse", "--rate", "5000",
                   "--seconds", "1.5")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("guest: 64 MiB, workload sparse")
    rates = [line for line in lines[1:] if "dirty" in line and "MiB/s" in line]
    assert len(rates) >= 1


def test_vm_command_exits_zero_on_ctrl_c():
    proc = run_cli("vm", "--ram", "32M", "--workload", "loadgen")
    assert proc.stdout.readline().startswith("guest:")
    assert "pages/s" in proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_vm_command_rejects_bad_sizes():
    proc = run_cli("vm", "--ram", "12Q", "--seconds", "1")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "12Q" in err  # a bad value: errors.exit_code


def test_vm_command_rejects_an_unknown_machine_in_one_line():
    for extra in ((), ("--qmp", "tcp:127.0.0.1:0")):  # the dirty-rate printer and a VM
        proc = run_cli("vm", "--machine", "q35", "--ram", "32M", "--seconds", "1", *extra)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 2  # a bad value, as every ParameterError
        assert err == ("xbzrle vm: --machine: machine type 'q35' is not supported: "
                       "expected one of xbzrle-vm, none, pc (see 'xbzrle vm --help')\n")


def test_pages_written_grows_exactly_while_the_guest_runs():
    with Guest(ram="4M") as guest:
        guest.start_workload("sparse")
        wait_until(lambda: guest.pages_written > 0)
        guest.stop()
        stopped_at = guest.pages_written
        assert stopped_at > 0
        time.sleep(0.05)  # a stopped guest must not count writes: give a wrong one the chance
        assert guest.pages_written == stopped_at
        guest.cont()
        wait_until(lambda: guest.pages_written > stopped_at)


def test_page_hash_is_the_same_on_the_simd_and_the_portable_path():
    """Both ends of a migration must hash alike whatever their CPUs: the AVX2
    lanes compute exactly the portable code's value."""
    import random

    from xbzrle._backend import load_core

    core = load_core()
    rng = random.Random(7)
    pages = [rng.randbytes(4096) for _ in range(200)]
    pages += [bytes(4096), b"\xff" * 4096, bytes(4095) + b"\x01"]
    for page in pages:
        assert core.guest_page_hash(page) == core.page_hash_portable(page)


def test_page_hash_of_a_zero_page_is_0_and_every_one_byte_change_shows():
    """The digest table keeps 0 for a zero page, and the save and load loops
    update an entry from the words a delta touches: the hash is a sum of
    per-word terms minus a zero page's, in which a change of any single byte
    always changes the hash (pagehash.h), here at every offset of a page."""
    import random

    from xbzrle._backend import load_core

    core = load_core()
    assert core.guest_page_hash(bytes(4096)) == 0 == core.page_hash_portable(bytes(4096))
    rng = random.Random(5)
    page = bytearray(rng.randbytes(4096))
    original = core.guest_page_hash(bytes(page))
    for offset in range(4096):
        changed = bytearray(page)
        changed[offset] ^= rng.randrange(1, 256)
        assert core.guest_page_hash(bytes(changed)) != original, offset


def test_page_hash_sees_every_single_word_change_and_swapped_stripes():
    """What the digest and the scan tracker rely on: a page changed in one
    word, or with two 64-byte stripes exchanged, hashes differently."""
    import random

    from xbzrle._backend import load_core

    core = load_core()
    rng = random.Random(11)
    page = bytearray(rng.randbytes(4096))
    original = core.guest_page_hash(bytes(page))
    seen = {original}
    for word in range(0, 4096, 8):
        changed = bytearray(page)
        changed[word + rng.randrange(8)] ^= 1 << rng.randrange(8)
        seen.add(core.guest_page_hash(bytes(changed)))
    assert len(seen) == 513
    swapped = bytearray(page)
    swapped[0:64], swapped[64:128] = page[64:128], page[0:64]
    assert core.guest_page_hash(bytes(swapped)) != original
