"""Workloads: deterministic, quiesced by stop(), resumable from copied RAM."""

from __future__ import annotations

import time

import pytest

from support import wait_until
from xbzrle import ParameterError, XbzrleError
from xbzrle.guest import PAGE_SIZE, Guest

KINDS = ("loadgen", "sparse", "dense", "hotcold")


def test_loadgen_is_the_seeds_generator():
    """Three passes over 16 MiB: every 1024th byte is 3, everything else 0."""
    with Guest("32M") as guest:
        guest.stop()
        load = guest.start_workload("loadgen")
        assert load.spec.pages == 4096
        assert load.step(3 * 4096) == 3 * 4096
        with memoryview(guest.blocks["pc.ram"]) as ram:
            region = ram[PAGE_SIZE : PAGE_SIZE + (16 << 20)]
            assert bytes(region[::1024]) == b"\x03" * (16 << 10)
            assert region.tobytes().count(0) == (16 << 20) - (16 << 10)
            assert ram[PAGE_SIZE + (16 << 20) :] == bytes((16 << 20) - PAGE_SIZE)


@pytest.mark.parametrize("kind", KINDS)
def test_step_is_deterministic_and_seeded(kind):
    digests = []
    for seed in (1, 1, 2):
        with Guest("4M") as guest:
            guest.stop()
            guest.start_workload(kind, seed=seed).step(500)
            digests.append(guest.digest())
    assert digests[0] == digests[1]
    assert kind == "loadgen" or digests[0] != digests[2]


@pytest.mark.parametrize("kind", KINDS)
def test_restored_guest_continues_where_the_source_stopped(kind):
    with Guest(blocks={"pc.ram": "8M", "extra": "2M"}) as source:
        work = source.start_workload(kind, rate=200_000, offset=64 * PAGE_SIZE)
        source.start_workload("sparse", "extra", rate=50_000)
        wait_until(lambda: work.ops >= 1000)
        source.stop()
        with Guest(blocks={"pc.ram": "8M", "extra": "2M"}) as target:
            for name, block in source.blocks.items():
                with memoryview(target.blocks[name]) as dst, memoryview(block) as src:
                    dst[:] = src
            target.stop()
            resumed = target.start_workload(kind, offset=64 * PAGE_SIZE)
            assert resumed.resumed and resumed.ops == work.ops
            target.start_workload("sparse", "extra")
            for a, b in zip(source.workloads, target.workloads, strict=True):
                a.step(777)
                b.step(777)
            assert source.digest() == target.digest()
            assert resumed.stats()["ops"] == work.ops


def test_stop_quiesces_and_cont_resumes():
    with Guest("16M") as guest:
        loads = [
            guest.start_workload(kind, offset=i * (4 << 20), size=(4 << 20) - PAGE_SIZE)
            for i, kind in enumerate(KINDS)
        ]
        wait_until(lambda: all(w.ops > 0 for w in loads))
        guest.stop()
        assert not guest.running and not any(w.running for w in loads)
        frozen, ops = guest.digest(), [w.ops for w in loads]
        time.sleep(0.2)  # a stopped guest must not write: give a wrong one the chance
        assert guest.digest() == frozen and [w.ops for w in loads] == ops
        assert all(n > 0 for n in ops)
        guest.cont()
        wait_until(lambda: all(w.ops > n for w, n in zip(loads, ops, strict=True)))
        guest.stop()
        assert all(w.ops > n for w, n in zip(loads, ops, strict=True))
        assert guest.digest() != frozen


def test_workloads_started_on_a_stopped_guest_wait_for_cont():
    with Guest("2M") as guest:
        guest.stop()
        load = guest.start_workload("sparse")
        time.sleep(0.05)  # a workload must not start before cont: give a wrong one the chance
        assert load.ops == 0 and not load.running
        guest.cont()
        wait_until(lambda: load.ops > 0)
        assert load.running


def test_rate_is_an_upper_bound():
    with Guest("2M") as guest:
        guest.stop()
        load = guest.start_workload("dense", rate=2000)
        begin = time.monotonic()
        guest.cont()
        time.sleep(0.3)
        guest.stop()
        elapsed = time.monotonic() - begin
        assert 0 < load.ops <= 2000 * elapsed + 1


def test_idle_writes_nothing_but_its_header():
    with Guest("4M") as guest:
        idle = guest.start_workload("idle")
        time.sleep(0.02)
        guest.stop()
        assert idle.ops == 0 and idle.step(100) == 0
        with memoryview(guest.blocks["pc.ram"]) as ram:
            assert ram[PAGE_SIZE:] == bytes(len(ram) - PAGE_SIZE)


def test_stats_report_pages_written_and_rate():
    with Guest("2M") as guest:
        guest.stop()
        load = guest.start_workload("sparse")
        load.step(10)
        stats = load.stats()
        assert stats["kind"] == "sparse" and stats["block"] == "pc.ram"
        assert stats["ops"] == stats["pages_written"] == 10
        assert stats["bytes_written"] == 80
        assert stats["dirty_rate"] >= 0 and not stats["running"]


def test_workload_errors_are_clear():
    with Guest("2M") as guest:
        with pytest.raises(ParameterError, match="unknown workload kind 'nope'"):
            guest.start_workload("nope")
        with pytest.raises(ParameterError, match="no RAM block"):
            guest.start_workload("sparse", block="vga.ram")
        with pytest.raises(ParameterError, match="size"):
            guest.start_workload("sparse", size="4M")
        with pytest.raises(ParameterError, match="hotcold"):
            guest.start_workload("sparse", hot_fraction=0.5)
        with pytest.raises(ParameterError):
            guest.start_workload("sparse", colour="blue")
        with pytest.raises(ParameterError, match="rate"):
            guest.start_workload("sparse", rate=-1)
        load = guest.start_workload("sparse", size=PAGE_SIZE * 8)
        with pytest.raises(ParameterError, match="overlaps"):
            guest.start_workload("dense", offset=PAGE_SIZE * 4)
        with pytest.raises(XbzrleError, match="stop the guest"):
            load.step(1)
        guest.stop_workload(load)
        with pytest.raises(ParameterError, match="another workload"):
            guest.start_workload("dense")
        with pytest.raises(ParameterError, match="to resume"):
            guest.start_workload("dense", resume=True)
        fresh = guest.start_workload("dense", resume=False)
        assert not fresh.resumed


def _ops_per_second(workload, seconds: float = 1.0) -> float:
    """Page writes per second over a window (a measured figure, never asserted alone)."""
    before, started = workload.ops, time.monotonic()
    time.sleep(seconds)
    return (workload.ops - before) / (time.monotonic() - started)


@pytest.mark.parametrize("pct", [50, 80])
def test_throttle_slows_the_workload_by_its_percentage_and_lifts(pct):
    """A fixed-rate vCPU keeps (100 - pct)% of its work while throttled, all of it after.

    The band is generous (the machine is shared); what must hold is that
    the throttle takes away about its share, no more and no less, without
    stopping the guest, and that lifting it gives the full rate back.
    """
    with Guest("8M") as guest:
        work = guest.start_workload("sparse", rate=100_000)
        free = _ops_per_second(work)
        guest.set_throttle(pct)
        assert guest.throttle == pct and work.throttle == pct and work.running
        throttled = _ops_per_second(work)
        guest.set_throttle(0)
        lifted = _ops_per_second(work)
        keep = (100 - pct) / 100
        assert keep * 0.6 < throttled / free < keep * 1.4
        assert lifted / free > 0.8
        assert work.throttled_seconds > 0 and guest.running


def test_throttle_applies_to_later_workloads_and_is_checked():
    with Guest("8M") as guest:
        guest.set_throttle(40)
        late = guest.start_workload("sparse", rate=10_000)
        assert late.throttle == 40
        for bad in (-1, 100, 1.5, True):
            with pytest.raises(ParameterError, match="throttle"):
                guest.set_throttle(bad)
        assert guest.throttle == 40
