"""Cost of a dirty-log sync per tracker, and the workloads' dirty rates.

    PYTHONPATH=src python benchmarks/dirty.py [--quick]

Sync: RAM of 1 GiB and 8 GiB with 1% and 10% of its pages written (one
byte each, spread evenly) before each sync; median of a few runs.  The
8 GiB guest is touched only where written (10% = 820 MiB resident).
Workloads: each kind flat out on a populated 1 GiB guest for a second, with
the uffd tracker: page writes per second and distinct dirty pages per second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from xbzrle.guest import PAGE_SIZE, Guest

TRACKERS = ("uffd", "bitmap", "scan")
KINDS = ("loadgen", "sparse", "dense", "hotcold", "idle")


def dirty_pages(guest: Guest, share: float, round_: int) -> int:
    """Write one byte in ``share`` of the pages; tell the bitmap tracker too."""
    block = guest.blocks["pc.ram"]
    step = round(1 / share)
    pages = np.arange(round_ % step, block.npages, step, dtype=np.int64)
    ram = np.frombuffer(block, dtype=np.uint8)
    ram[pages * PAGE_SIZE + 8] += 1
    del ram
    if guest.dirty_log.tracker == "bitmap":
        soft = guest.dirty_log.soft_tracker("pc.ram")
        for page in pages.tolist():
            soft.mark(page)
    return len(pages)


def time_syncs(size: str, tracker: str, share: float, runs: int) -> tuple[float, float]:
    """(seconds to create the guest and arm tracking, median seconds per sync)."""
    begin = time.perf_counter()
    guest = Guest(size, tracker=tracker)
    armed = time.perf_counter() - begin
    try:
        guest.dirty_log.sync()  # first scan maps the zero page everywhere: not timed
        costs = []
        for round_ in range(runs):
            expected = dirty_pages(guest, share, round_)
            begin = time.perf_counter()
            found = guest.dirty_log.sync()["pc.ram"].count()
            costs.append(time.perf_counter() - begin)
            if found != expected:
                raise SystemExit(f"{tracker}: {found} pages reported, {expected} written")
        return armed, statistics.median(costs)
    finally:
        guest.close()


def workload_rates(kind: str, seconds: float) -> tuple[float, float]:
    with Guest("1G", tracker="uffd") as guest:
        ram = np.frombuffer(guest.blocks["pc.ram"], dtype=np.uint8)
        ram[:] = 1  # populated RAM: measure steady state, not first-touch faults
        del ram
        load = guest.start_workload(kind, resume=False)
        guest.dirty_log.sync()
        load.stats()
        time.sleep(seconds)
        writes = load.stats()["dirty_rate"]
        dirty = guest.dirty_log.sync()["pc.ram"].count() / seconds
        guest.stop()
        return writes, dirty


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 GiB only, fewer runs")
    args = parser.parse_args(argv)
    sizes = ("1G",) if args.quick else ("1G", "8G")
    runs = 3 if args.quick else 5
    print(f"{'RAM':>4} {'dirty':>5} {'tracker':>7} {'arm ms':>8} {'sync ms':>8}")
    for size in sizes:
        for share in (0.01, 0.10):
            for tracker in TRACKERS:
                armed, cost = time_syncs(size, tracker, share, runs)
                print(f"{size:>4} {share:>5.0%} {tracker:>7} {armed * 1e3:8.1f} {cost * 1e3:8.2f}")
                sys.stdout.flush()
    print()
    print(f"{'workload':>8} {'page writes/s':>14} {'dirty pages/s':>14} {'dirty MB/s':>10}")
    for kind in KINDS:
        writes, dirty = workload_rates(kind, 0.5 if args.quick else 1.0)
        print(f"{kind:>8} {writes:14.0f} {dirty:14.0f} {dirty * PAGE_SIZE / 1e6:10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
