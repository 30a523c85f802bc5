"""Two processes: this one is the source, a child ``xbzrle vm --incoming`` the
destination.  Every workload keeps writing during the migration; the
destination checks the digest of all RAM before it reports success and
resumes the workload."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from support import rewrite_between_rounds
from xbzrle import Guest
from xbzrle.migration.manager import MigrationManager
from xbzrle.migration.status import MigrationStatus

RAM = 32 << 20


@pytest.mark.parametrize("workload", ["loadgen", "sparse", "dense", "hotcold", "idle"])
def test_every_workload_migrates_between_two_processes(workload):
    dest = subprocess.Popen(
        [sys.executable, "-m", "xbzrle", "vm", "--ram", str(RAM), "--workload", workload,
         "--incoming", "tcp:127.0.0.1:0", "--xbzrle", "--exit-after-migration",
         "--report-json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(dest.stdout.readline().split()[1])
        with Guest(ram=RAM) as guest:
            guest.start_workload(workload)
            m = MigrationManager(guest)
            m.set_capability("xbzrle", True)
            # The source reads all its RAM for the digest: a dirty page the tracking lost
            # fails the check (the per-page table would only vouch for what was sent).
            m.set_capability("x-ram-digest-full", True)
            # A tiny downtime limit keeps it iterating; the round cap forces the switch-over,
            # so XBZRLE rounds happen whatever the machine's speed.
            m.set_parameters(max_bandwidth=0, downtime_limit=1, xbzrle_cache_size=8 << 20)
            if workload != "idle":  # writes between rounds by design, not by luck
                rewrite_between_rounds(m, guest)
            mig = m.migrate(f"tcp:127.0.0.1:{port}", max_rounds=6)
            assert mig.wait(120) == MigrationStatus.COMPLETED, mig.error
            info = m.query()
        out, _ = dest.communicate(timeout=60)
    finally:
        if dest.poll() is None:
            dest.kill()
            dest.wait()
    report = json.loads(out.splitlines()[-1])
    assert dest.returncode == 0
    assert report["status"] == "completed" and report["digest-verified"] is True
    assert info["ram"]["dirty-sync-count"] >= 2
    if workload != "idle":
        assert report["workload-resumed"] is True
        assert info["xbzrle-cache"]["pages"] > 0  # cache hits in the XBZRLE rounds
