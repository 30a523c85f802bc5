"""The benchmark scripts that are cheap at a small size still run (figures are not checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize("script, args", [
    ("pipeline.py", ["--size-mib", "1", "--repeats", "1"]),
])
def test_benchmark_script_runs_and_prints_its_table(script, args):
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "x memcmp" in done.stdout and "Traceback" not in done.stderr
