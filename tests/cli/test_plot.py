"""Pictures: `analyze --plot`, `demo --plot` (in test_demo), the series they draw."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plot_support import assert_valid_png
from xbzrle.cli.plot import migration_series, stream_series
from xbzrle.guest import Guest
from xbzrle.migration.manager import MigrationManager
from xbzrle.sizes import PAGE_SIZE


@pytest.fixture(scope="module")
def xbzrle_stream(tmp_path_factory) -> Path:
    """A real XBZRLE migration saved to a file: several rounds under a slow link."""
    path = tmp_path_factory.mktemp("stream") / "vm.bin"
    with Guest(ram="32M") as guest:
        guest.start_workload("loadgen", rate=8192)
        while guest.pages_written < 4096:  # its whole 16 MiB working set is written once
            time.sleep(0.05)
        manager = MigrationManager(guest)
        manager.set_capability("xbzrle", True)
        manager.set_parameters(max_bandwidth=16 << 20, downtime_limit=300)
        assert str(manager.migrate(f"file:{path}").wait()) == "completed"
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xbzrle", *args], capture_output=True,
                          text=True, timeout=120)


def test_analyze_plot_draws_the_rounds_of_the_json_report(xbzrle_stream, tmp_path):
    png = tmp_path / "stream.png"
    r = run_cli("analyze", str(xbzrle_stream), "--json", "--plot", str(png))
    assert r.returncode == 0, r.stderr
    assert_valid_png(png)
    report = json.loads(r.stdout)
    rounds = report["rounds"]
    assert len(rounds) >= 3 and any(rnd["xbzrle"]["pages"] for rnd in rounds)
    series = stream_series("s", rounds)
    assert series.dirty_pages == [sum(rnd[k]["pages"] for k in ("zero", "normal", "xbzrle"))
                                  for rnd in rounds]
    assert series.bytes_zero == [rnd["zero"]["bytes"] for rnd in rounds]
    assert series.bytes_normal == [rnd["normal"]["bytes"] for rnd in rounds]
    assert series.bytes_xbzrle == [rnd["xbzrle"]["bytes"] for rnd in rounds]
    assert series.labels[-1] == "final" and series.miss_rate[0] is None


def test_analyze_states_what_xbzrle_saved(xbzrle_stream):
    r = run_cli("analyze", str(xbzrle_stream), "--json")
    report = json.loads(r.stdout)
    saved = report["xbzrle_savings"]["total"]
    xbz = report["totals"]["xbzrle"]
    assert saved["pages"] == xbz["pages"] > 0 and saved["sent"] == xbz["bytes"]
    assert saved["as_whole_pages"] == xbz["pages"] * PAGE_SIZE
    assert saved["ratio"] == round(xbz["pages"] * PAGE_SIZE / xbz["bytes"], 1)
    text = run_cli("analyze", str(xbzrle_stream)).stdout
    line = next(ln for ln in text.splitlines() if ln.startswith("xbzrle saved: "))
    assert f"{xbz['pages']} XBZRLE pages = " in line and "as whole pages, sent as" in line
    per_round = [ln for ln in text.splitlines() if ln.startswith("  round ")
                 and "XBZRLE pages" in ln]
    assert len(per_round) == len(report["xbzrle_savings"]["rounds"]) > 0


def test_migration_series_follow_the_round_history():
    rounds = [
        {"round": 0, "final": False, "dirty-pages": 100, "scanned": 100, "zero": 60,
         "normal": 40, "xbzrle": 0, "unchanged": 0, "overflow": 0, "cache-miss": 0,
         "xbzrle-bytes": 0, "wire-bytes": 40 * (PAGE_SIZE + 8) + 60 * 9 + 50},
        {"round": 1, "final": True, "dirty-pages": 30, "scanned": 30, "zero": 0,
         "normal": 12, "xbzrle": 18, "unchanged": 0, "overflow": 2, "cache-miss": 10,
         "xbzrle-bytes": 18 * 20 + 2 * PAGE_SIZE,
         "wire-bytes": 12 * (PAGE_SIZE + 8) + 18 * 28 + 30},
    ]
    s = migration_series("t", rounds, xbzrle=True)
    assert s.labels == ["1", "final"]
    assert s.dirty_pages == [100, 30]
    assert s.overflow == [0, 2]
    assert s.miss_rate == [None, 10 / 30]
    assert s.bytes_normal == [40 * (PAGE_SIZE + 8), 12 * (PAGE_SIZE + 8)]
    assert s.bytes_xbzrle == [0, 18 * 28]
    # every byte of the round is drawn once
    assert [a + b + c for a, b, c in zip(s.bytes_normal, s.bytes_xbzrle, s.bytes_zero,
                                         strict=True)] == [r["wire-bytes"] for r in rounds]


def test_a_missing_matplotlib_is_one_clear_line(xbzrle_stream, tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; from xbzrle.cli import main; "
            f"sys.exit(main(['analyze', {str(xbzrle_stream)!r}, '--plot', 'x.png']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [
        "xbzrle analyze: --plot needs matplotlib: pip install 'xbzrle[plot]' "
        "(or pip install matplotlib)"]
    assert r.stdout == "" and not (tmp_path / "x.png").exists()
