"""Migration benchmark: every workload, XBZRLE off and on, capped and unlimited.

Two processes on loopback: the source guest lives in this process, the
destination is a child ``xbzrle vm --incoming``.  Prints one table row per
run and the source's page-processing rates with no bandwidth limit.

    python benchmarks/migration.py [--ram 1G] [--cap 32M] [--time-cap 15]
                                   [--workloads loadgen,sparse,...]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

from xbzrle import Guest
from xbzrle.migration.manager import MigrationManager
from xbzrle.sizes import parse_size

WORKLOADS = ("loadgen", "sparse", "dense", "hotcold", "idle")


def spawn_destination(ram: int, workload: str, xbzrle: bool) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "xbzrle", "vm", "--ram", str(ram), "--workload", workload,
           "--incoming", "tcp:127.0.0.1:0", "--exit-after-migration", "--report-json"]
    if xbzrle:
        cmd.append("--xbzrle")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    return proc, int(line.split()[1])


def run(guest: Guest, ram: int, workload: str, xbzrle: bool, cap: int, time_cap: float) -> dict:
    proc, port = spawn_destination(ram, workload, xbzrle)
    m = MigrationManager(guest)
    m.set_capability("xbzrle", xbzrle)
    m.set_parameters(max_bandwidth=cap, xbzrle_cache_size=min(256 << 20, ram // 4))
    mig = m.migrate(f"tcp:127.0.0.1:{port}")
    deadline = time.monotonic() + time_cap
    while mig.thread.is_alive():
        mig.wait(0.2)
        if time.monotonic() > deadline:
            m.cancel()
            mig.wait()
    info = m.query()
    out, _ = proc.communicate(timeout=60)
    dest = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    if not guest.running:
        guest.cont()
    hist = mig.stats.history
    first = hist[0] if hist else None
    later = [r for r in hist[1:] if not r.final and r.duration > 0 and xbzrle]
    page_rate = lambda r: r.counts.scanned * 4096 / r.duration / 1e9  # noqa: E731
    return {
        "workload": workload, "xbzrle": xbzrle, "cap": cap, "status": info["status"],
        "total_s": info["total-time"] / 1000, "downtime_ms": info.get("downtime"),
        "sent_mib": info["ram"]["transferred"] / 2**20, "rounds": info["ram"]["dirty-sync-count"],
        "zero": info["ram"]["duplicate"], "normal": info["ram"]["normal"],
        "xbzrle_pages": info.get("xbzrle-cache", {}).get("pages", 0),
        "miss_rate": sum(r.counts.cache_miss for r in hist)
        / max(1, sum(r.counts.zero + r.counts.normal + r.counts.xbzrle for r in hist)),
        "overflow": info.get("xbzrle-cache", {}).get("overflow", 0),
        "cpu_s": mig.cpu_seconds,
        "first_pass_gbps": page_rate(first) if first and first.duration > 0 else 0.0,
        "xbzrle_round_gbps": statistics.median(page_rate(r) for r in later) if later else 0.0,
        "dest_peak_mib": dest.get("peak-rss", 0) / 2**20,
    }


def save_loop_rates(ram: int, repeats: int = 5) -> None:
    """The source's page processing alone (no network, no workload): GB/s of guest RAM."""
    import os

    from xbzrle._backend import load_core

    core = load_core()
    npages = ram // 4096
    data = bytearray(os.urandom(1 << 20)) * (ram >> 20)  # every page non-zero, distinct per MiB
    out = bytearray(4 << 20)
    cache = core.PageCache(ram)

    def one_pass(mode: int, use_cache: bool) -> float:
        bitmap = bytearray(b"\xff" * (((npages + 63) // 64) * 8))
        page, t0 = 0, time.perf_counter()
        while page < npages:
            _, page, _, _ = core.save_pages(out, 0, data, bitmap, page, b"pc.ram", 0, mode,
                                            cache if use_cache else None, True)
        return ram / (time.perf_counter() - t0) / 1e9

    plain = statistics.median(one_pass(core.SAVE_PLAIN, False) for _ in range(repeats))
    one_pass(core.SAVE_XBZRLE, True)  # fill the cache
    view = memoryview(data)
    for off in range(0, ram, 4096 * 97):  # about 1% of the bytes of every page change
        view[off + 100] ^= 1
    rates = []
    for r in range(repeats):
        for off in range(r * 41, ram, 4096):
            data[off] ^= 0x5A
            data[off + 2048] ^= 0x5A
        rates.append(one_pass(core.SAVE_XBZRLE, True))
    print(f"save loop alone over {ram >> 20} MiB of non-zero pages (median of {repeats}): "
          f"first pass (normal pages) {plain:.2f} GB/s, XBZRLE round (2 bytes changed "
          f"per page) {statistics.median(rates):.2f} GB/s of guest RAM\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ram", default="1G")
    ap.add_argument("--cap", default="32M")
    ap.add_argument("--time-cap", type=float, default=15.0)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--rate", type=float, default=0,
                    help="workload dirty rate in pages/s (default 0: flat out)")
    ap.add_argument("--loop-only", action="store_true",
                    help="only measure the save loop without a network")
    args = ap.parse_args(argv)
    ram = parse_size(args.ram)
    save_loop_rates(ram)
    if args.loop_only:
        return 0
    rows = []
    hdr = (f"{'workload':<8} {'xbzrle':<6} {'cap':>6} {'status':<10} {'time s':>7} "
           f"{'down ms':>7} {'sent MiB':>9} {'rounds':>6} {'zero':>7} {'normal':>7} "
           f"{'xbzrle':>7} {'miss':>5} {'ovfl':>6} {'cpu s':>6} {'1st GB/s':>8} "
           f"{'xbz GB/s':>8} {'dst MiB':>7}")
    print(hdr)
    for workload in args.workloads.split(","):
        with Guest(ram=ram) as guest:
            guest.start_workload(workload, rate=args.rate)
            time.sleep(0.5)
            for cap in (parse_size(args.cap), 0):
                for xbzrle in (False, True):
                    r = run(guest, ram, workload, xbzrle, cap, args.time_cap)
                    rows.append(r)
                    capname = f"{cap >> 20}M" if cap else "none"
                    print(f"{workload:<8} {'on' if xbzrle else 'off':<6} {capname:>6} "
                          f"{r['status']:<10} {r['total_s']:7.1f} "
                          f"{r['downtime_ms'] if r['downtime_ms'] is not None else '-':>7} "
                          f"{r['sent_mib']:9.1f} {r['rounds']:6} {r['zero']:7} {r['normal']:7} "
                          f"{r['xbzrle_pages']:7} {r['miss_rate']:5.2f} {r['overflow']:6} "
                          f"{r['cpu_s']:6.2f} {r['first_pass_gbps']:8.2f} "
                          f"{r['xbzrle_round_gbps']:8.2f} {r['dest_peak_mib']:7.0f}", flush=True)
    src_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nsource peak RSS (guest RAM touched + cache + buffers): {src_peak:.0f} MiB")
    unl = [r for r in rows if r["cap"] == 0]
    if unl:
        print("median page-processing rate with no bandwidth limit: first pass "
              f"{statistics.median(r['first_pass_gbps'] for r in unl):.2f} GB/s of guest RAM, "
              "XBZRLE rounds "
              f"{statistics.median(r['xbzrle_round_gbps'] for r in unl if r['xbzrle']):.2f} GB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
