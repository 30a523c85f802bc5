"""Migration statistics in the shape of QEMU's ``query-migrate``.

Pure bookkeeping.  The save and load loops return raw counts per batch;
:class:`MigrationStats` adds them up, keeps the rates QEMU reports over the
last period of at least one second, and a per-round history for reports.
Field names of :meth:`MigrationStats.to_qmp` are public API: add, never rename.
"""

from __future__ import annotations

import dataclasses
import time
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

    def to_dict(self) -> dict[str, object]:
        d = {"round": self.index, "dirty-pages": self.dirty_pages,
             "duration": round(self.duration, 6), "dirty-pages-rate": round(self.dirty_rate),
             "final": self.final}
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
        return info

    def history_dicts(self) -> list[dict[str, object]]:
        return [r.to_dict() for r in self.history]
