"""The codec benchmark (benchmarks/codec.py) runs end to end and reports every case.

The script lives outside the package; it is loaded here from its file, and
builds its C baselines (memcmp, the model of QEMU's plain codec) with the
system compiler on first use.
"""

from __future__ import annotations

import json
import random
import sys

import pytest

from support import BENCHMARKS, load_benchmark
from xbzrle.codec import implementations

core = implementations().get("c")

pytestmark = pytest.mark.skipif("c" not in implementations(), reason="no compiled core")



@pytest.fixture(scope="module")
def bench_script():
    return load_benchmark("codec_benchmark_script", "codec")


@pytest.fixture(scope="module")
def baselines():
    return load_benchmark("codec_baseline", "codec_baseline").load()


def test_quick_benchmark_reports_every_case(bench_script, capsys):
    assert bench_script.main(["--quick", "--path", "portable", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["case"] for r in results] == [case.name for case in bench_script.CASES]
    by_case = {r["case"]: r for r in results}
    assert by_case["unchanged"]["delta_bytes_per_page"] == 0
    assert by_case["every second byte"]["overflow_pages"] == 1.0
    assert 0 < by_case["1% random bytes"]["delta_bytes_per_page"] < 4096
    assert all(r["path"] == "portable" and r["encode_gbps"] > 0 for r in results)
    # Decoding is compared with QEMU's model only where there is a delta to decode.
    assert by_case["unchanged"]["decode_vs_qemu"] is None
    assert by_case["16 runs of 8-64"]["decode_vs_qemu"] > 0
    assert all(r["qemu_encode_vs_memcmp"] > 0 for r in results)


def test_table_has_a_row_per_result(bench_script):
    row = bench_script.Result("unchanged", "avx2", 10.0, 400.0, 0.9, 0.5, 100.0, 40.0, None, 90.0,
                           11.0, 0.0, 0.0, 0.95)
    table = bench_script.format_table([row, row]).splitlines()
    assert len(table) == 4 and table[2].startswith("unchanged")


def test_memcmp_pages_counts_equal_pages(baselines):
    old = bytes(range(256)) * 64
    new = bytearray(old)
    new[4096 * 2 + 5] ^= 1
    assert baselines.memcmp_pages(old, new) == 3
    assert baselines.memcmp_pages(old, old, page_size=1024) == 16
    with pytest.raises(ValueError, match="whole pages"):
        baselines.memcmp_pages(old, old, page_size=1000)


def test_qemu_model_matches_our_codec_away_from_the_limit(baselines):
    """The baseline is a faithful XBZRLE codec: same deltas as ours, decodes them back."""
    rng = random.Random(7)
    old = rng.randbytes(16 * 4096)
    new = bytearray(old)
    for pos in rng.sample(range(len(old)), 600):
        new[pos] ^= rng.randrange(1, 256)
    new[4096:8192] = old[4096:8192]  # one unchanged page
    ours, our_lengths = core.encode_pages(old, new)
    theirs, their_lengths = baselines.qemu_plain_encode_pages(old, new)
    assert bytes(theirs) == ours and list(their_lengths) == list(our_lengths)
    assert their_lengths[1] == 0
    pages = bytearray(old)
    baselines.qemu_plain_decode_pages(bytes(theirs), their_lengths, pages)
    assert pages == new


def test_qemu_model_refuses_a_damaged_delta_by_page(baselines):
    old = bytes(2 * 4096)
    new = bytearray(old)
    new[4096 + 10] = 1
    deltas, lengths = baselines.qemu_plain_encode_pages(old, new)
    damaged = bytearray(deltas)
    damaged[1] = 0  # the page's non-zero run of length 0
    with pytest.raises(ValueError, match="delta of page 1"):
        baselines.qemu_plain_decode_pages(bytes(damaged), lengths, bytearray(old))
    with pytest.raises(ValueError, match="add up to more"):
        baselines.qemu_plain_decode_pages(b"", lengths, bytearray(old))


def test_without_a_compiler_the_benchmark_says_so_in_one_line(tmp_path):
    import os
    import subprocess

    env = dict(os.environ, CC=str(tmp_path / "no-such-cc"),
               PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, str(BENCHMARKS / "codec.py"), "--quick"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert done.stdout.strip().splitlines() == [
        f"benchmarks/codec.py: cannot run the C compiler '{tmp_path / 'no-such-cc'}' (set CC): "
        "No such file or directory"]
    assert "Traceback" not in done.stderr
