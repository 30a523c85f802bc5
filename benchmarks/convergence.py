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
the migration thread's CPU seconds, and the time the save loop spent inside
the XBZRLE encoder (``xbzrle-cache``'s ``x-encode-time``), in total and per
XBZRLE round.  Then the pricing check: the aware rule's price of a dirty page
against what the next round paid, and the rule replayed over the recorded
rounds with that real cost.  ``--repeat N`` gives medians of N runs (the
shared machine is noisy).

    python benchmarks/convergence.py [--workloads sparse,hotcold,dense,loadgen,sparse-ram]
                                     [--modes plain/qemu,xbzrle/qemu,xbzrle/aware]
                                     [--time-cap 60] [--repeat 1] [--json FILE]
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
from xbzrle.migration.throttle import AutoConverge, ThrottleSettings, TriggerRule, page_wire_cost

MiB = 1 << 20
RAM = 256 * MiB
LINK = 32 * MiB  # 8192 pages/s
CACHE = 64 * MiB
DOWNTIME_MS = 300
#: case -> (workload, page writes per second, workload params).  Every rate
#: is above what the link carries as whole pages (8192/s).  ``sparse`` runs on
#: a 48 MiB working set, which the 64 MiB cache holds (XBZRLE's precondition,
#: as QEMU's docs put it: the cache should hold the guest's working set): its
#: pages cost XBZRLE about 10 bytes a write, so only a rate far above what plain
#: migration absorbs even at 99 % throttle makes XBZRLE need a throttle at all.
#: ``sparse-ram`` is sparse over the whole 256 MiB: the cache misses about 3
#: pages in 4, a dirty page really costs nearly a page, and the aware rule must
#: throttle as QEMU's does (the row that shows it does).
CASES: dict[str, tuple[str, int, dict]] = {
    "sparse": ("sparse", 2_300_000, {"size": 48 * MiB}),
    "hotcold": ("hotcold", 60_000, {}),
    "dense": ("dense", 12_000, {}),
    "loadgen": ("loadgen", 16_000, {}),
    "sparse-ram": ("sparse", 16_000, {}),
}
DEFAULT_CASES = ("sparse", "hotcold", "dense", "loadgen", "sparse-ram")
MODES = ("plain/qemu", "xbzrle/qemu", "xbzrle/aware")
#: Extra modes per case: without the overflow back-off, so the encoder time it
#: saves shows (dense), and that it changes nothing where no page overflows
#: (loadgen).
EXTRA_MODES = {"dense": ("xbzrle/aware-nobackoff",),
               "loadgen": ("xbzrle/aware-nobackoff",)}


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
        history = mig.stats.history
        xbzrle_rounds = max(1, len(history) - 1) if xbzrle else 0  # the first round is plain
        encode_ms = x.get("x-encode-time", 0) / 1000
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
            "encode_ms": encode_ms,
            "encode_ms_round": encode_ms / xbzrle_rounds if xbzrle_rounds else 0.0,
            "encoder_runs": x.get("pages", 0),
            **(pricing(history) if xbzrle else {}),
            "history": mig.stats.history_dicts(),
        }


def pricing(history: list) -> dict:
    """How well the aware rule's price of a dirty page predicted what it then cost.

    The rule prices the pages a sync finds dirty at the wire bytes per page of
    the round that just ended (from the third round on: the first is plain,
    the second the cache's warm-up); those pages are sent by the next round,
    whose own bytes per page is the real cost.  Medians over the rounds.
    """
    def cost(r) -> float:
        return r.counts.wire_bytes / max(1, r.counts.scanned)

    pairs = [(cost(a), cost(b)) for a, b in zip(history[2:], history[3:], strict=False)
             if a.counts.scanned and b.counts.scanned]
    if not pairs:
        return {}
    return {"priced_b": statistics.median(p for p, _ in pairs),
            "real_b": statistics.median(r for _, r in pairs),
            "price_ratio": statistics.median(p / r for p, r in pairs if r)}


def replay_aware_rule(history: list[dict], oracle: bool) -> tuple[int, int, int]:
    """Replay the aware rule's verdicts over a run's rounds (``history_dicts()``).

    ``oracle=False`` prices the pages of each sync as the rule does, at the
    round that just ended; ``oracle=True`` at what the next round really paid
    for them, the best any pricing (by cache membership or otherwise) could
    do.  Returns (peak throttle, periods judged, periods whose verdict the
    two prices agree on); the replay follows the recorded rounds, so it is
    exact as long as the verdicts agree (a different verdict would have
    changed the guest's throttle and every later round).
    """
    def verdicts(use_oracle: bool) -> tuple[int, list[bool]]:
        rule = AutoConverge(ThrottleSettings(), TriggerRule.XBZRLE, 0.0)
        now, total, over = 0.0, 0, []
        live = [h for h in history if not h["final"]]
        for i, h in enumerate(live):
            now += h["duration"]
            total += h["wire-bytes"]
            nxt = history[i + 1] if i + 1 < len(history) else None
            if i == 1:
                cost = None  # the cache's warm-up round: no verdict (as the source does)
            elif use_oracle and nxt is not None and nxt["scanned"]:
                cost = nxt["wire-bytes"] / nxt["scanned"]
            else:
                cost = page_wire_cost(h["wire-bytes"], h["scanned"], i == 0)
            decision = rule.sync(now, nxt["dirty-pages"] if nxt else 0, total, cost)
            if decision is not None and decision.judged:
                over.append(decision.over)
        return rule.peak, over

    peak_last, last = verdicts(False)
    peak_oracle, best = verdicts(True)
    agree = sum(a == b for a, b in zip(last, best, strict=False))
    return (peak_oracle if oracle else peak_last), len(last), agree


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
                "skipped", "free_rate", "encode_ms", "encode_ms_round", "encoder_runs",
                "priced_b", "real_b", "price_ratio"):
        values = [r[key] for r in rows if key in r]
        if values:
            out[key] = statistics.median(values)
    out["runs"] = rows
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
    ap.add_argument("--json", metavar="FILE",
                    help="also write every run (with its rounds) to FILE, as it goes")
    ap.add_argument("--loop-only", action="store_true",
                    help="only the save loop's overflow back-off figure (no migration)")
    ap.add_argument("--pricing-from", metavar="FILE",
                    help="only print the pricing check of the runs a --json FILE holds")
    args = ap.parse_args(argv)
    if args.pricing_from:
        with open(args.pricing_from) as f:
            runs = json.load(f)
        groups: dict[tuple[str, str], list[dict]] = {}
        for r in runs:
            groups.setdefault((r["workload"], r["mode"]), []).append(r)
        print_pricing({key: median_row(rows) for key, rows in groups.items()})
        return 0
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
           "| skipped | encoder ms | encoder ms/round |")
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    results: dict[tuple[str, str], dict] = {}
    for workload in args.workloads.split(","):
        for mode in args.modes.split(",") + list(EXTRA_MODES.get(workload, ())):
            row = median_row([run(workload, mode, args.time_cap) for _ in range(args.repeat)])
            results[(workload, mode)] = row
            if args.json:
                with open(args.json, "w") as f:
                    json.dump([r for row in results.values() for r in row["runs"]], f)
            down = "-" if row["downtime_ms"] is None else f"{row['downtime_ms']:.0f}"
            work = "-" if row["work"] is None else f"{row['work']:.1f}"
            done = ("yes" if row["digest_ok"] else "yes (digest?)") \
                if row["status"] == "completed" else f"no ({row['status']})"
            print(f"| {workload} | {row['rate']} | {mode} | {done} | {row['total_s']:.1f} | "
                  f"{down} | {row['sent_mib']:.0f} | {row['peak']:.0f} | {work} | "
                  f"{row['rounds']:.0f} | {row['cpu_s']:.2f} | {row['cpu_us_page']:.2f} | "
                  f"{row['overflow']:.0f} | "
                  f"{row['skipped']:.0f} | {row['encode_ms']:.1f} | "
                  f"{row['encode_ms_round']:.2f} |", flush=True)
            slow = [f"{r['total_s']:.1f}" for r in row["runs"]]
            print(f"  (runs: {', '.join(slow)} s; statuses "
                  f"{', '.join(r['status'] for r in row['runs'])})", flush=True)
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
    for workload in ("dense", "loadgen"):
        on = results.get((workload, "xbzrle/aware"))
        off = results.get((workload, "xbzrle/aware-nobackoff"))
        if on and off:
            ratio = off["encode_ms_round"] / on["encode_ms_round"] if on["encode_ms_round"] \
                else float("inf")
            print(f"{workload}: time inside the encoder with the overflow back-off "
                  f"{on['encode_ms']:.1f} ms ({on['encode_ms_round']:.2f} ms/round, "
                  f"{on['encoder_runs']:.0f} encoder runs), without "
                  f"{off['encode_ms']:.1f} ms ({off['encode_ms_round']:.2f} ms/round, "
                  f"{off['encoder_runs']:.0f} runs): x{ratio:.2f} per round; "
                  f"{on['skipped']:.0f} pages skipped the encoder; migration thread "
                  f"{on['cpu_us_page']:.2f} vs {off['cpu_us_page']:.2f} µs/page")
    print_pricing(results)
    return 0


def print_pricing(results: dict[tuple[str, str], dict]) -> None:
    """Is the aware rule's price of a dirty page right?  Its price against what was paid."""
    for (workload, mode), row in results.items():
        if mode == "xbzrle/aware":
            replays = [(replay_aware_rule(r["history"], False), replay_aware_rule(r["history"],
                                                                                  True))
                       for r in row["runs"]]
            print(f"{workload} {mode}: peak throttle replayed from the rounds "
                  f"{[last[0] for last, _ in replays]} with the rule's price, "
                  f"{[best[0] for _, best in replays]} with each sync's dirty pages priced at "
                  f"what the next round paid (verdicts agree on "
                  f"{sum(b[2] for _, b in replays)} of {sum(b[1] for _, b in replays)} periods)")
    for (workload, mode), row in results.items():
        if mode.startswith("xbzrle") and "priced_b" in row:
            # after the cache's warm-up round (all misses)
            miss_rate = statistics.median(
                sum(h["cache-miss"] for h in r["history"][2:])
                / max(1, sum(h["scanned"] - h["zero"] for h in r["history"][2:]))
                for r in row["runs"])
            print(f"{workload} {mode}: the aware rule's price of a dirty page "
                  f"{row['priced_b']:.0f} B, what the next round paid {row['real_b']:.0f} B "
                  f"(price/real x{row['price_ratio']:.2f}), cache miss rate after the warm-up "
                  f"round {miss_rate:.2f}")


if __name__ == "__main__":
    sys.exit(main())
