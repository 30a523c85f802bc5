"""`xbzrle vm` without monitors: page writes and dirty pages are never confused."""

from __future__ import annotations

import re
import subprocess
import sys

LINE = re.compile(r"\s*[\d.]+s  page writes\s+(\d+)/s  dirty\s+(\d+) pages/s \(\s*([\d.]+) MiB/s\)")


def test_the_printer_keeps_page_writes_and_dirty_pages_apart():
    r = subprocess.run([sys.executable, "-m", "xbzrle", "vm", "--ram", "16M", "--workload",
                        "loadgen", "--seconds", "2"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    header, *lines = r.stdout.splitlines()
    assert header.startswith("guest: 16 MiB, workload loadgen")
    assert lines
    for line in lines:
        m = LINE.fullmatch(line)
        assert m is not None, line
        writes, dirty, mib = int(m[1]), int(m[2]), float(m[3])
        assert abs(mib - dirty * 4096 / (1 << 20)) <= 0.1  # MiB/s is the dirty pages'
        # A one-second interval cannot dirty more pages than the guest has, whatever
        # the write rate (the seed's loadgen rewrites the same 16 MiB over and over).
        assert dirty <= 16 << 8 and mib <= 16.0
        assert writes >= dirty
