"""``xbzrle vm --incoming ... --exit-after-migration --report-json``: the
handshake ``xbzrle demo`` relies on (a LISTENING line, then one JSON line)."""

from __future__ import annotations

import json

import pytest

from monitor_support import VmProcess
from support import rewrite_between_rounds
from xbzrle import Guest
from xbzrle.migration.manager import MigrationManager
from xbzrle.migration.status import MigrationStatus


@pytest.mark.parametrize("dest_xbzrle", [True, False], ids=["xbzrle", "xbzrle-off"])
def test_destination_reports_one_migration_and_exits(tmp_path, dest_xbzrle):
    args = ["--ram", "8M", "--workload", "loadgen", "--incoming", "tcp:127.0.0.1:0",
            "--exit-after-migration", "--report-json"] + (["--xbzrle"] if dest_xbzrle else [])
    dst = VmProcess(tmp_path, "dst", *args)
    try:
        line = dst.proc.stdout.readline().decode()
        assert line.startswith("LISTENING ")
        port = int(line.split()[1])
        with Guest(ram="8M") as guest:
            guest.start_workload("loadgen")
            manager = MigrationManager(guest)
            rewrite_between_rounds(manager, guest)  # XBZRLE pages by design, not luck
            manager.set_capability("xbzrle", True)
            manager.set_capability("x-ram-digest-full", True)  # catches lost dirty pages
            manager.set_parameters(max_bandwidth=16 << 20, xbzrle_cache_size=4 << 20,
                                   downtime_limit=0)  # rounds enough for xbzrle pages
            status = manager.migrate(f"tcp:127.0.0.1:{port}", max_rounds=4).wait(60)
        out, _ = dst.proc.communicate(timeout=30)
        report = json.loads(out.decode().strip().splitlines()[-1])
        if dest_xbzrle:
            assert status == MigrationStatus.COMPLETED
            assert dst.proc.returncode == 0
            assert report["status"] == "completed" and report["digest-verified"] is True
            digests = report["digests"]  # what the source sent, what the destination holds
            assert set(digests["source"]) == {"pc.ram"}
            assert digests["source"] == digests["destination"]
            assert all(bytes.fromhex(d) for d in digests["source"].values())
            assert report["workload-resumed"] is True
        else:
            assert status == MigrationStatus.FAILED
            assert dst.proc.returncode == 1
            assert report["status"] == "failed" and "xbzrle" in report["error"]
            assert report["digest-verified"] is False
    finally:
        dst.kill()


def test_a_destination_reading_a_file_names_it_and_reports(tmp_path):
    """No port to announce: the handshake line names what is read, then the report."""
    stream = tmp_path / "stream"
    with Guest(ram="8M") as guest:
        guest.start_workload("loadgen")
        assert MigrationManager(guest).migrate(f"file:{stream}").wait(60) == \
            MigrationStatus.COMPLETED
    dst = VmProcess(tmp_path, "dst", "--ram", "8M", "--incoming", f"file:{stream}",
                    "--exit-after-migration", "--report-json")
    try:
        out, _ = dst.proc.communicate(timeout=60)
        lines = out.decode().strip().splitlines()
        assert lines[0] == f"LISTENING file:{stream}"
        report = json.loads(lines[-1])
        assert report["status"] == "completed" and report["digest-verified"] is True
        assert dst.proc.returncode == 0
    finally:
        dst.kill()
