"""Our source into a real QEMU 7.2 destination (Debian's qemu-system-x86_64, TCG).

The source is a live guest shaped as QEMU's ``-machine none`` (one block
``ram``) running the seed's load generator, migrated with XBZRLE on and a
bandwidth cap; a forced switch-over after a few rounds (``max_rounds``, no
timing involved) makes sure several XBZRLE rounds happen.  QEMU waits with
``-S`` and its RAM in a shared ``memory-backend-file``: once QEMU says
``completed`` its RAM file must equal the source's final RAM (the source
guest is paused then) byte for byte.  ``x-ram-digest`` is off, as it must be
for a QEMU peer: QEMU has no such section.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xbzrle.guest import Guest
from xbzrle.migration import MigrationManager
from xbzrle.qemu import analyze_file

sys.path.insert(0, str(Path(__file__).parent / "interop"))
from qemu_vm import QMP, QemuDestination, qemu_missing_reason  # noqa: E402

_missing = qemu_missing_reason()
pytestmark = pytest.mark.skipif(_missing is not None, reason=_missing or "")

SRC = Path(__file__).resolve().parent.parent.parent / "src"
RAM = (32 << 20) + (8 << 10)  # off QEMU 7.2's 256 KiB grid, as the other interop tests
ROUNDS = 4


@pytest.fixture
def destination(tmp_path):
    made: list[QemuDestination] = []

    def start(**options) -> QemuDestination:
        dest = QemuDestination(tmp_path, RAM, **options)
        made.append(dest)
        return dest

    yield start
    for dest in made:
        dest.stop()


def migrate(guest: Guest, uri: str, digest: bool = False,
            manager: MigrationManager | None = None) -> MigrationManager:
    """Migrate ``guest`` the way a user migrates into QEMU: xbzrle on, x-ram-digest off.

    ``manager`` is one prepared already (TLS objects and parameters), or a new one.
    """
    manager = manager if manager is not None else MigrationManager(guest)
    manager.set_capability("xbzrle", True)
    manager.set_capability("x-ram-digest", digest)
    manager.set_parameters(max_bandwidth=32 << 20, downtime_limit=1,
                           xbzrle_cache_size=8 << 20)
    manager.migrate(uri, max_rounds=ROUNDS).wait(120)
    return manager


def ram_of(guest: Guest, block: str) -> bytes:
    with memoryview(guest.blocks[block]) as view:
        return bytes(view)


def assert_several_xbzrle_rounds(info: dict, records: int | None = None) -> None:
    """Completed after >= 3 dirty syncs with XBZRLE at work.

    ``xbzrle-cache.pages`` counts cache hits, as QEMU's does (the pages
    encoded, also those found unchanged and sent as nothing, and overflows
    sent whole); ``records``, when known, is what really went out as XBZRLE
    records, and must be > 0 too.
    """
    assert info["status"] == "completed", info.get("error-desc")
    assert info["xbzrle-cache"]["pages"] > 0, info
    assert info["ram"]["dirty-sync-count"] >= 3, info
    if records is not None:
        assert 0 < records <= info["xbzrle-cache"]["pages"], info


def xbzrle_records(manager: MigrationManager) -> int:
    assert manager.current is not None
    return manager.current.stats.totals.xbzrle


def running_and_progressing(guest: Guest) -> bool:
    before = guest.pages_written
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if guest.running and guest.pages_written > before:
            return True
        time.sleep(0.01)
    return False


def test_machine_none_has_the_block_qemu_has(destination):
    dest = destination()
    with Guest(ram=RAM, machine="none") as guest:
        ours = [(name, block.size) for name, block in guest.blocks.items()]
    assert ours == dest.ram_blocks() == [("ram", RAM)]


def test_machine_pc_has_the_blocks_qemu_pc_nodefaults_has(destination):
    dest = destination(machine="pc")
    with Guest(ram=RAM, machine="pc") as guest:
        ours = {name: block.size for name, block in guest.blocks.items()}
        assert guest.machine.announced == "pc-i440fx-7.2"
    assert ours == dict(dest.ram_blocks())
    assert len(ours) == 6 and ours["pc.ram"] == RAM


def test_live_xbzrle_migration_over_tcp_lands_byte_for_byte(destination):
    dest = destination()
    with Guest(ram=RAM, machine="none") as guest:
        guest.start_workload("loadgen")
        manager = migrate(guest, f"tcp:127.0.0.1:{dest.port}")
        info = manager.query()
        assert_several_xbzrle_rounds(info, xbzrle_records(manager))
        assert not guest.running  # paused after completion: its RAM is final
        qemu_info = dest.wait_completed()
        assert qemu_info["status"] == "completed", dest.errors()
        assert dest.ram_bytes() == ram_of(guest, "ram")
    assert dest.errors() == ""  # not even a warning (VMDESCRIPTION, footers, EOF)


def test_file_stream_loads_with_exec_cat(destination, tmp_path):
    stream = tmp_path / "stream.bin"
    with Guest(ram=RAM, machine="none") as guest:
        guest.start_workload("loadgen")
        manager = migrate(guest, f"file:{stream}")
        assert_several_xbzrle_rounds(manager.query(), xbzrle_records(manager))
        report = analyze_file(stream)
        assert report.error is None and report.complete
        assert report.machine == "none"
        assert report.totals()["xbzrle"].pages == xbzrle_records(manager)
        dest = destination(incoming=f"exec:cat {stream}")
        qemu_info = dest.wait_completed()
        assert qemu_info["status"] == "completed", dest.errors()
        assert dest.ram_bytes() == ram_of(guest, "ram")


def test_pc_machine_stream_lands_in_qemu_pc(destination):
    dest = destination(machine="pc")
    with Guest(ram=RAM, machine="pc") as guest:
        guest.start_workload("loadgen")
        manager = migrate(guest, f"tcp:127.0.0.1:{dest.port}")
        assert_several_xbzrle_rounds(manager.query(), xbzrle_records(manager))
        assert dest.wait_completed()["status"] == "completed", dest.errors()
        assert dest.ram_bytes() == ram_of(guest, "pc.ram")


def test_digest_left_on_fails_clearly_and_the_source_runs_on(destination):
    dest = destination()
    with Guest(ram=RAM, machine="none") as guest:
        guest.start_workload("loadgen")
        manager = migrate(guest, f"tcp:127.0.0.1:{dest.port}", digest=True)
        info = manager.query()
        assert info["status"] == "failed"
        assert "turn x-ram-digest off" in info["error-desc"]
        assert running_and_progressing(guest)
    dest.proc.wait(30)
    assert "xbzrle-digest" in dest.errors()  # QEMU: unknown section


def test_default_machine_is_refused_by_qemu_for_its_name(destination):
    dest = destination()
    with Guest(ram=RAM, blocks={"ram": RAM}) as guest:  # xbzrle-vm, QEMU's block layout
        guest.start_workload("loadgen")
        manager = migrate(guest, f"tcp:127.0.0.1:{dest.port}")
        assert manager.query()["status"] == "failed"
        assert running_and_progressing(guest)
    dest.proc.wait(30)
    assert "Machine type received is 'xbzrle-vm' and local is 'none'" in dest.errors()


def test_xbzrle_vm_machine_none_into_qemu_through_qmp(destination, tmp_path):
    """The command line: ``xbzrle vm --machine none`` driven over QMP like a QEMU source."""
    dest = destination()
    qmp_path = tmp_path / "source.qmp"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "xbzrle", "vm", "--machine", "none", "--ram", f"{RAM // 1024}k",
         "--workload", "loadgen", "--qmp", f"unix:{qmp_path}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    source = None
    try:
        source = QMP(qmp_path)
        caps = {c["capability"]: c["state"] for c in source.execute("query-migrate-capabilities")}
        assert caps["x-ram-digest"] is True  # on by default between our own processes
        source.execute("migrate-set-capabilities", capabilities=[
            {"capability": "xbzrle", "state": True},
            {"capability": "x-ram-digest", "state": False}])
        source.execute("migrate-set-parameters", **{
            "max-bandwidth": 32 << 20, "downtime-limit": 1, "xbzrle-cache-size": 8 << 20})
        source.execute("migrate", uri=f"tcp:127.0.0.1:{dest.port}")
        converging = False
        deadline = time.monotonic() + 120
        while (info := source.execute("query-migrate"))["status"] not in (
                "completed", "failed", "cancelled"):
            if not converging and info.get("ram", {}).get("dirty-sync-count", 0) >= ROUNDS:
                # The load generator never stops: let the last round through.
                source.execute("migrate-set-parameters", **{"downtime-limit": 600_000})
                converging = True
            assert time.monotonic() < deadline, info
            time.sleep(0.05)
        assert_several_xbzrle_rounds(info)
        assert dest.wait_completed()["status"] == "completed", dest.errors()
        assert source.execute("query-status")["status"] == "postmigrate"
        dump = tmp_path / "source-ram"
        source.execute("pmemsave", val=0, size=RAM, filename=str(dump))
        assert dump.read_bytes() == dest.ram_bytes()
        source.execute("quit")
        assert proc.wait(30) == 0
    finally:
        if source is not None:
            source.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()

