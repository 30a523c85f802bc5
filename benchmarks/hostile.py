"""Work per hostile input (issue 13 §2-3): each should cost about what it carries.

Prints the median wall time of each reader on each input, next to the time
to merely copy the same bytes (the baseline measured in the same run), so
the ratio says how far from "disk speed" a reader is.  No assertions: the
regression tests check behaviour, this prints figures.

    PYTHONPATH=src:tests python benchmarks/hostile.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import hostile_inputs as h  # noqa: E402
from xbzrle.monitor.hmp import split_words  # noqa: E402
from xbzrle.monitor.jsonstream import JsonSplitter  # noqa: E402
from xbzrle.qemu import analyze_chunks, extract_chunks  # noqa: E402
from xbzrle.qemu.extract import IncompleteStreamError  # noqa: E402
from xbzrle.stream import StreamWriter  # noqa: E402
from xbzrle.stream.parser import parse_bytes  # noqa: E402


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def quietly(fn):
    def run():
        try:
            fn()
        except (ValueError, IncompleteStreamError):
            pass
    return run


def chunks(data: bytes, size: int = 1 << 20) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def normal_pages(count: int) -> bytes:
    """A normal stream: ``count`` 4 KiB PAGE records in one pass."""
    w = StreamWriter()
    page = bytes(range(256)) * 16
    size = count * 4096
    return (w.header() + w.section_start(0, "ram", 0, 4) + w.ram_blocks([("pc.ram", size)])
            + w.eos() + w.footer(0) + w.section_part(0)
            + b"".join(w.normal_page("pc.ram", i * 4096, page) for i in range(count))
            + w.eos() + w.footer(0) + w.section_end(0) + w.eos() + w.footer(0) + w.eof())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    cases = {
        "16 GiB block, one page: extract": (h.huge_sparse_block(), lambda d: extract_chunks(
            [d], tempfile.mkdtemp())),
        "4096 blocks: extract": (h.many_blocks(4096), lambda d: extract_chunks(
            [d], tempfile.mkdtemp())),
        "65536 blocks: parse": (h.many_blocks(65536), parse_bytes),
        "VMDESCRIPTION nested 100000 deep: analyze": (h.nested_vmdescription(), lambda d:
                                                       analyze_chunks([d])),
        "400000 empty PART sections: analyze": (h.empty_section_loop(400_000), lambda d:
                                                 analyze_chunks(chunks(d))),
        "1,000,000 ZERO records: analyze": (h.zero_page_records(1_000_000), lambda d:
                                             analyze_chunks(chunks(d))),
        "same, one event per record (before)": (h.zero_page_records(1_000_000), lambda d:
                                                 analyze_chunks(chunks(d), fast=False)),
        "1,000,000 ZERO records looping 4096: analyze": (
            h.zero_page_records(1_000_000, block_pages=4096), lambda d: analyze_chunks(chunks(d))),
        "256 MiB of PAGE records: analyze": (normal_pages(65536), lambda d:
                                             analyze_chunks(chunks(d))),
        "same, one event per record (before)  ": (normal_pages(65536), lambda d:
                                                   analyze_chunks(chunks(d), fast=False)),
        "10 MB QMP message: split": (b'{"execute":"x","arguments":{"s":"' + b"a" * (10 << 20)
                                     + b'"}}', lambda d: JsonSplitter().feed(d)),
    }
    print(f"{'input':<46} {'bytes':>10} {'median s':>9} {'copy s':>9} {'ratio':>8}")
    for name, (data, fn) in cases.items():
        took = median_time(quietly(lambda fn=fn, data=data: fn(data)), repeat)
        copy = median_time(lambda data=data: bytearray(data), repeat)
        print(f"{name:<46} {len(data):>10} {took:>9.3f} {copy:>9.5f} {took / copy:>8.0f}")
    print("\nconsole line splitting (the console refuses lines over 4096 bytes before this):")
    for label, line in (("one 200 KB word", "a" * 200_000), ("200 KB quoted", '"' + "a" * 200_000
                        + '"'), ("100,000 short words", "x " * 100_000)):
        ours = median_time(lambda line=line: split_words(line), repeat)
        theirs = median_time(lambda line=line: shlex.split(line), 1)
        print(f"  {label:<22} split_words {ours:.3f} s, shlex.split {theirs:.3f} s "
              f"(shlex / ours {theirs / ours:.1f})")

if __name__ == "__main__":
    main()
