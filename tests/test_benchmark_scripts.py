"""The benchmark scripts that are cheap at a small size still run (figures are not checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from support import BENCHMARKS, load_benchmark


@pytest.mark.parametrize("script, args, marker", [
    ("pipeline.py", ["--size-mib", "1", "--repeats", "1"], "x memcmp"),
    ("pipeline.py", ["--size-mib", "1", "--repeats", "1", "--backing", "huge"], "x memcmp"),
    ("pipeline.py", ["--size-mib", "1", "--repeats", "1", "--path", "portable"],
     "SIMD path portable"),
    ("codec.py", ["--size-mib", "1", "--repeats", "1", "--case", "seed", "--backing", "huge"],
     "(huge backing)"),
    ("wire.py", ["--size", "16M", "--runs", "1", "--no-qemu", "--only", "exec,file,floor"],
     "source into file: no slower than into exec:"),
])
def test_benchmark_script_runs_and_prints_its_table(script, args, marker):
    kept = set(Path("/dev/shm").glob("xbzrle-wire-*"))  # wire.py keeps its RAM file there
    try:
        done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args],
                              capture_output=True, text=True, timeout=300)
    finally:
        for made in set(Path("/dev/shm").glob("xbzrle-wire-*")) - kept:
            made.unlink()
    assert done.returncode == 0, done.stderr
    assert marker in done.stdout and "Traceback" not in done.stderr


def _wire_script():
    return load_benchmark("wire_benchmark_script", "wire")


def test_wire_goal_report_names_the_floor_that_puts_a_goal_out_of_reach():
    wire = _wire_script()
    size = 1 << 30
    report = wire.goal_report(size, {
        "tcp-qemu-warm": 0.586, "tcp-ours-warm": 0.692,  # 2x allows 0.293 s
        "tcp-qemu-cold": 1.560, "tcp-ours-cold": 0.685,  # 2x allows 0.780 s
        "floor-tcp": 0.324,
        "exec": 0.350, "file": 0.630, "floor-write": 0.479,
        "extract": 0.950,
    })
    by_goal = {line.split(" allows ")[0].strip(): line for line in report}
    assert by_goal["TCP at 2x QEMU 7.2's rate, host memory cold"].endswith(": met")
    assert "out of reach here: the loopback TCP floor (nothing parsed" in \
        by_goal["TCP at 2x QEMU 7.2's rate, host memory warm"]
    assert by_goal["source into exec: at 3 GB/s"].endswith(": met")  # 3 GB/s allows 0.358 s
    assert "out of reach here: the tmpfs write floor alone takes 0.479 s" in \
        by_goal["source into file: no slower than into exec:"]
    # The write floor (0.479 s) fits in what 1.5 GB/s allows (0.716 s): not out of reach.
    assert by_goal["extract at 1.5 GB/s"].endswith(": not met")


def test_wire_goal_report_counts_the_work_of_a_transfer_spread_over_the_cores():
    """The transfer alone fits in what 2x QEMU allows, but its CPU, one copy of
    the RAM and the fresh memory for it, over the cores there are, do not."""
    report = _wire_script().goal_report(1 << 30, {
        "tcp-qemu-warm": 0.565, "tcp-ours-warm": 0.709,  # 2x allows 0.2825 s
        "floor-tcp": 0.258, "floor-tcp-work": 0.290,
    })
    assert len(report) == 1 and report[0].endswith(
        "out of reach here: the TCP floor's CPU on both sides, one copy of the RAM and "
        "populating fresh RAM for it, spread over this machine's cores, alone takes 0.290 s")


def test_wire_goal_report_leaves_out_what_the_run_did_not_measure():
    report = _wire_script().goal_report(1 << 30, {"exec": 0.30})
    assert report == ["  source into exec: at 3 GB/s                      allows  0.358 s, "
                      "ours  0.300 s: met"]
