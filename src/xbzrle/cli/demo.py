"""``xbzrle demo``: the seed's claim, shown live on this machine.

Two processes on loopback: this one is the source (a guest running a
workload), a child ``xbzrle vm --incoming`` is the destination.  The same
guest is migrated twice under a bandwidth cap, first without XBZRLE (it
cannot converge; it is cancelled at a time cap and the source guest is shown
still running), then with XBZRLE (it completes, the destination checks the
RAM digest and resumes the workload).

The workload writes pages at a fixed rate, by default twice what the link
can carry (``2 * bandwidth / PAGE_SIZE`` pages per second), never flat out:
flat out, a busy machine slows the workload down until a plain migration
converges after all, and the demo's result would depend on the load of the
machine instead of on XBZRLE.
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
from ..sizes import PAGE_SIZE, format_size
from .progress import MigrationDisplay
from .vm import guest_progresses

#: The workload's page writes per second, per byte/s of bandwidth: twice the link.
WRITE_RATE_PER_BANDWIDTH = 2 / PAGE_SIZE

@dataclass
class DemoOptions:
    ram: int
    workload: str
    bandwidth: int
    cache_size: int
    time_cap: float
    downtime_limit: int
    as_json: bool
    rate: float = 0.0  # page writes per second; 0 = twice what the link carries
    plot: str | None = None

    @property
    def write_rate(self) -> float:
        """Pages per second the workload writes: fixed, whatever the machine's load."""
        if self.rate:
            return self.rate
        return max(1.0, self.bandwidth * WRITE_RATE_PER_BANDWIDTH)


def _say(opts: DemoOptions, text: str = "") -> None:
    if not opts.as_json:
        print(text, flush=True)


def _spawn_destination(opts: DemoOptions, xbzrle: bool) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, "-m", "xbzrle", "vm", "--ram", str(opts.ram), "--workload",
           opts.workload, "--rate", f"{opts.write_rate:g}", "--incoming", "tcp:127.0.0.1:0",
           "--exit-after-migration", "--report-json"]
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
    # The demo's verdict reads all of the source's RAM (not the per-page table the
    # save loop keeps): it proves the dirty tracking too, not only the bytes sent.
    manager.set_capability("x-ram-digest-full", True)
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
    display = None if opts.as_json else MigrationDisplay(name, sys.stdout, "  ")
    try:
        while mig.thread.is_alive():
            mig.wait(0.2 if display is not None and display.live else 1.0)
            if display is not None:
                display.update(mig.stats.progress(), str(mig.status))
            if time.monotonic() - started > opts.time_cap and not cancelled_at_cap:
                if display is not None:
                    display.note(f"  gave up after {opts.time_cap:.0f} s: cancelling")
                manager.cancel()
                cancelled_at_cap = True
    finally:
        if display is not None:
            display.close()
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
    _say(opts, format_info_migrate(info, manager.settings.query_capabilities(),
                                   show_globals=False))
    return info


def run_demo(opts: DemoOptions) -> int:
    if opts.plot:
        from .plot import require_matplotlib

        require_matplotlib()  # fail now, not after two migrations
    _say(opts, f"xbzrle demo: {format_size(opts.ram)} guest running '{opts.workload}' at "
               f"{opts.write_rate:.0f} page writes/s, source in this process, destination "
               "in a child process on loopback")
    results: dict[str, dict[str, object]] = {}
    with Guest(ram=opts.ram) as guest:
        guest.start_workload(opts.workload, rate=opts.write_rate)
        time.sleep(0.5)  # let the workload dirty its working set
        results["plain"] = _run_one(opts, guest, xbzrle=False)
        if not guest.running:
            guest.cont()
        results["xbzrle"] = _run_one(opts, guest, xbzrle=True)
    if opts.plot:
        from .plot import plot_demo

        plot_demo(results, opts.plot, title=f"xbzrle demo: {format_size(opts.ram)} guest, "
                  f"'{opts.workload}', link {format_size(opts.bandwidth)}/s")
    if opts.as_json:
        print(json.dumps(results))
    else:
        print("\n== comparison")
        print(format_comparison(results))
        print("\n" + verdict(results["plain"], results["xbzrle"]))
        if opts.plot:
            print(f"plot: {opts.plot}")
    return 0 if results["xbzrle"]["status"] == "completed" else 1


def _ratio(a: float, b: float) -> str:
    """``13x`` / ``1.4x``: how many times ``a`` is ``b`` (a >= b)."""
    r = a / b if b else float("inf")
    return f"{r:.0f}x" if r >= 10 else f"{r:.1f}x"


def verdict(plain: Mapping[str, object], xbz: Mapping[str, object]) -> str:
    """One sentence that reads right whichever run completed."""
    def sent(r: Mapping[str, object]) -> int:
        ram = r.get("ram")
        return int(ram.get("transferred", 0)) if isinstance(ram, Mapping) else 0

    def took(r: Mapping[str, object]) -> float:
        value = r.get("total-time", 0)
        return float(value) / 1000 if isinstance(value, int | float) else 0.0

    def outcome(r: Mapping[str, object]) -> str:
        status = str(r.get("status", "unknown"))
        if status == "cancelled":
            return f"did not converge (cancelled after {took(r):.1f} s)"
        if status == "failed":
            return f"failed ({r.get('error-desc', 'unknown error')})"
        return status

    p_ok, x_ok = plain.get("status") == "completed", xbz.get("status") == "completed"
    if p_ok and x_ok:
        size = (f"XBZRLE sent {_ratio(sent(plain), sent(xbz))} less" if sent(xbz) <= sent(plain)
                else f"XBZRLE sent {_ratio(sent(xbz), sent(plain))} more")
        speed = (f"finished {_ratio(took(plain), took(xbz))} sooner" if took(xbz) <= took(plain)
                 else f"finished {_ratio(took(xbz), took(plain))} later")
        return f"Both completed; {size} and {speed}."
    if x_ok:
        return (f"With XBZRLE the migration completed in {took(xbz):.1f} s after sending "
                f"{sent(xbz) / (1 << 20):.1f} MiB; without it, it {outcome(plain)}.")
    if p_ok:
        return (f"Without XBZRLE the migration completed in {took(plain):.1f} s; with it, "
                f"it {outcome(xbz)}.")
    return f"Neither completed: without XBZRLE it {outcome(plain)}; with it, it {outcome(xbz)}."


def format_comparison(results: Mapping[str, Mapping[str, object]]) -> str:
    """One screen: each run's outcome side by side."""
    names = list(results)
    rows: list[tuple[str, list[str]]] = []

    def ram(r: Mapping[str, object], key: str) -> object:
        value = r.get("ram")
        return value.get(key, "-") if isinstance(value, Mapping) else "-"

    def xbzrle(r: Mapping[str, object], key: str) -> object:
        value = r.get("xbzrle-cache")
        return value.get(key, "-") if isinstance(value, Mapping) else "-"

    def seconds(ms: object) -> str:
        return f"{ms / 1000:.1f} s" if isinstance(ms, int | float) else "-"

    def mib(n: object) -> str:
        return f"{n / (1 << 20):.1f} MiB" if isinstance(n, int) else "-"

    rows.append(("status", [str(results[n].get("status", "-")) for n in names]))
    rows.append(("total time", [seconds(results[n].get("total-time", 0)) for n in names]))
    rows.append(("downtime", [f"{results[n]['downtime']} ms" if "downtime" in results[n]
                              else "-" for n in names]))
    rows.append(("sent", [mib(ram(results[n], "transferred")) for n in names]))
    rows.append(("rounds (dirty syncs)", [str(ram(results[n], "dirty-sync-count"))
                                          for n in names]))
    rows.append(("zero pages", [str(ram(results[n], "duplicate")) for n in names]))
    rows.append(("normal pages", [str(ram(results[n], "normal")) for n in names]))
    rows.append(("xbzrle pages", [str(xbzrle(results[n], "pages"))
                                  for n in names]))
    rows.append(("cache misses", [str(xbzrle(results[n], "cache-miss"))
                                  for n in names]))
    rows.append(("overflows", [str(xbzrle(results[n], "overflow"))
                               for n in names]))
    width = max(len(r[0]) for r in rows) + 2
    cols = [max(len(n), *(len(r[1][i]) for r in rows)) + 2 for i, n in enumerate(names)]
    out = ["".ljust(width) + "".join(n.rjust(c) for n, c in zip(names, cols, strict=True))]
    for label, values in rows:
        out.append(label.ljust(width) + "".join(v.rjust(c) for v, c in zip(values, cols,
                                                                            strict=True)))
    return "\n".join(out)
