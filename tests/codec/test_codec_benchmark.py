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
    # The store floor is measured wherever there is something to decode.
    assert by_case["unchanged"]["store_floor_ns_per_page"] is None
    assert by_case["seed 4 bytes/page"]["store_floor_ns_per_page"] > 0
    assert by_case["unchanged"]["checked_store_floor_ns_per_page"] is None
    assert by_case["16 runs of 8-64"]["checked_store_floor_ns_per_page"] > 0


def _result(bench_script, **fields):
    values = dict(case="unchanged", path="avx2", encode_gbps=10.0, encode_ns_per_page=400.0,
                  encode_vs_memcmp=0.9, qemu_encode_vs_memcmp=0.5, decode_gbps=100.0,
                  decode_ns_per_page=40.0, decode_vs_qemu=None, qemu_decode_gbps=90.0,
                  store_floor_ns_per_page=None, checked_store_floor_ns_per_page=None,
                  memcmp_gbps=11.0, delta_bytes_per_page=0.0, overflow_pages=0.0, goal=0.95)
    return bench_script.Result(**{**values, **fields})


def test_table_has_a_row_per_result(bench_script):
    row = _result(bench_script)
    table = bench_script.format_table([row, row]).splitlines()
    assert len(table) == 4 and table[2].startswith("unchanged")


def test_decode_goal_report_puts_the_goal_next_to_the_floors(bench_script):
    """1.5x QEMU's decoder at 150 ns per page allows 100 ns: met at 90 ns; at
    120 ns not met, out of reach for any decoder when the stores alone take
    110 ns, and out of reach for a decoder that checks first when reading
    the lengths and then storing take 105 ns."""
    def row(case, ours, floor, checked):
        return _result(bench_script, case=case, decode_ns_per_page=ours,
                       decode_vs_qemu=150.0 / ours, qemu_decode_gbps=4096 / 150.0,
                       store_floor_ns_per_page=floor, checked_store_floor_ns_per_page=checked)

    report = bench_script.decode_goal_report([
        row("seed", 90.0, 50.0, 60.0), row("1%", 120.0, 110.0, 115.0),
        row("16 runs", 120.0, 80.0, 90.0), row("50%", 120.0, 80.0, 105.0),
        _result(bench_script)])  # nothing to decode: no line
    assert [line.split()[0] for line in report] == ["seed", "1%", "16", "50%"]
    assert ("allows    100, ours     90, store floor     50, checked store floor     60: met"
            in report[0])
    assert report[1].endswith(": not met; out of reach here: the stores alone take longer")
    assert report[2].endswith("store floor     80, checked store floor     90: not met")
    assert report[3].endswith(": not met; out of reach here for a decoder that checks every "
                              "delta first: reading the lengths, then the stores, take longer")


def test_store_floor_stores_at_each_run_end_and_nowhere_else(baselines):
    old = bytes(3 * 4096)
    new = bytearray(old)
    new[5] = 1  # a run of one byte
    new[2 * 4096 + 100:2 * 4096 + 110] = b"x" * 10  # page 1 unchanged, a run of 10 bytes
    deltas, lengths = core.encode_pages(old, new)
    places = baselines.run_places(deltas, lengths)
    assert list(places) == [5, 5, 2 * 4096 + 100, 2 * 4096 + 109]
    for ahead in (0, 16):
        pages = bytearray(len(old))
        baselines.store_floor(places, pages, ahead)
        assert [i for i, b in enumerate(pages) if b] == [5, 2 * 4096 + 100, 2 * 4096 + 109]
    with pytest.raises(ValueError, match="beyond the pages"):
        baselines.store_floor(places, bytearray(4096))
    with pytest.raises(ValueError, match="does not parse"):
        baselines.run_places(b"\x00\x00\x00", [3, 0, 0])


def test_checked_store_floor_reads_every_length_then_stores(baselines):
    """The checked store floor reads the last byte of every run's length
    (the byte before the run's bytes in the deltas), then stores where the
    store floor does, and nowhere else, the bytes a decode puts there."""
    rng = random.Random(7)
    old = rng.randbytes(8 * 4096)
    new = bytearray(old)
    for at in rng.sample(range(len(old)), 300):
        new[at] ^= 0xFF
    new[4096 + 10:4096 + 80] = rng.randbytes(70)  # a run longer than 64 bytes
    deltas, lengths = core.encode_pages(old, new)
    places = baselines.run_places(deltas, lengths)
    sources = baselines.run_sources(deltas, lengths)
    assert len(places) == 2 * len(sources) and sorted(sources) == list(sources)
    # Each run's bytes are where its source says: copying them decodes.
    decoded = bytearray(old)
    for at, first, last in zip(sources, places[::2], places[1::2], strict=True):
        decoded[first:last + 1] = deltas[at:at + last - first + 1]
    assert decoded == new
    placed = set(places)
    for ahead in (0, 16):
        pages = bytearray(len(old))
        read = baselines.checked_store_floor(places, sources, deltas, pages, ahead)
        assert read == sum(deltas[at - 1] for at in sources)
        assert all(pages[at] == new[at] for at in placed)
        assert not any(b for at, b in enumerate(pages) if at not in placed)
    with pytest.raises(ValueError, match="beyond the deltas"):
        baselines.checked_store_floor(places, sources, deltas[:-1], bytearray(old))
    with pytest.raises(ValueError, match="different deltas"):
        baselines.checked_store_floor(places, sources[:-1], deltas, bytearray(old))


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
