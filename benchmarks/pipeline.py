"""The save loop's XBZRLE round next to memcmp and to QEMU's design, in one run.

An XBZRLE round over dirty pages that all hit the cache does, at the least,
one read of the guest page and one of the cached page: that is what
``memcmp`` of two equal pages costs (it reads both to the end), and it is
the baseline here, as in ``benchmarks/codec.py``.  Our
loop encodes straight from the guest page, and the cached copy takes each
run of the delta as the encoder writes it; with the digest table a
migration keeps (``x-ram-digest``, on by default) the page's entry follows
the same runs, without reading the page again.  QEMU's design copies the
page aside first, zero-checks and encodes the copy, and copies it into the
cache (``SAVE_QEMU_COPY``, the same
loop with QEMU's steps).  Each repeat changes the RAM with the seed's pattern
(one byte in every 1024 incremented: 4 bytes per page), then times memcmp of
as many equal page pairs, our round (without and with the table) and QEMU's
round; the figures
are medians of the per-repeat ratios, so a load change on the shared machine
moves both sides of a ratio alike.  Last, the destination's load loop
applies such rounds, without and with its digest table (ratios: the median
memcmp time over the median load time).

    python benchmarks/pipeline.py [--size-mib 64] [--repeats 9] [--cpu N] [--path avx2]
                                  [--backing huge]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from codec_baseline import BACKINGS, page_memory
from codec_baseline import load as load_baselines
from xbzrle._backend import load_core

PAGE = 4096
INCREMENT = bytes((i + 1) & 0xFF for i in range(256))


def full_bitmap(npages: int) -> bytearray:
    return bytearray(b"\xff" * (((npages + 63) // 64) * 8))


def one_round(core, ram, cache, mode: int, out: bytearray,
              table: bytearray | None = None) -> tuple[float, object]:
    """Seconds for one save-loop pass over every page of ram; the summed counts.
    table: the digest table a migration keeps with x-ram-digest (on by default)."""
    npages = len(ram) // PAGE
    bitmap = full_bitmap(npages)
    page, cont, total = 0, False, [0] * core.LoopCounts.n_fields
    started = time.perf_counter()
    while page < npages:
        _, page, cont, counts = core.save_pages(out, 0, ram, bitmap, page, b"pc.ram", 0, mode,
                                                cache, cont, None, None, table)
        total = [a + b for a, b in zip(total, counts, strict=True)]
    return time.perf_counter() - started, core.LoopCounts(total)


def round_records(core, ram, cache, out: bytearray) -> list[bytes]:
    """The records of one XBZRLE round over every page of ram, as sent."""
    npages = len(ram) // PAGE
    bitmap = full_bitmap(npages)
    page, cont, chunks = 0, False, []
    while page < npages:
        pos, page, cont, _ = core.save_pages(out, 0, ram, bitmap, page, b"pc.ram", 0,
                                             core.SAVE_XBZRLE, cache, cont)
        chunks.append(bytes(out[:pos]))
    return chunks


def load_round(core, chunks: list[bytes], block: tuple) -> float:
    """Seconds for the destination's load loop to apply chunks to one block."""
    last = -1
    started = time.perf_counter()
    for chunk in chunks:
        pos, last, _, _ = core.load_pages(chunk, 0, [block], last, True, 0)
        if pos != len(chunk):
            raise SystemExit("the destination stopped inside a round")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    ap.add_argument("--path", default=None,
                    help="SIMD path of the encoder (default: the best this CPU has)")
    ap.add_argument("--backing", choices=BACKINGS, default="small",
                    help="RAM and the baseline's pages on 4 KiB pages only (default), or on "
                         "transparent huge pages as guest RAM and the cache are")
    args = ap.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    core = load_core()
    if args.path is not None:
        core.select_simd(args.path)
    baselines = load_baselines()  # memcmp, built from benchmarks/codec_baseline.c
    size = args.size_mib << 20
    ram = page_memory(os.urandom(size), args.backing)  # laid out as guest RAM
    out = bytearray(4 << 20)
    ours, theirs = core.PageCache(2 * size), core.PageCache(2 * size)
    with_table, table = core.PageCache(2 * size), bytearray(8 * (size // PAGE))

    # The first pass: every page whole (plain), next to a memcpy of the RAM.
    sink = bytearray(size)
    plain, copy = [], []
    for _ in range(3):
        started = time.perf_counter()
        sink[:] = ram
        copy.append(time.perf_counter() - started)
        plain.append(one_round(core, ram, None, core.SAVE_PLAIN, out)[0])
    del sink
    # Fill both caches (every page a miss), then the measured rounds.
    one_round(core, ram, ours, core.SAVE_XBZRLE, out)
    one_round(core, ram, theirs, core.SAVE_QEMU_COPY, out)
    one_round(core, ram, with_table, core.SAVE_XBZRLE, out, table)
    prev = page_memory(ram, args.backing)
    ratio_enc: list[float] = []
    twin = page_memory(ram, args.backing)  # memcmp reads whole pages only where they are equal
    ratio_ours, ratio_qemu, t_ours, t_qemu, t_cmp, t_enc = [], [], [], [], [], []
    ratio_table, t_table = [], []
    for _ in range(args.repeats):
        ram[::1024] = bytes(ram[::1024]).translate(INCREMENT)
        started = time.perf_counter()
        baselines.memcmp_pages(prev, twin)
        base = time.perf_counter() - started
        started = time.perf_counter()
        core.encode_pages(prev, ram)
        t_enc.append(time.perf_counter() - started)
        mine, counts = one_round(core, ram, ours, core.SAVE_XBZRLE, out)
        qemu, counts_qemu = one_round(core, ram, theirs, core.SAVE_QEMU_COPY, out)
        tabled, _ = one_round(core, ram, with_table, core.SAVE_XBZRLE, out, table)
        # the same records; encode_* is a clock sample (and only our loop takes it)
        same = all(getattr(counts, f) == getattr(counts_qemu, f)
                   for f in counts.__match_args__ if not f.startswith("encode_"))
        if counts.xbzrle != len(ram) // PAGE or not same:
            raise SystemExit(f"unexpected round: {counts} / {counts_qemu}")
        prev[:] = ram
        twin[:] = ram
        t_cmp.append(base)
        t_ours.append(mine)
        t_qemu.append(qemu)
        ratio_ours.append(base / mine)
        ratio_qemu.append(base / qemu)
        ratio_enc.append(base / t_enc[-1])
        t_table.append(tabled)
        ratio_table.append(base / tabled)

    # The destination: one such round loaded into RAM, without and with the
    # digest table a migration keeps (whose entries follow short deltas).
    sender = core.PageCache(2 * size)
    round_records(core, ram, sender, out)  # every page a miss: the cache fills
    bare, kept = page_memory(ram, args.backing), page_memory(ram, args.backing)
    dest_table = bytearray(8 * (size // PAGE))
    core.table_fill(kept, dest_table)
    t_load, t_load_table = [], []
    for _ in range(args.repeats):
        ram[::1024] = bytes(ram[::1024]).translate(INCREMENT)
        chunks = round_records(core, ram, sender, out)
        t_load.append(load_round(core, chunks, (b"pc.ram", bare)))
        t_load_table.append(load_round(core, chunks, (b"pc.ram", kept, None, dest_table)))
    if bare[:] != ram[:] or kept[:] != ram[:]:
        raise SystemExit("the destination does not hold the source's RAM")

    def rate(seconds: list[float]) -> float:
        return size / statistics.median(seconds) / 1e9

    print(f"{args.size_mib} MiB of random pages, seed pattern (4 bytes/page), median of "
          f"{args.repeats}, SIMD path {core.simd_path()}; ratios are to memcmp of the same "
          f"page pairs, in the same repeat")
    print(f"{'':<44} {'GB/s':>7} {'x memcmp':>9}")
    print(f"{'memcmp of equal page pairs':<44} {rate(t_cmp):7.2f} {1.0:9.2f}")
    print(f"{'encode alone (codec.encode_pages, same pairs)':<44} {rate(t_enc):7.2f} "
          f"{statistics.median(ratio_enc):9.2f}")
    print(f"{'XBZRLE round, ours (encode from the page)':<44} {rate(t_ours):7.2f} "
          f"{statistics.median(ratio_ours):9.2f}")
    print(f"{'  with the digest table (x-ram-digest)':<44} {rate(t_table):7.2f} "
          f"{statistics.median(ratio_table):9.2f}")
    print(f"{'XBZRLE round, QEMU design (copy+enc+copy)':<44} {rate(t_qemu):7.2f} "
          f"{statistics.median(ratio_qemu):9.2f}")
    speedup = statistics.median(q / m for q, m in zip(t_qemu, t_ours, strict=True))
    print(f"ours / QEMU design: {speedup:.2f}x")
    print(f"first pass (every page whole into the buffer) {rate(plain):.2f} GB/s, "
          f"memcpy of the RAM {rate(copy):.2f} GB/s")
    cmp_median = statistics.median(t_cmp)
    print(f"{'destination: load of such a round':<44} {rate(t_load):7.2f} "
          f"{cmp_median / statistics.median(t_load):9.2f}")
    print(f"{'  with its digest table':<44} {rate(t_load_table):7.2f} "
          f"{cmp_median / statistics.median(t_load_table):9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
