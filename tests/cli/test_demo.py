"""`xbzrle demo`, the README's main job, end to end as a user runs it."""

import json
import re
import subprocess
import sys

import pytest

from plot_support import assert_valid_png
from xbzrle.cli.demo import verdict
from xbzrle.cli.plot import demo_columns


def test_demo_shows_the_seeds_claim_and_prints_json(tmp_path):
    png = tmp_path / "demo.png"
    r = subprocess.run(
        [sys.executable, "-m", "xbzrle", "demo", "--ram", "64M", "--bandwidth", "16M",
         "--time-cap", "10", "--json", "--plot", str(png)],
        capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    # The picture: both runs side by side, drawn from the rounds the JSON reports.
    assert_valid_png(png)
    plain_series, xbzrle_series = demo_columns(result)
    for series, run in ((plain_series, result["plain"]), (xbzrle_series, result["xbzrle"])):
        assert series.dirty_pages == [rnd["dirty-pages"] for rnd in run["rounds"]]
        assert [a + b + c for a, b, c in zip(series.bytes_normal, series.bytes_xbzrle,
                                             series.bytes_zero, strict=True)] == \
            [rnd["wire-bytes"] for rnd in run["rounds"]]
    assert xbzrle_series.overflow == [rnd["overflow"] for rnd in result["xbzrle"]["rounds"]]
    assert plain_series.overflow == [None] * len(result["plain"]["rounds"])
    plain, xbz = result["plain"], result["xbzrle"]
    # Without XBZRLE the migration cannot converge under the cap: it is cancelled
    # and the source guest runs on.
    assert plain["status"] == "cancelled"
    assert plain["source-guest-running"] is True
    assert "xbzrle-cache" not in plain
    # With XBZRLE it completes, the destination verified the RAM digest and resumed.
    assert xbz["status"] == "completed"
    assert xbz["destination"]["digest-verified"] is True
    digests = xbz["destination"]["digests"]  # the evidence, not a repeat of the status
    assert digests["source"] and digests["source"] == digests["destination"]
    assert xbz["destination"]["workload-resumed"] is True
    assert xbz["xbzrle-cache"]["pages"] > 0
    # Completed without a round cap: the switch-over rule (expected downtime within
    # the limit) held.  The measured downtime is a wall-clock figure: benchmarks' job.
    assert isinstance(xbz["downtime"], int) and xbz["downtime"] >= 0
    assert xbz["ram"]["transferred"] < plain["ram"]["transferred"]


def test_demo_human_output_has_info_migrate_and_the_comparison():
    r = subprocess.run(
        [sys.executable, "-m", "xbzrle", "demo", "--ram", "32M", "--bandwidth", "16M",
         "--time-cap", "8"],
        capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "Migration status: completed" in out and "Migration status: cancelled" in out
    assert "xbzrle cache miss rate:" in out and "capabilities: xbzrle: on" in out
    assert "== comparison" in out
    assert "With XBZRLE the migration completed in " in out
    assert "; without it, it did not converge (cancelled after " in out
    # Live progress, as plain lines since stdout is not a terminal (the plain run
    # lasts the whole time cap, so it prints several).
    progress = re.findall(r"^ +[\d.]+ s  (?:active|setup) +round \d+: +\d+% of [\d.]+ MiB, "
                          r"[\d.]+ MiB/s, [\d.]+ MiB remaining", out, re.M)
    assert len(progress) >= 2, out


def run(status, sent_mib, seconds, **extra):
    return {"status": status, "total-time": int(seconds * 1000),
            "ram": {"transferred": sent_mib << 20}, **extra}


@pytest.mark.parametrize(("plain", "xbz", "expected"), [
    (run("completed", 130, 12.0), run("completed", 10, 1.0),
     "Both completed; XBZRLE sent 13x less and finished 12x sooner."),
    (run("completed", 20, 2.0), run("completed", 30, 3.0),
     "Both completed; XBZRLE sent 1.5x more and finished 1.5x later."),
    (run("cancelled", 600, 20.0), run("completed", 33, 1.0),
     "With XBZRLE the migration completed in 1.0 s after sending 33.0 MiB; without it, "
     "it did not converge (cancelled after 20.0 s)."),
    (run("completed", 64, 4.0), run("failed", 1, 0.1, **{"error-desc": "link down"}),
     "Without XBZRLE the migration completed in 4.0 s; with it, it failed (link down)."),
    (run("cancelled", 600, 20.0), run("cancelled", 600, 20.0),
     "Neither completed: without XBZRLE it did not converge (cancelled after 20.0 s); "
     "with it, it did not converge (cancelled after 20.0 s)."),
])
def test_the_verdict_reads_right_in_every_outcome(plain, xbz, expected):
    assert verdict(plain, xbz) == expected
