"""The codec benchmark runs end to end and reports every case."""

from __future__ import annotations

import json

import pytest

from xbzrle import benchmark
from xbzrle.codec import implementations

pytestmark = pytest.mark.skipif("c" not in implementations(), reason="no compiled core")


def test_quick_benchmark_reports_every_case(capsys):
    assert benchmark.main(["--quick", "--path", "portable", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["case"] for r in results] == [case.name for case in benchmark.CASES]
    by_case = {r["case"]: r for r in results}
    assert by_case["unchanged"]["delta_bytes_per_page"] == 0
    assert by_case["every second byte"]["overflow_pages"] == 1.0
    assert 0 < by_case["1% random bytes"]["delta_bytes_per_page"] < 4096
    assert all(r["path"] == "portable" and r["encode_gbps"] > 0 for r in results)
    # Decoding is compared with QEMU's model only where there is a delta to decode.
    assert by_case["unchanged"]["decode_vs_qemu"] is None
    assert by_case["16 runs of 8-64"]["decode_vs_qemu"] > 0
    assert all(r["qemu_encode_vs_memcmp"] > 0 for r in results)


def test_table_has_a_row_per_result():
    row = benchmark.Result("unchanged", "avx2", 10.0, 400.0, 0.9, 0.5, 100.0, 40.0, None, 90.0,
                           11.0, 0.0, 0.0, 0.95)
    table = benchmark.format_table([row, row]).splitlines()
    assert len(table) == 4 and table[2].startswith("unchanged")
