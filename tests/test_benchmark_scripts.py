"""The benchmark scripts that are cheap at a small size still run (figures are not checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize("script, args, marker", [
    ("pipeline.py", ["--size-mib", "1", "--repeats", "1"], "x memcmp"),
    ("pipeline.py", ["--size-mib", "1", "--repeats", "1", "--backing", "huge"], "x memcmp"),
    ("pipeline.py", ["--size-mib", "1", "--repeats", "1", "--path", "portable"],
     "SIMD path portable"),
    ("codec.py", ["--size-mib", "1", "--repeats", "1", "--case", "seed", "--backing", "huge"],
     "(huge backing)"),
])
def test_benchmark_script_runs_and_prints_its_table(script, args, marker):
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert marker in done.stdout and "Traceback" not in done.stderr
