"""Auto-converge trigger rules on synthetic round figures (pure: no clock, no guest)."""

from __future__ import annotations

import pytest

from xbzrle.migration.throttle import (
    PLAIN_PAGE_COST,
    AutoConverge,
    ThrottleSettings,
    TriggerRule,
    dirty_cost,
    next_throttle,
    page_wire_cost,
)
from xbzrle.sizes import PAGE_SIZE

MiB = 1 << 20
LINK = 32 * MiB  # bytes the link carries per one-second period


def run(rule: TriggerRule, periods: list[tuple[int, float]], settings=None):
    """Feed one sync per 1.5 s period: (dirty pages, wire cost of a page); throttle after each."""
    ac = AutoConverge(settings or ThrottleSettings(), rule, now=0.0)
    seen, total = [], 0
    for i, (pages, cost) in enumerate(periods, start=1):
        total += LINK
        decision = ac.sync(1.5 * i, pages, total, cost)
        assert decision is not None
        seen.append(ac.throttle)
    return ac, seen


def test_qemu_rule_steps_on_every_second_period_over_the_threshold():
    # 8192 dirty pages = 32 MiB dirtied against 32 MiB carried: over 50 %.
    ac, seen = run(TriggerRule.RAW, [(8192, PLAIN_PAGE_COST)] * 6)
    assert seen == [0, 20, 20, 30, 30, 40]
    assert ac.peak == 40


def test_the_count_is_not_reset_by_a_period_under_the_threshold():
    """QEMU only resets dirty_rate_high_cnt when it throttles: over, under, over steps."""
    _, seen = run(TriggerRule.RAW, [(8192, 0), (10, 0), (8192, 0)])
    assert seen == [0, 0, 20]


def test_dirty_bytes_equal_to_the_threshold_do_not_count():
    exactly = LINK // 2 // PAGE_SIZE  # 50 % of the link, not more
    _, seen = run(TriggerRule.RAW, [(exactly, 0)] * 4)
    assert seen == [0, 0, 0, 0]
    _, seen = run(TriggerRule.RAW, [(exactly + 1, 0)] * 2)
    assert seen == [0, 20]


def test_xbzrle_rule_prices_pages_at_their_wire_cost():
    """32 MiB of dirty pages that XBZRLE sends in 64 bytes each: 512 KiB, far under 16 MiB."""
    _, aware = run(TriggerRule.XBZRLE, [(8192, 64.0)] * 6)
    _, raw = run(TriggerRule.RAW, [(8192, 64.0)] * 6)
    assert aware == [0] * 6
    assert raw[-1] == 40


def test_xbzrle_rule_throttles_what_does_not_fit_even_compressed():
    # 200k dirty pages at 300 bytes each = 60 MB > 16 MiB: the aware rule throttles too.
    _, seen = run(TriggerRule.XBZRLE, [(200_000, 300.0)] * 4)
    assert seen == [0, 20, 20, 30]


def test_overflowing_pages_cost_a_page_under_both_rules():
    cost = page_wire_cost(wire_bytes=8192 * PLAIN_PAGE_COST, pages=8192, plain_round=False)
    assert cost == PLAIN_PAGE_COST
    assert dirty_cost(1000, TriggerRule.XBZRLE, cost) >= dirty_cost(1000, TriggerRule.RAW, cost)


def test_a_plain_round_says_a_page_costs_a_page():
    assert page_wire_cost(10, 1000, plain_round=True) == PLAIN_PAGE_COST
    assert page_wire_cost(0, 0, plain_round=False) == PLAIN_PAGE_COST
    assert page_wire_cost(64_000, 1000, plain_round=False) == 64.0


def test_ladder_caps_at_max_and_stays_in_cpu_throttle_range():
    s = ThrottleSettings(initial=30, increment=25, max_throttle=60)
    assert next_throttle(0, 10, 1, s) == 30
    assert next_throttle(30, 10, 1, s) == 55
    assert next_throttle(55, 10, 1, s) == 60
    assert next_throttle(60, 10, 1, s) == 60
    assert next_throttle(98, 10, 1, ThrottleSettings(increment=10)) == 99


@pytest.mark.parametrize(("current", "dirty", "limit", "expected"), [
    (20, 100, 90, 20 + 8),   # cpu 80 -> ideal int(72.0) = 72: step 8 (< increment 10)
    (20, 100, 10, 20 + 10),  # far over: the full increment
    (50, 100, 99, 50 + 1),   # ideal int(49.5) = 49: step 1
    (50, 1000, 999, 50 + 1), # ideal int(49.95) = 49: truncation makes it 1, not 0
    (80, 101, 100, 80 + 1),  # cpu 20 -> ideal int(19.80...) = 19
])
def test_tailslow_steps_only_toward_the_threshold(current, dirty, limit, expected):
    s = ThrottleSettings(tailslow=True, increment=10)
    assert next_throttle(current, dirty, limit, s) == expected
    assert next_throttle(0, dirty, limit, s) == s.initial  # the first step is always initial


def test_periods_shorter_than_a_second_accumulate():
    ac = AutoConverge(ThrottleSettings(), TriggerRule.RAW, now=10.0, transferred=1000)
    assert ac.sync(10.4, 3000, 1000 + 5 * MiB, PLAIN_PAGE_COST) is None
    assert ac.sync(10.9, 3000, 1000 + 9 * MiB, PLAIN_PAGE_COST) is None
    d = ac.sync(11.2, 3000, 1000 + 12 * MiB, PLAIN_PAGE_COST)
    assert d is not None and d.over
    assert d.dirty_bytes == 9000 * PAGE_SIZE and d.threshold_bytes == 6 * MiB
    d = ac.sync(12.5, 1, 1000 + 20 * MiB, PLAIN_PAGE_COST)  # a new period from 11.2
    assert d is not None and not d.over and d.threshold_bytes == 4 * MiB


def test_a_period_that_carried_nothing_counts_any_dirty_page():
    ac = AutoConverge(ThrottleSettings(), TriggerRule.XBZRLE, now=0.0)
    assert ac.sync(2.0, 1, 0, 10.0).over
    assert not ac.sync(4.0, 0, 0, 10.0).over


def test_the_cache_warm_up_round_gets_no_verdict_from_the_aware_rule():
    """The first XBZRLE round only fills the cache: the aware rule waits for a real figure."""
    aware = AutoConverge(ThrottleSettings(), TriggerRule.XBZRLE, now=0.0)
    raw = AutoConverge(ThrottleSettings(), TriggerRule.RAW, now=0.0)
    figures = [(8192, PLAIN_PAGE_COST), (8192, None), (8192, 64.0), (8192, 64.0)]
    for i, (pages, cost) in enumerate(figures, start=1):
        a = aware.sync(1.5 * i, pages, i * LINK, cost)
        r = raw.sync(1.5 * i, pages, i * LINK, cost)
        assert r.judged and r.over
        assert a.judged == (cost is not None)
    assert aware.throttle == 0 and aware.high_count == 1  # only the plain round counted
    assert raw.throttle == 30
    # A warm-up that costs whole pages afterwards too is judged from the next period on.
    ac = AutoConverge(ThrottleSettings(), TriggerRule.XBZRLE, now=0.0)
    for i, cost in enumerate([PLAIN_PAGE_COST, None, 3000.0], start=1):
        ac.sync(1.5 * i, 8192, i * LINK, cost)
    assert ac.throttle == 20
