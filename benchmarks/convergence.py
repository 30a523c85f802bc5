"""Convergence benchmark: auto-converge with QEMU's trigger and with the XBZRLE-aware one.

A 256 MiB guest whose workload writes pages at a fixed rate the link cannot
absorb (32 MiB/s carry 8192 pages/s), migrated to a child ``xbzrle vm
--incoming`` on loopback with downtime-limit 300 ms and a 64 MiB cache, for

* ``plain/qemu``:  XBZRLE off, auto-converge (QEMU's rule: raw dirty bytes);
* ``xbzrle/qemu``: XBZRLE on, auto-converge, ``x-throttle-raw-bytes`` on;
* ``xbzrle/aware``: XBZRLE on, auto-converge with the XBZRLE-aware rule.

Columns: completed, total time, downtime, bytes sent, peak throttle, guest
work during the live phase as a percentage of the same workload unthrottled
(its fixed rate; the rate is checked once without migration and printed),
and the migration thread's CPU seconds.  Figures are from one run per case
(the shared machine is noisy: read them as such; ``--repeat`` gives medians).

    python benchmarks/convergence.py [--workloads sparse,hotcold,dense,loadgen]
                                     [--modes plain/qemu,xbzrle/qemu,xbzrle/aware]
                                     [--time-cap 60] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from xbzrle import Guest
from xbzrle.migration.manager import MigrationManager

MiB = 1 << 20
RAM = 256 * MiB
LINK = 32 * MiB  # 8192 pages/s
CACHE = 64 * MiB
DOWNTIME_MS = 300
#: case -> (workload, page writes per second, workload params).  Every rate
#: is above what the link carries as whole pages (8192/s).  ``sparse48`` is
#: sparse on a 48 MiB working set, which the 64 MiB cache holds: its pages
#: cost XBZRLE about 10 bytes a write, so only a rate far above what plain
#: migration can absorb even at 99 % throttle makes XBZRLE need a throttle.
CASES: dict[str, tuple[str, int, dict]] = {
    "sparse": ("sparse", 16_000, {}),
    "sparse48": ("sparse", 2_300_000, {"size": 48 * MiB}),
    "hotcold": ("hotcold", 60_000, {}),
    "dense": ("dense", 12_000, {}),
    "loadgen": ("loadgen", 16_000, {}),
}
DEFAULT_CASES = ("sparse", "hotcold", "dense", "loadgen")
MODES = ("plain/qemu", "xbzrle/qemu", "xbzrle/aware")
#: Extra modes per case: dense also runs without the overflow back-off, so the
#: encoder time it saves shows in the migration thread's CPU time.
EXTRA_MODES = {"dense": ("xbzrle/aware-nobackoff",)}


def spawn_destination(xbzrle: bool) -> tuple[subprocess.Popen, int]:
    """The destination guest runs no workload of its own: the RAM it receives is the point."""
    cmd = [sys.executable, "-m", "xbzrle", "vm", "--ram", str(RAM), "--workload", "idle",
           "-S", "--incoming", "tcp:127.0.0.1:0", "--exit-after-migration", "--report-json"]
    if xbzrle:
        cmd.append("--xbzrle")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    return proc, int(line.split()[1])


def warm_guest(case: str) -> Guest:
    """The guest with its workload's region written several times over: no free zero pages."""
    kind, rate, params = CASES[case]
    guest = Guest(ram=RAM)
    guest.stop()
    work = guest.start_workload(kind, rate=rate, **params)
    work.step(3 * work.spec.pages)
    guest.cont()
    return guest


def unmigrated_rate(guest: Guest, seconds: float = 2.0) -> float:
    before, t0 = guest.pages_written, time.monotonic()
    time.sleep(seconds)
    return (guest.pages_written - before) / (time.monotonic() - t0)


def run(case: str, mode: str, time_cap: float) -> dict:
    xbzrle = mode.startswith("xbzrle")
    with warm_guest(case) as guest:
        free_rate = unmigrated_rate(guest)
        proc, port = spawn_destination(xbzrle)
        m = MigrationManager(guest)
        m.set_capability("xbzrle", xbzrle)
        m.set_capability("auto-converge", True)
        m.set_parameters(max_bandwidth=LINK, downtime_limit=DOWNTIME_MS,
                         xbzrle_cache_size=CACHE, x_throttle_raw_bytes=mode.endswith("qemu"),
                         x_overflow_backoff=not mode.endswith("nobackoff"))
        mig = m.migrate(f"tcp:127.0.0.1:{port}")
        deadline = time.monotonic() + time_cap
        while mig.thread.is_alive():
            mig.wait(0.2)
            if time.monotonic() > deadline:
                m.cancel()
                mig.wait()
        info = m.query()
        try:
            out, _ = proc.communicate(timeout=60)
            dest = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
        except (subprocess.TimeoutExpired, IndexError, ValueError):
            proc.kill()
            dest = {}
        digest_ok = bool(dest.get("digest-verified"))  # the destination checked the RAM digest
        x = info.get("xbzrle-cache", {})
        return {
            "workload": case, "mode": mode, "status": info["status"],
            "total_s": info["total-time"] / 1000, "downtime_ms": info.get("downtime"),
            "sent_mib": info["ram"]["transferred"] / MiB,
            "peak": mig.stats.peak_throttle, "work": info.get("x-guest-work-percent"),
            "cpu_s": mig.cpu_seconds, "rounds": info["ram"]["dirty-sync-count"],
            "cpu_us_page": 1e6 * mig.cpu_seconds
            / max(1, sum(r.counts.scanned for r in mig.stats.history)),
            "overflow": x.get("overflow", 0), "skipped": x.get("skipped-overflow", 0),
            "free_rate": free_rate, "rate": CASES[case][1], "digest_ok": digest_ok,
        }


def save_loop_backoff(npages: int = 16384, repeats: int = 5) -> tuple[float, float]:
    """The save loop alone on pages rewritten wholesale: µs per page with and without back-off.

    Every page is cached, then rewritten with random bytes before each pass,
    as ``dense`` does; without back-off every pass runs the encoder to an
    overflow, with it the pages skip the encoder (after their first overflow).
    """
    import os

    from xbzrle._backend import load_core

    core = load_core()
    ram = bytearray(os.urandom(npages * 4096))
    out = bytearray(8 << 20)
    name = b"pc.ram"

    def one_pass(cache, backoff) -> float:
        view = memoryview(ram)
        for off in range(0, len(ram), 1 << 20):  # rewrite every page (untimed)
            view[off:off + (1 << 20)] = os.urandom(1 << 20)
        bitmap = bytearray(b"\xff" * (npages // 8))
        page, t0 = 0, time.perf_counter()
        while page < npages:
            _, page, _, _ = core.save_pages(out, 0, ram, bitmap, page, name, 0,
                                            core.SAVE_XBZRLE, cache, True, None, backoff)
        return (time.perf_counter() - t0) / npages * 1e6

    result = []
    for use_backoff in (True, False):
        cache = core.PageCache(npages * 4096)
        backoff = bytearray(npages) if use_backoff else None
        one_pass(cache, backoff)  # fill the cache
        one_pass(cache, backoff)  # first overflow of every page
        result.append(statistics.median(one_pass(cache, backoff) for _ in range(repeats)))
    return result[0], result[1]


def median_row(rows: list[dict]) -> dict:
    out = dict(rows[0])
    for key in ("total_s", "sent_mib", "peak", "cpu_s", "cpu_us_page", "rounds", "overflow",
                "skipped", "free_rate"):
        out[key] = statistics.median(r[key] for r in rows)
    works = [r["work"] for r in rows if r["work"] is not None]
    out["work"] = statistics.median(works) if works else None
    downs = [r["downtime_ms"] for r in rows if r["downtime_ms"] is not None]
    out["downtime_ms"] = statistics.median(downs) if downs else None
    out["status"] = "/".join(sorted({r["status"] for r in rows}))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default=",".join(DEFAULT_CASES),
                    help=f"cases, of: {', '.join(CASES)}")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--time-cap", type=float, default=60.0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--loop-only", action="store_true",
                    help="only the save loop's overflow back-off figure (no migration)")
    args = ap.parse_args(argv)
    with_backoff, without = save_loop_backoff()
    print(f"save loop alone, 64 MiB of pages rewritten wholesale (dense), median of 5 passes: "
          f"{with_backoff:.2f} µs/page with the overflow back-off, {without:.2f} without "
          f"(x{without / with_backoff:.1f})\n", flush=True)
    if args.loop_only:
        return 0
    print(f"guest {RAM >> 20} MiB, link {LINK >> 20} MiB/s ({LINK // 4096} pages/s), "
          f"downtime-limit {DOWNTIME_MS} ms, cache {CACHE >> 20} MiB, auto-converge on "
          f"(QEMU's defaults: threshold 50, initial 20, increment 10)\n", flush=True)
    hdr = ("| workload | rate p/s | mode | completed | time s | downtime ms | sent MiB "
           "| peak throttle % | guest work % | rounds | cpu s | cpu µs/page | overflow "
           "| skipped |")
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    results: dict[tuple[str, str], dict] = {}
    for workload in args.workloads.split(","):
        for mode in args.modes.split(",") + list(EXTRA_MODES.get(workload, ())):
            row = median_row([run(workload, mode, args.time_cap) for _ in range(args.repeat)])
            results[(workload, mode)] = row
            down = "-" if row["downtime_ms"] is None else f"{row['downtime_ms']:.0f}"
            work = "-" if row["work"] is None else f"{row['work']:.1f}"
            done = ("yes" if row["digest_ok"] else "yes (digest?)") \
                if row["status"] == "completed" else f"no ({row['status']})"
            print(f"| {workload} | {row['rate']} | {mode} | {done} | {row['total_s']:.1f} | "
                  f"{down} | {row['sent_mib']:.0f} | {row['peak']:.0f} | {work} | "
                  f"{row['rounds']:.0f} | {row['cpu_s']:.2f} | {row['cpu_us_page']:.2f} | "
                  f"{row['overflow']:.0f} | "
                  f"{row['skipped']:.0f} |", flush=True)
            if row["free_rate"] < 0.9 * row["rate"]:
                print(f"  (note: unmigrated rate measured {row['free_rate']:.0f} p/s, below "
                      f"the set rate: the machine is busy)", flush=True)
    print()
    for workload in args.workloads.split(","):
        qemu = results.get((workload, "xbzrle/qemu"))
        aware = results.get((workload, "xbzrle/aware"))
        if qemu and aware and qemu["work"] and aware["work"]:
            print(f"{workload}: aware/QEMU rule with XBZRLE: peak throttle {aware['peak']:.0f}% "
                  f"vs {qemu['peak']:.0f}%, guest work {aware['work']:.1f}% vs "
                  f"{qemu['work']:.1f}% (x{aware['work'] / qemu['work']:.2f})")
    on = results.get(("dense", "xbzrle/aware"))
    off = results.get(("dense", "xbzrle/aware-nobackoff"))
    if on and off:
        print(f"dense: migration thread CPU per page with the overflow back-off "
              f"{on['cpu_us_page']:.2f} µs, without {off['cpu_us_page']:.2f} µs "
              f"({on['skipped']:.0f} pages skipped the encoder)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
