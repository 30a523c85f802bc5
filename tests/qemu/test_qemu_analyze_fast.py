"""analyze's compiled page scan gives the report of the record-by-record path.

``analyze_chunks`` counts runs of page records with ``_core.scan_pages`` (the
parser's ``page_sink``) instead of one parser event per record.  Rounds, page
counts, wire bytes, errors and their offsets must not depend on it, whatever
the stream and however it is cut into reads.
"""

from __future__ import annotations

import random

import pytest
from test_qemu_streams import own_stream, sample_stream

import hostile_inputs as h
import stream_samples as S
from xbzrle import Guest
from xbzrle.migration.manager import MigrationManager
from xbzrle.qemu import analyze_chunks, analyze_file
from xbzrle.stream import StreamWriter

PAGE = 4096


def reports(data: bytes, chunk: int) -> tuple[dict, dict]:
    def chunks():
        return (data[i:i + chunk] for i in range(0, len(data), chunk))
    return (analyze_chunks(chunks(), fast=True).to_dict(),
            analyze_chunks(chunks(), fast=False).to_dict())


def assert_same(data: bytes, chunks=(1, 7, 4096 + 13, 1 << 20)) -> dict:
    for chunk in chunks:
        fast, slow = reports(data, chunk)
        assert fast == slow, f"chunk {chunk}"
    return fast


def descending_rounds() -> bytes:
    """Rounds whose pages go backwards through blocks, CONTINUE and named records mixed,
    an END section with pages out of order, all three kinds of page."""
    w = StreamWriter()
    blocks = [("pc.ram", 16 * PAGE), ("vga", 4 * PAGE)]
    out = [w.header(), w.configuration("pc", ["xbzrle"]), w.section_start(0, "ram", 0, 4),
           w.ram_blocks(blocks), w.eos(), w.footer(0)]
    rng = random.Random(3)
    for rnd in range(4):
        out.append(w.section_end(0) if rnd == 3 else w.section_part(0))
        for _ in range(40):
            name, size = rng.choice(blocks)
            offset = rng.randrange(size // PAGE) * PAGE
            kind = rng.randrange(3)
            if kind == 0:
                out.append(w.zero_page(name, offset))
            elif kind == 1:
                out.append(w.normal_page(name, offset, rng.randbytes(PAGE)))
            else:
                out.append(w.xbzrle_page(name, offset, b"\x00\x02\xaa\xbb"))
        out += [w.eos(), w.footer(0)]
    return b"".join(out) + w.eof()


STREAMS = {
    "qemu-like": sample_stream(),
    "qemu-like raw": S.qemu_like_stream(),
    "qemu-like without footers or devices": S.qemu_like_stream(footers=False, devices=False),
    "own, 1 round": own_stream(1, 1)[0],
    "own, 4 rounds": own_stream(2, 4)[0],
    "descending rounds": descending_rounds(),
    "zero records": h.zero_page_records(5000),
    "zero records looping": h.zero_page_records(5000, block_pages=7),
    "many blocks": h.many_blocks(50),
    "long block name": h.long_block_name(),
    "lied total": h.lied_total(1 << 20) + bytes(24),
}


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_fast_and_slow_reports_are_identical(name):
    report = assert_same(STREAMS[name])
    assert report["rounds"] or name == "lied total"


def test_zero_records_are_counted_in_their_rounds():
    report = assert_same(h.zero_page_records(1000, block_pages=100), chunks=(9, 1 << 20))
    assert len(report["rounds"]) == 11  # 10 passes over the block, then the END section
    assert [r["zero"]["pages"] for r in report["rounds"]] == [100] * 10 + [0]
    # The first record names its block (8 + 1 + 6 + 1 bytes), the others are CONTINUE (9).
    assert report["totals"]["zero"] == {"pages": 1000, "bytes": 16 + 999 * 9}


def test_every_truncation_and_corruption_reports_the_same_error():
    data = descending_rounds()
    rng = random.Random(11)
    cuts = sorted(set(rng.sample(range(len(data)), 150)) | set(range(0, 200)))
    for cut in cuts:
        fast, slow = reports(data[:cut], 1000)
        assert fast == slow, f"cut at {cut}"
    for _ in range(150):
        bad = bytearray(data)
        at = rng.randrange(len(bad))
        bad[at] = rng.choice([0x00, 0xFF, 0x02, 0x22, 0x28, 0x40, 0x60, bad[at] ^ 0x10])
        fast, slow = reports(bytes(bad), rng.choice([5, 333, 1 << 16]))
        assert fast == slow, f"byte {at}"


@pytest.mark.parametrize("error", ["unknown block", "outside", "encoding", "continue"])
def test_bad_page_records_fail_with_the_parsers_message(error):
    w = StreamWriter()
    good = [w.zero_page("pc.ram", i * PAGE) for i in range(20)]
    record = {
        "unknown block": b"\x00" * 7 + b"\x02" + bytes([5]) + b"nope!" + b"\x00",
        "outside": (64 * PAGE | 0x22).to_bytes(8, "big") + b"\x00",
        "encoding": (30 * PAGE | 0x40 | 0x20).to_bytes(8, "big") + b"\x07\x00\x00",
        "continue": None,
    }[error]
    head = (w.header() + w.section_start(0, "ram", 0, 4) + w.ram_blocks([("pc.ram", 64 * PAGE)])
            + w.eos() + w.footer(0) + w.section_part(0))
    if record is None:  # CONTINUE before any record named a block
        data = head + (0x22).to_bytes(8, "big") + b"\x00" + b"".join(good)
    else:
        data = head + b"".join(good) + record + b"".join(good)
    report = assert_same(data)
    assert report["error"].startswith("stream offset ")


def test_our_migration_written_to_a_file(tmp_path):
    """A real stream of our source (a small guest, a few writes, migrate to file:)."""
    stream = tmp_path / "stream"
    with Guest(ram="8M") as guest:
        ram = guest.blocks["pc.ram"]
        for index in (0, 3, 700, 1500):
            ram.page(index)[11] = index % 250 + 1
        guest.stop()
        manager = MigrationManager(guest)
        manager.migrate(f"file:{stream}").wait()
        assert manager.query()["status"] == "completed"
    data = stream.read_bytes()
    report = assert_same(data, chunks=(4093, 1 << 20))
    assert report["complete"] and report["totals"]["zero"]["pages"] > 1000
    assert analyze_file(stream).to_dict() == {**report, "source": str(stream)}


def test_a_stream_going_back_at_every_record_keeps_a_bounded_report(monkeypatch):
    """Every record a new round (one page repeated): past MAX_ROUNDS the rest is
    counted into the last round, on both paths, and every page is still counted."""
    from xbzrle.qemu import analyze as analyze_module

    monkeypatch.setattr(analyze_module, "MAX_ROUNDS", 50)
    data = h.zero_page_records(400, block_pages=1)
    report = assert_same(data, chunks=(7, 1 << 20))
    assert report["rounds_capped"] is True
    assert len(report["rounds"]) <= 51  # the cap, plus the final stage's round
    assert report["totals"]["zero"]["pages"] == 400
    short = analyze_chunks([h.zero_page_records(20, block_pages=1)]).to_dict()
    assert short["rounds_capped"] is False and len(short["rounds"]) >= 20
