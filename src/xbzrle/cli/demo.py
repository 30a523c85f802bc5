"""``xbzrle demo``: the seed's claim, shown live on this machine.

Two processes on loopback: this one is the source (a guest running a
workload), a child ``xbzrle vm --incoming`` is the destination.  The same
guest is migrated twice under a bandwidth cap, first without XBZRLE (it
cannot converge; it is cancelled at a time cap and the source guest is shown
still running), then with XBZRLE (it completes, the destination checks the
RAM digest and resumes the workload).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import TransportError
from ..guest import Guest
from ..migration.manager import MigrationManager
from ..monitor.info import format_info_migrate
from ..sizes import format_size
from .vm import guest_progresses


@dataclass
class DemoOptions:
    ram: int
    workload: str
    bandwidth: int
    cache_size: int
    time_cap: float
    downtime_limit: int
    as_json: bool


def _say(opts: DemoOptions, text: str = "") -> None:
    if not opts.as_json:
        print(text, flush=True)


def _spawn_destination(opts: DemoOptions, xbzrle: bool) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, "-m", "xbzrle", "vm", "--ram", str(opts.ram), "--workload",
           opts.workload, "--incoming", "tcp:127.0.0.1:0", "--exit-after-migration",
           "--report-json"]
    if xbzrle:
        cmd.append("--xbzrle")
    # The destination's own log goes to a file: its verdict comes back as JSON.
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True,
                            env=os.environ.copy())
    proc.log = log  # type: ignore[attr-defined]
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("LISTENING "):
        proc.kill()
        proc.wait()
        log.seek(0)
        raise TransportError(f"the destination did not start: {log.read().strip() or line!r}")
    return proc, int(line.split()[1])



def _run_one(opts: DemoOptions, guest: Guest, xbzrle: bool) -> dict[str, object]:
    manager = MigrationManager(guest)
    manager.set_capability("xbzrle", xbzrle)
    manager.set_parameters(max_bandwidth=opts.bandwidth, downtime_limit=opts.downtime_limit)
    if xbzrle:
        manager.set_cache_size(min(opts.cache_size, opts.ram))
    proc, port = _spawn_destination(opts, xbzrle)
    try:
        return _migrate(opts, guest, manager, proc, port, xbzrle)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _migrate(opts: DemoOptions, guest: Guest, manager: MigrationManager,
             proc: subprocess.Popen[str], port: int, xbzrle: bool) -> dict[str, object]:
    name = "xbzrle" if xbzrle else "plain"
    _say(opts, f"\n== migration {'with' if xbzrle else 'without'} XBZRLE "
               f"(cap {format_size(opts.bandwidth)}/s, downtime limit {opts.downtime_limit} ms)")
    mig = manager.migrate(f"tcp:127.0.0.1:{port}")
    started = time.monotonic()
    cancelled_at_cap = False
    while mig.thread.is_alive():
        mig.wait(1.0)
        info = mig.query()
        ram = info["ram"]
        elapsed = time.monotonic() - started
        sent = ram["transferred"] / 2**20
        _say(opts, f"  {elapsed:5.1f} s  {info['status']:<10} sent {sent:7.1f}"
                   f" MiB  remaining {ram['remaining'] / 2**20:6.1f} MiB  rounds"
                   f" {ram['dirty-sync-count']:3}  expected downtime"
                   f" {info.get('expected-downtime', 0)} ms")
        if elapsed > opts.time_cap and not cancelled_at_cap:
            _say(opts, f"  gave up after {opts.time_cap:.0f} s: cancelling")
            manager.cancel()
            cancelled_at_cap = True
    info = manager.query()
    info["rounds"] = mig.stats.history_dicts()
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    dest = {}
    for line in out.splitlines():
        if line.startswith("{"):
            dest = json.loads(line)
    info["destination"] = dest
    if xbzrle is False or info["status"] != "completed":
        info["source-guest-running"] = guest_progresses(guest)
        _say(opts, f"  source guest still running after the {info['status']} migration: "
                   f"{info['source-guest-running']}")
    else:
        _say(opts, f"  destination: {dest.get('status')}, RAM digest verified: "
                   f"{dest.get('digest-verified')}, workload resumed there: "
                   f"{dest.get('workload-resumed')}")
    _say(opts, "\n(xbzrle) info migrate  [" + name + "]")
    _say(opts, format_info_migrate(info, manager.settings.query_capabilities()))
    return info


def run_demo(opts: DemoOptions) -> int:
    _say(opts, f"xbzrle demo: {format_size(opts.ram)} guest running '{opts.workload}', "
               "source in this process, destination in a child process on loopback")
    results: dict[str, dict[str, object]] = {}
    with Guest(ram=opts.ram) as guest:
        guest.start_workload(opts.workload)
        time.sleep(0.5)  # let the workload dirty its working set
        results["plain"] = _run_one(opts, guest, xbzrle=False)
        if not guest.running:
            guest.cont()
        results["xbzrle"] = _run_one(opts, guest, xbzrle=True)
    if opts.as_json:
        print(json.dumps(results))
    else:
        print("\n== comparison")
        print(format_comparison(results))
        ok = results["xbzrle"]["status"] == "completed"
        print("\nWith XBZRLE the migration " + ("completed" if ok else "did NOT complete") +
              "; without it, it " + ("completed" if results["plain"]["status"] == "completed"
                                     else "did not converge") + ".")
    return 0 if results["xbzrle"]["status"] == "completed" else 1


def format_comparison(results: Mapping[str, Mapping[str, object]]) -> str:
    """One screen: each run's outcome side by side."""
    names = list(results)
    rows: list[tuple[str, list[str]]] = []

    def ram(r: Mapping[str, object], key: str) -> object:
        value = r.get("ram")
        return value.get(key, "-") if isinstance(value, Mapping) else "-"

    def mib(n: object) -> str:
        return f"{n / (1 << 20):.1f} MiB" if isinstance(n, int) else "-"

    rows.append(("status", [str(results[n].get("status", "-")) for n in names]))
    rows.append(("total time", [f"{results[n].get('total-time', 0) / 1000:.1f} s" for n in names]))
    rows.append(("downtime", [f"{results[n]['downtime']} ms" if "downtime" in results[n]
                              else "-" for n in names]))
    rows.append(("sent", [mib(ram(results[n], "transferred")) for n in names]))
    rows.append(("rounds (dirty syncs)", [str(ram(results[n], "dirty-sync-count"))
                                          for n in names]))
    rows.append(("zero pages", [str(ram(results[n], "duplicate")) for n in names]))
    rows.append(("normal pages", [str(ram(results[n], "normal")) for n in names]))
    rows.append(("xbzrle pages", [str(results[n].get("xbzrle-cache", {}).get("pages", "-"))
                                  for n in names]))
    rows.append(("cache misses", [str(results[n].get("xbzrle-cache", {}).get("cache-miss", "-"))
                                  for n in names]))
    rows.append(("overflows", [str(results[n].get("xbzrle-cache", {}).get("overflow", "-"))
                               for n in names]))
    width = max(len(r[0]) for r in rows) + 2
    cols = [max(len(n), *(len(r[1][i]) for r in rows)) + 2 for i, n in enumerate(names)]
    out = ["".ljust(width) + "".join(n.rjust(c) for n, c in zip(names, cols, strict=True))]
    for label, values in rows:
        out.append(label.ljust(width) + "".join(v.rjust(c) for v, c in zip(values, cols,
                                                                            strict=True)))
    return "\n".join(out)
