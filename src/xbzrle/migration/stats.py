"""Migration statistics in the shape of QEMU's ``query-migrate``.

Pure bookkeeping.  The save and load loops return raw counts per batch;
:class:`MigrationStats` adds them up, keeps the rates QEMU reports over the
last period of at least one second, and a per-round history for reports.
Field names of :meth:`MigrationStats.to_qmp` are public API: add, never rename.

The rates follow QEMU's definitions: while a migration runs, ``mbps`` and
``pages-per-second`` describe the last period; once it has ended they
describe the whole transfer (bytes over total time minus setup time, as
QEMU's ``migration_calculate_complete``), so a capped link never reports
more than its cap.  ``dirty-pages-rate`` is pages dirtied per second over
dirty syncs spanning at least one second (QEMU's ``migration_bitmap_sync``),
never one short round divided by its length.  ``remaining`` falls as a pass
sends its pages, not only when the pass ends.
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
        d: dict[str, object] = {"round": self.index, "dirty-pages": self.dirty_pages,
             "duration": round(self.duration, 6), "dirty-pages-rate": round(self.dirty_rate),
             "final": self.final, "guest-ops": self.guest_ops, "cpu-throttle": self.throttle}
        d.update({k.replace("_", "-"): v for k, v in dataclasses.asdict(self.counts).items()})
        return d


@dataclass(frozen=True)
class PassProgress:
    """Where a running migration is, for progress displays (not part of QMP)."""

    round: int  # 1-based pass number
    pass_bytes: int  # dirty bytes the current pass started with
    remaining: int  # bytes of the current pass not yet handled
    transferred: int  # bytes on the wire so far
    mbps: float
    expected_downtime_ms: int

    @property
    def fraction(self) -> float:
        """Share of the current pass done, 0..1."""
        if self.pass_bytes <= 0:
            return 1.0
        return min(1.0, max(0.0, 1 - self.remaining / self.pass_bytes))

    def describe(self) -> str:
        """``round 3: 45% of 16.0 MiB, 7.9 MiB/s, 8.8 MiB remaining, sent 40.2 MiB, ...``."""
        mib = 1 << 20
        text = (f"round {self.round}: {self.fraction * 100:3.0f}% of "
                f"{self.pass_bytes / mib:.1f} MiB, {self.mbps * 1e6 / 8 / mib:.1f} MiB/s, "
                f"{self.remaining / mib:.1f} MiB remaining, sent {self.transferred / mib:.1f} MiB")
        if self.round > 1:
            text += f", expected downtime {self.expected_downtime_ms} ms"
        return text


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
    clock: Callable[[], float] = time.monotonic
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
    pages_per_second: float = 0.0
    pass_bytes: int = 0
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
        self.remaining = self.pass_bytes = self.total_ram
        self._dirty_period_start = self.start_time
        self._dirty_period_pages = 0

    # -- updates from the source loop ---------------------------------------
    def add_batch(self, counts: BatchCounts) -> None:
        self.totals.add(counts)
        # The pages a pass has handled are no longer remaining, even before it ends.
        self.remaining = max(0, self.remaining - counts.scanned * PAGE_SIZE)
        self._maybe_roll_window()

    def start_pass(self, dirty_pages: int) -> None:
        """A dirty sync found ``dirty_pages`` for the next pass: count them, rate them.

        The dirty rate is taken over syncs spanning at least ``RATE_PERIOD``,
        as QEMU does, so a 20 ms round cannot claim a million pages a second.
        """
        self.remaining = self.pass_bytes = dirty_pages * PAGE_SIZE
        now = self.clock()
        self._dirty_period_pages += dirty_pages
        elapsed = now - self._dirty_period_start
        if elapsed >= RATE_PERIOD:
            self.dirty_pages_rate = self._dirty_period_pages / elapsed
            self._dirty_period_start, self._dirty_period_pages = now, 0

    def progress(self) -> PassProgress:
        """The current pass's progress, for displays."""
        mbps = self.mbps
        elapsed = self.clock() - self.start_time
        if not mbps and elapsed > 0:  # the first period is not over: the average so far
            mbps = self.totals.wire_bytes * 8 / elapsed / 1e6
        return PassProgress(self.dirty_sync_count + 1 if self.end_time is None
                            else self.dirty_sync_count, self.pass_bytes, self.remaining,
                            self.totals.wire_bytes, mbps, self.expected_downtime_ms)

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
            self.pages_per_second = d_pages / elapsed
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
        """The migration ended: rates now describe the whole transfer, as QEMU's do."""
        self._maybe_roll_window(force=True)
        self.end_time = self.clock()
        transfer = self.end_time - self.start_time - self.setup_time_ms / 1000
        if transfer > 0:
            t = self.totals
            self.mbps = t.wire_bytes * 8 / transfer / 1e6
            self.pages_per_second = (t.zero + t.normal + t.xbzrle) / transfer

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
            "pages-per-second": int(self.pages_per_second),
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
            # ours: microseconds the save loop spent inside the encoder (what the back-off
            # saves), estimated from a sample of runs, rounded up: a migration that ran
            # the encoder at all shows it
            "x-encode-time": -(-t.encode_time_ns // 1000),
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
