"""Auto-converge: when to slow the guest down, and by how much.

Pure logic over the figures of a migration's dirty-log syncs: no clock, no
I/O, no threads (the caller passes the time of each sync).  Two trigger
rules share one throttle ladder:

* **QEMU's rule** (``migration_trigger_throttle`` in QEMU's
  migration/ram.c): over a period of at least one second of syncs, the
  guest dirtied ``dirty_pages x 4096`` bytes while the link carried
  ``transferred`` bytes.  If the dirty bytes exceed ``threshold`` percent of
  the transferred bytes, a counter goes up; the second time it does, the
  counter is reset and the throttle steps up.  (QEMU never resets the counter
  on a period below the threshold, so "twice" need not be in a row; we count
  as QEMU does.)
* **The XBZRLE-aware rule**: the same comparison, but the dirty pages are
  priced at what they will really cost on the wire, the last round's wire
  bytes per page sent, instead of a whole page each.  A guest whose
  dirty pages XBZRLE sends in 60 bytes is not throttled for dirtying 4 KiB
  pages; a guest whose pages overflow the encoder costs a whole page either
  way, and both rules treat it alike.

One round is not judged by the aware rule: the first XBZRLE round.  The
first round leaves the cache empty, so the first XBZRLE round finds every
page missing and sends it whole; the pages dirtied meanwhile will be cache
hits in the next round, and that round's cost says nothing about theirs
(as the plain first round says nothing about a dirty page's cost).  A
period ending on that round is closed without a verdict: the count neither
rises nor falls.  Only that one round: a guest whose pages keep missing the
cache is judged by the whole pages it really costs.

The ladder (QEMU's ``mig_throttle_guest_down``): the first step sets
``cpu-throttle-initial``; later steps add ``cpu-throttle-increment``, capped
at ``max-cpu-throttle``.  With ``cpu-throttle-tailslow`` a later step adds
only what should bring the dirty cost down to the threshold: with
``cpu = 100 - throttle``, ``ideal = int(cpu * threshold_bytes / dirty_bytes)``
and the step is ``min(cpu - ideal, increment)``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..sizes import PAGE_SIZE

#: Bytes a page costs in a plain round: the page and its 8-byte record header.
PLAIN_PAGE_COST = PAGE_SIZE + 8
#: QEMU evaluates the trigger once a period of syncs spans more than 1 s.
PERIOD_SECONDS = 1.0


class TriggerRule(enum.StrEnum):
    """Which dirty figure the trigger compares with the bytes the link carried."""

    RAW = "raw"  # QEMU's: dirty pages x page size
    XBZRLE = "xbzrle"  # dirty pages x the last round's wire bytes per page


@dataclass(frozen=True)
class ThrottleSettings:
    """The auto-converge parameters, in QEMU's meaning (see :mod:`.params`)."""

    threshold: int = 50  # throttle-trigger-threshold, percent
    initial: int = 20  # cpu-throttle-initial
    increment: int = 10  # cpu-throttle-increment
    tailslow: bool = False  # cpu-throttle-tailslow
    max_throttle: int = 99  # max-cpu-throttle


def page_wire_cost(wire_bytes: int, pages: int, plain_round: bool) -> float:
    """What one dirty page will cost on the wire, judged by the last round.

    A plain round (the first one, or XBZRLE off) is mostly never-touched
    zero pages, which say nothing about a dirty page: a whole page is
    assumed, as QEMU always does.  An XBZRLE round's figure mixes encoded
    pages, cache misses and overflows exactly as the next round will.
    """
    if plain_round or pages <= 0:
        return float(PLAIN_PAGE_COST)
    return wire_bytes / pages


def dirty_cost(dirty_pages: int, rule: TriggerRule, page_cost: float) -> int:
    """Bytes the trigger holds against the link for ``dirty_pages`` dirtied pages."""
    if rule is TriggerRule.RAW:
        return dirty_pages * PAGE_SIZE
    return int(dirty_pages * page_cost)


def dirty_threshold(transferred: int, threshold_pct: int) -> int:
    """``threshold`` percent of the bytes transferred in the period (integer, as QEMU)."""
    return transferred * threshold_pct // 100


def next_throttle(current: int, dirty_bytes: int, threshold_bytes: int,
                  settings: ThrottleSettings) -> int:
    """One step of the ladder from ``current`` percent (0 = not throttling yet)."""
    if current <= 0:
        step_to = settings.initial
    else:
        if settings.tailslow and dirty_bytes > 0:
            cpu_now = 100 - current
            cpu_ideal = int(cpu_now * (threshold_bytes / dirty_bytes))
            increment = min(cpu_now - cpu_ideal, settings.increment)
        else:
            increment = settings.increment
        step_to = min(current + increment, settings.max_throttle)
    return max(1, min(99, step_to))  # cpu_throttle_set's range


@dataclass
class Decision:
    """What one evaluated period showed (for reports and tests)."""

    dirty_bytes: int
    threshold_bytes: int
    over: bool
    throttle: int  # percent after this period
    judged: bool = True  # False: the XBZRLE rule's warm-up period, no verdict


class AutoConverge:
    """The trigger's state over one migration: feed it every sync, get the throttle.

    ``sync(now, dirty_pages, transferred_total, page_cost)`` is called after
    each dirty-log sync of the live phase: ``now`` in seconds (any clock),
    the pages the sync found dirty, the migration's wire bytes so far and
    the last round's wire cost of a page (:func:`page_wire_cost`).  It
    returns a :class:`Decision` when a period of more than one second ended,
    else None; :attr:`throttle` is the percentage the guest should run at.
    """

    def __init__(self, settings: ThrottleSettings, rule: TriggerRule, now: float,
                 transferred: int = 0) -> None:
        self.settings = settings
        self.rule = rule
        self.throttle = 0
        self.peak = 0
        self.high_count = 0
        self._period_start = now
        self._period_pages = 0
        self._transferred_prev = transferred

    def sync(self, now: float, dirty_pages: int, transferred_total: int,
             page_cost: float | None) -> Decision | None:
        self._period_pages += dirty_pages
        if now - self._period_start <= PERIOD_SECONDS:
            return None
        transferred = transferred_total - self._transferred_prev
        limit = dirty_threshold(transferred, self.settings.threshold)
        if page_cost is None and self.rule is TriggerRule.XBZRLE:
            self._close_period(now, transferred_total)
            return Decision(0, limit, False, self.throttle, judged=False)
        dirty = dirty_cost(self._period_pages, self.rule, page_cost or PLAIN_PAGE_COST)
        over = dirty > limit
        if over:
            self.high_count += 1
            if self.high_count >= 2:
                self.high_count = 0
                self.throttle = next_throttle(self.throttle, dirty, limit, self.settings)
                self.peak = max(self.peak, self.throttle)
        self._close_period(now, transferred_total)
        return Decision(dirty, limit, over, self.throttle)

    def _close_period(self, now: float, transferred_total: int) -> None:
        self._period_start = now
        self._period_pages = 0
        self._transferred_prev = transferred_total
