"""Reading QEMU mapped-ram files: extract and analyze next to a plain copy of the same bytes.

    PYTHONPATH=src python benchmarks/mappedram.py [--mib N] [--present 0.75] [--repeats N]

Builds, in a temporary directory, the same guest RAM (``--mib`` MiB, a
share ``--present`` of its pages non-zero) as a mapped-ram file (written by
tests/mappedram_samples.py to QEMU's layout) and as a plain precopy stream
of ours, then times, median of ``--repeats`` runs each:

- baseline: ``shutil.copyfile`` of the mapped-ram file (what any tool pays
  to read and write those bytes once);
- ``extract`` of the mapped-ram file, and of the plain stream;
- ``analyze`` of the mapped-ram file (bitmaps only);
- a block claiming 16 GiB with one page present: analyze and extract.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import mappedram_samples as M  # noqa: E402
from xbzrle.qemu import analyze_file, extract_file  # noqa: E402
from xbzrle.stream import StreamWriter  # noqa: E402

PAGE = 4096


def make_ram(mib: int, present: float) -> bytearray:
    rng = random.Random(1)
    ram = bytearray(mib << 20)
    chunk = rng.randbytes(1 << 20)
    for page in range(len(ram) // PAGE):
        if rng.random() < present:
            at = page * PAGE
            src = (page * 61 % 255) * PAGE
            ram[at:at + PAGE] = chunk[src:src + PAGE]
            ram[at] = 1  # never a zero page
    return ram


def plain_stream(path: Path, ram: bytearray) -> None:
    w = StreamWriter()
    with open(path, "wb") as f:
        f.write(w.header() + w.configuration("pc-q35-10.2") + w.section_start(0, "ram", 0, 4)
                + w.ram_blocks([("pc.ram", len(ram))]) + w.eos() + w.footer(0)
                + w.section_end(0))
        zero = bytes(PAGE)
        for at in range(0, len(ram), PAGE):
            page = ram[at:at + PAGE]
            record = w.zero_page("pc.ram", at) if page == zero else \
                w.normal_page("pc.ram", at, page)
            f.write(record)
        f.write(w.eos() + w.footer(0) + w.eof())


def median_time(action, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        action()
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--present", type=float, default=0.75)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        ram = make_ram(args.mib, args.present)
        M.write_file(d / "mapped.bin", {"pc.ram": ram})
        plain_stream(d / "plain.bin", ram)
        del ram
        n = 0

        def out() -> Path:
            nonlocal n
            n += 1
            return d / f"out{n}"

        def cleanup(path: Path) -> None:
            shutil.rmtree(path, ignore_errors=True)

        def extract(src: str):
            def run() -> None:
                target = out()
                extract_file(d / src, target)
                cleanup(target)
            return run

        def copy() -> None:
            shutil.copyfile(d / "mapped.bin", d / "copy.bin")
            (d / "copy.bin").unlink()

        rows = [
            ("copyfile of the mapped-ram file (baseline)", median_time(copy, args.repeats)),
            ("extract mapped-ram", median_time(extract("mapped.bin"), args.repeats)),
            ("extract plain stream, same RAM", median_time(extract("plain.bin"), args.repeats)),
            ("analyze mapped-ram", median_time(lambda: analyze_file(d / "mapped.bin"),
                                               args.repeats)),
        ]
        big = d / "big.bin"
        with open(big, "w+b") as f:
            w = M.MappedRamWriter(f, [("pc.ram", 16 << 30)])
            w.setup()
            w.page("pc.ram", (16 << 30) - PAGE, b"\x77" * PAGE)
            w.complete()

        def extract_big() -> None:
            target = out()
            extract_file(big, target, max_ram=16 << 30)
            cleanup(target)

        rows.append(("16 GiB block, 1 page: analyze",
                     median_time(lambda: analyze_file(big), args.repeats)))
        rows.append(("16 GiB block, 1 page: extract", median_time(extract_big, args.repeats)))
    base = rows[0][1]
    print(f"{args.mib} MiB of RAM, {args.present:.0%} of pages present, "
          f"median of {args.repeats} runs")
    for label, seconds in rows:
        print(f"  {label:<44} {seconds * 1000:9.1f} ms  {seconds / base:6.2f}x baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
