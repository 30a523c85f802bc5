"""The destination process of ``xbzrle vm --incoming``: wait, receive, resume.

Kept apart from the CLI so the demo and tests can drive the same code path.
"""

from __future__ import annotations

import json
import resource
import time

from .guest import Guest
from .migration.manager import MigrationManager
from .migration.status import MigrationStatus


def _progress(guest: Guest) -> int:
    return sum(int(w.stats().get("pages_written", 0)) for w in guest.workloads)


def run_incoming(ram: int | str, workload: str | None, uri: str, xbzrle: bool,
                 report_json: bool = False) -> int:
    """Receive one migration; exit status 0 when it completed and the guest runs."""
    with Guest(ram=ram) as guest:
        guest.stop()
        if workload and workload != "idle":
            guest.start_workload(workload)  # waits, stopped, for the migrated state
        manager = MigrationManager(guest)
        manager.set_capability("xbzrle", xbzrle)
        mig = manager.incoming(uri)
        port = mig.port if mig.uri.scheme == "tcp" else 0
        print(f"LISTENING {port}", flush=True)
        status = mig.wait()
        report: dict[str, object] = {
            "status": str(status), "query": mig.query(),
            "peak-rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
        if status == MigrationStatus.COMPLETED:
            report["digest-verified"] = True
            before = _progress(guest)
            time.sleep(0.3)
            report["workload-resumed"] = _progress(guest) > before if workload else None
        else:
            report["digest-verified"] = False
            report["error"] = mig.error
        if report_json:
            print(json.dumps(report), flush=True)
        else:
            print(f"incoming migration {status}" + (f": {mig.error}" if mig.error else ""))
        return 0 if status == MigrationStatus.COMPLETED else 1
