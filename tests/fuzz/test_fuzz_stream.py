"""Fuzz the stream parser and its readers (analyze, extract) with mutated streams.

Seeds are real-shaped streams (stream_samples, our writer, the hostile
inputs); mutations flip, insert, delete and truncate bytes.  For any input:
``parse_bytes`` returns events or raises StreamError; ``analyze`` returns a
report; ``extract`` returns a manifest or raises IncompleteStreamError;
nothing else escapes and nothing is written outside a block.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

import hostile_inputs as h
import stream_samples as s
from conftest import FUZZ
from xbzrle.errors import StreamError
from xbzrle.qemu import IncompleteStreamError, analyze_chunks, extract_chunks
from xbzrle.stream import StreamWriter
from xbzrle.stream.parser import parse_bytes


def own_stream() -> bytes:
    w = StreamWriter()
    page = bytes(range(256)) * 16
    return (w.header() + w.configuration("pc", ["xbzrle"]) + w.section_start(2, "ram", 0, 4)
            + w.ram_blocks([("pc.ram", 8 * 4096), ("vga", 4096)]) + w.eos() + w.footer(2)
            + w.section_part(2) + w.normal_page("pc.ram", 0, page)
            + w.xbzrle_page("pc.ram", 0, b"\x00\x02\xaa\xbb") + w.zero_page("vga", 0)
            + w.eos() + w.footer(2) + w.section_end(2) + w.eos() + w.footer(2) + w.eof()
            + w.vmdescription({"devices": [{"name": "timer"}]}))


SEEDS = [s.qemu_like_stream(), s.qemu_like_stream(footers=False), own_stream(),
         h.many_blocks(3), h.long_block_name(40), h.nested_vmdescription(5),
         h.empty_section_loop(4), h.lied_total(1 << 20) + bytes(24),
         h.zero_page_records(40, block_pages=6)]


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "splice"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0x7E, 0x02, 0x04, 0x06, 0x10, 0x40]))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[at:]
        elif op == "splice":
            other = draw(st.sampled_from(SEEDS))
            start = draw(st.integers(0, len(other)))
            data[at:at] = other[start:start + draw(st.integers(1, 64))]
    return bytes(data)


@FUZZ
@given(mutated())
def test_parser_gives_events_or_a_stream_error(data):
    try:
        parse_bytes(data)
    except StreamError as exc:
        assert str(exc).startswith("stream offset ")


@FUZZ
@given(mutated(), st.integers(1, 97))
def test_analyze_always_reports(data, chunk):
    report = analyze_chunks(data[i:i + chunk] for i in range(0, len(data), chunk))
    assert report.error is None or report.error.startswith("stream offset")


@FUZZ
@given(mutated(), st.integers(1, 97))
def test_analyze_compiled_scan_reports_what_the_event_path_reports(data, chunk):
    """Rounds, counts, wire bytes and the error text and offset do not depend on the scan."""
    def chunks():
        return (data[i:i + chunk] for i in range(0, len(data), chunk))
    assert analyze_chunks(chunks()).to_dict() == analyze_chunks(chunks(), fast=False).to_dict()


@FUZZ
@given(data=mutated())
def test_extract_gives_a_manifest_or_an_incomplete_stream_error(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("x")
    try:
        manifest = extract_chunks([data], out)
    except IncompleteStreamError as exc:
        manifest = exc.manifest
    total = sum(b["size"] for b in manifest["blocks"])
    assert sum(p.stat().st_size for p in out.glob("*.ram")) == total
