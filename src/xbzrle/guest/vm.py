"""``xbzrle vm``: run a guest with one workload and print its dirty rate."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from .machine import Guest
from .sizes import PAGE_SIZE


def format_rate(pages_per_s: float) -> str:
    """``"123456 pages/s (505.7 MB/s)"``, MB being 10**6 bytes."""
    return f"{pages_per_s:.0f} pages/s ({pages_per_s * PAGE_SIZE / 1e6:.1f} MB/s)"


def run_vm(
    ram: str = "1G",
    workload: str = "loadgen",
    rate: float = 0,
    tracker: str = "auto",
    seconds: float | None = None,
    out: TextIO = sys.stdout,
    interval: float = 1.0,
) -> int:
    """Run until Ctrl-C (or ``seconds``), printing each interval's rates.

    "page writes" counts the workload's operations (each writes one page);
    "dirty" counts distinct pages the dirty log reports: what a migration
    would have to resend.  Returns the exit status (0, also on Ctrl-C).
    """
    with Guest(ram, tracker=tracker) as guest:
        log = guest.dirty_log
        print(
            f"guest: {guest.ram_size >> 20} MiB, workload {workload}, "
            f"rate {'flat out' if not rate else f'{rate:g} pages/s'}, tracker {log.tracker}",
            file=out,
            flush=True,
        )
        load = guest.start_workload(workload, rate=rate)
        load.stats()
        log.sync()
        started = last = time.monotonic()
        try:
            while seconds is None or last - started < seconds:
                time.sleep(max(0.0, last + interval - time.monotonic()))
                dirty = sum(b.count() for b in log.sync().values())
                now = time.monotonic()
                written = load.stats()["dirty_rate"]
                print(
                    f"{now - started:7.1f}s  page writes {written:.0f}/s  "
                    f"dirty {format_rate(dirty / (now - last))}",
                    file=out,
                    flush=True,
                )
                last = now
        except KeyboardInterrupt:
            print("interrupted", file=out, flush=True)
        guest.stop()
    return 0
