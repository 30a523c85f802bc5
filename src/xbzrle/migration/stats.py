"""Migration statistics in the shape of QEMU's ``query-migrate``.

Pure bookkeeping.  The save and load loops return raw counts per batch;
:class:`MigrationStats` adds them up, keeps the rates QEMU reports over the
last period of at least one second, and a per-round history for reports.
Field names of :meth:`MigrationStats.to_qmp` are public API: add, never rename.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..sizes import PAGE_SIZE
from ..stream.counts import BatchCounts

RATE_PERIOD = 1.0  # seconds, as QEMU


@dataclass
class RoundRecord:
    """One pass over the dirty pages, for reports and plots."""

    index: int
    dirty_pages: int  # pages the round started with
    counts: BatchCounts
    duration: float  # seconds
    dirty_rate: float  # pages/s dirtied while the previous round ran
    final: bool = False
    guest_ops: int = 0  # page writes the guest did while the round ran
    throttle: int = 0  # CPU throttle percentage at the end of the round

    def to_dict(self) -> dict[str, object]:
        d = {"round": self.index, "dirty-pages": self.dirty_pages,
             "duration": round(self.duration, 6), "dirty-pages-rate": round(self.dirty_rate),
             "final": self.final, "guest-ops": self.guest_ops, "cpu-throttle": self.throttle}
        d.update({k.replace("_", "-"): v for k, v in dataclasses.asdict(self.counts).items()})
        return d


@dataclass
class _RateWindow:
    start: float
    pages: int = 0
    xbzrle_pages: int = 0
    xbzrle_bytes: int = 0
    cache_miss: int = 0
    wire_bytes: int = 0


@dataclass
class MigrationStats:
    """Everything ``query-migrate`` reports for one migration (fresh per migration)."""

    total_ram: int
    xbzrle: bool
    cache_size: int = 0
    clock: object = time.monotonic
    totals: BatchCounts = field(default_factory=BatchCounts)
    remaining: int = 0
    dirty_sync_count: int = 0
    dirty_pages_rate: float = 0.0
    start_time: float = 0.0
    setup_time_ms: int = 0
    end_time: float | None = None
    downtime_ms: int | None = None
    expected_downtime_ms: int = 0
    mbps: float = 0.0
    cache_miss_rate: float = 0.0
    encoding_rate: float = 0.0
    history: list[RoundRecord] = field(default_factory=list)
    auto_converge: bool = False
    cpu_throttle_percentage: int = 0
    peak_throttle: int = 0
    # The guest's cost (source only): page writes during the live phase
    # against the same guest unthrottled and unmigrated.
    guest_work_start: float | None = None
    guest_work_end: float | None = None
    guest_ops_start: int = 0
    guest_ops_end: int | None = None
    guest_reference_rate: float | None = None  # ops/s without migration, if known up front
    guest_ops_reader: Callable[[], int] | None = None

    def __post_init__(self) -> None:
        self.start_time = self.clock()
        self._window = _RateWindow(self.start_time)
        self.remaining = self.total_ram

    # -- updates from the source loop ---------------------------------------
    def add_batch(self, counts: BatchCounts) -> None:
        self.totals.add(counts)
        self._maybe_roll_window()

    def add_wire_bytes(self, n: int) -> None:
        """Bytes outside page records (section headers, EOS, digest)."""
        self.totals.wire_bytes += n

    def _maybe_roll_window(self, force: bool = False) -> None:
        now = self.clock()
        w = self._window
        elapsed = now - w.start
        if elapsed < RATE_PERIOD and not force:
            return
        t = self.totals
        pages = t.zero + t.normal + t.xbzrle
        d_pages = pages - w.pages
        d_xpages = t.xbzrle - w.xbzrle_pages
        d_xbytes = t.xbzrle_bytes - w.xbzrle_bytes
        d_miss = t.cache_miss - w.cache_miss
        if elapsed > 0:
            self.mbps = (t.wire_bytes - w.wire_bytes) * 8 / elapsed / 1e6
        if d_pages > 0:
            self.cache_miss_rate = d_miss / d_pages
        if d_xbytes > 0:
            self.encoding_rate = d_xpages * PAGE_SIZE / d_xbytes
        self._window = _RateWindow(now, pages, t.xbzrle, t.xbzrle_bytes, t.cache_miss,
                                   t.wire_bytes)

    def start_guest_work(self, now: float, ops_reader: Callable[[], int],
                         reference_rate: float | None) -> None:
        """The live phase starts: count the guest's page writes from here.

        ``reference_rate`` is what the guest does without migration (page
        writes/s); None means "measure it": the first round, which runs
        before any throttle can be set, is taken as the reference.
        """
        self.guest_work_start = now
        self.guest_ops_reader = ops_reader
        self.guest_ops_start = ops_reader()
        self.guest_reference_rate = reference_rate

    def end_guest_work(self, now: float) -> None:
        """The guest stops for the switch-over: the live phase's work is final."""
        if self.guest_work_start is not None and self.guest_ops_reader is not None:
            self.guest_work_end = now
            self.guest_ops_end = self.guest_ops_reader()

    def reference_rate(self) -> float | None:
        if self.guest_reference_rate is not None:
            return self.guest_reference_rate
        first = self.history[0] if self.history else None
        if first is None or first.duration <= 0 or first.guest_ops <= 0:
            return None
        return first.guest_ops / first.duration

    def guest_work_percent(self) -> float | None:
        """Page writes during the live phase as a percentage of the unthrottled guest's."""
        start, reader = self.guest_work_start, self.guest_ops_reader
        reference = self.reference_rate()
        if start is None or reader is None or not reference:
            return None
        end = self.guest_work_end if self.guest_work_end is not None else self.clock()
        ops = self.guest_ops_end if self.guest_ops_end is not None else reader()
        if end <= start:
            return None
        return 100.0 * (ops - self.guest_ops_start) / (reference * (end - start))

    def finish(self) -> None:
        self._maybe_roll_window(force=True)
        self.end_time = self.clock()

    # -- report --------------------------------------------------------------
    def total_time_ms(self) -> int:
        end = self.end_time if self.end_time is not None else self.clock()
        return int((end - self.start_time) * 1000)

    def ram_dict(self) -> dict[str, object]:
        t = self.totals
        return {
            "transferred": t.wire_bytes,
            "remaining": self.remaining,
            "total": self.total_ram,
            "duplicate": t.zero,
            "skipped": 0,
            "normal": t.normal,
            "normal-bytes": t.normal * PAGE_SIZE,
            "dirty-sync-count": self.dirty_sync_count,
            "dirty-pages-rate": int(self.dirty_pages_rate),
            "mbps": round(self.mbps, 3),
            "page-size": PAGE_SIZE,
            "pages-per-second": int(self.mbps * 1e6 / 8 / PAGE_SIZE) if self.mbps else 0,
        }

    def xbzrle_dict(self) -> dict[str, object]:
        t = self.totals
        return {
            "cache-size": self.cache_size,
            "bytes": t.xbzrle_bytes,
            "pages": t.cache_hits,
            "cache-miss": t.cache_miss,
            "cache-miss-rate": round(self.cache_miss_rate, 6),
            "encoding-rate": round(self.encoding_rate, 6),
            "overflow": t.overflow,
            # ours: cache hits sent whole without running the encoder (overflow back-off)
            "skipped-overflow": t.skipped_overflow,
        }

    def to_qmp(self, status: str) -> dict[str, object]:
        info: dict[str, object] = {"status": status}
        info["total-time"] = self.total_time_ms()
        if self.downtime_ms is not None:
            info["downtime"] = self.downtime_ms
        elif status in ("active", "device"):
            info["expected-downtime"] = self.expected_downtime_ms
        info["setup-time"] = self.setup_time_ms
        info["ram"] = self.ram_dict()
        if self.xbzrle:
            info["xbzrle-cache"] = self.xbzrle_dict()
        if self.auto_converge:
            info["cpu-throttle-percentage"] = self.cpu_throttle_percentage
        work = self.guest_work_percent()
        if work is not None:
            info["x-guest-work-percent"] = round(work, 1)
        return info

    def history_dicts(self) -> list[dict[str, object]]:
        reference = self.reference_rate()
        rounds = []
        for r in self.history:
            d = r.to_dict()
            if reference and r.duration > 0 and not r.final:
                d["guest-work-percent"] = round(100.0 * r.guest_ops / r.duration / reference, 1)
            rounds.append(d)
        return rounds
