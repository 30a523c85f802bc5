"""Issue 13 §2 at the parser: hostile streams end in a StreamError that says what is wrong.

Each input is a few bytes that once cost quadratic work, escaped as a
RecursionError or was reported as something it was not.
"""

from __future__ import annotations

import pytest

import hostile_inputs as h
import stream_samples as s
from xbzrle.errors import StreamError
from xbzrle.qemu import analyze_chunks
from xbzrle.stream import (
    EmptyParts,
    EndOfSection,
    RamBlocks,
    SectionFooter,
    SectionPart,
    StreamParser,
    VmDescription,
    find_vmdescription,
    parse_bytes,
)
from xbzrle.stream.parser import DEFAULT_MAX_BLOCKS, MAX_VMDESC_NESTING


def test_the_block_cap_admits_its_limit_and_names_itself_one_past_it():
    events = parse_bytes(h.many_blocks(DEFAULT_MAX_BLOCKS))
    blocks = next(e for e in events if isinstance(e, RamBlocks))
    assert len(blocks.blocks) == DEFAULT_MAX_BLOCKS
    with pytest.raises(StreamError, match=f"more than {DEFAULT_MAX_BLOCKS} RAM blocks"):
        parse_bytes(h.many_blocks(DEFAULT_MAX_BLOCKS + 1))


def test_65536_blocks_are_refused_at_the_cap_not_after_reading_them_all():
    data = h.many_blocks(65536)
    with pytest.raises(StreamError) as err:
        parse_bytes(data)
    assert f"more than {DEFAULT_MAX_BLOCKS} RAM blocks" in str(err.value)
    assert err.value.offset < len(data) // 8


def test_a_duplicate_block_is_still_found():
    data = h.ram_start([("a", s.PAGE), ("b", s.PAGE), ("a", s.PAGE)])
    with pytest.raises(StreamError, match="RAM block 'a' announced twice"):
        parse_bytes(data)


def test_a_lied_mem_size_total_says_the_total_is_the_problem():
    with pytest.raises(StreamError) as err:
        parse_bytes(h.lied_total(1 << 40) + bytes(32))
    message = str(err.value)
    assert "empty name" in message and "announced twice" not in message
    assert "MEM_SIZE total 0x10000000000" in message and "0x1000 bytes of the 1 blocks" in message


def test_deep_vmdescription_is_a_stream_error_not_a_recursion_error():
    with pytest.raises(StreamError, match=f"nested deeper than {MAX_VMDESC_NESTING} levels"):
        parse_bytes(h.nested_vmdescription(100_000))
    # Just past the bound, where json.loads itself would still succeed.
    with pytest.raises(StreamError, match="nested deeper"):
        parse_bytes(h.nested_vmdescription(MAX_VMDESC_NESTING))


def test_vmdescription_within_the_bound_is_parsed():
    events = parse_bytes(h.nested_vmdescription(MAX_VMDESC_NESTING - 1))
    desc = events[-1]
    assert isinstance(desc, VmDescription) and isinstance(desc.json, dict)


def test_find_vmdescription_skips_a_deep_one():
    data = h.nested_vmdescription(50_000)
    assert find_vmdescription(data[-(len(data) - 100):]) is None


def test_deep_vmdescription_in_analyze_is_the_report_error():
    report = analyze_chunks([h.nested_vmdescription(100_000)])
    assert report.error is not None and "nested deeper" in report.error


@pytest.mark.parametrize("footers", [False, True])
def test_runs_of_empty_parts_fold_into_one_event(footers):
    foot = s.footer(2) if footers else b""
    part = bytes([0x02]) + s.be32(2) + s.EOS + foot
    data = (h.ram_start([("pc.ram", s.PAGE)]) + s.EOS + foot + part * 1000
            + bytes([0x03]) + s.be32(2) + s.EOS + foot + b"\x00")
    events = parse_bytes(data)
    runs = [e for e in events if isinstance(e, EmptyParts)]
    assert sum(r.count for r in runs) == 1000 and len(runs) <= 2
    assert not any(isinstance(e, SectionPart) for e in events)
    report = analyze_chunks([data[i:i + 4096] for i in range(0, len(data), 4096)])
    assert report.complete and report.sections[0].parts == 1000


def test_a_single_empty_part_keeps_its_own_events():
    data = (h.ram_start([("pc.ram", s.PAGE)]) + s.EOS + s.footer(2)
            + bytes([0x02]) + s.be32(2) + s.EOS + s.footer(2))
    events = parse_bytes(data + bytes([0x03]) + s.be32(2) + s.EOS + s.footer(2) + b"\x00")
    kinds = [type(e) for e in events]
    assert SectionPart in kinds and EmptyParts not in kinds
    assert kinds.count(EndOfSection) == 3 and kinds.count(SectionFooter) == 3


def test_empty_parts_fed_byte_by_byte_count_every_section():
    part = bytes([0x02]) + s.be32(2) + s.EOS
    data = h.ram_start([("pc.ram", s.PAGE)]) + s.EOS + part * 50
    parser = StreamParser()
    parts = 0
    for i in range(len(data)):
        parser.feed(data[i:i + 1])
        for event in parser.events():
            parts += event.count if isinstance(event, EmptyParts) else \
                isinstance(event, SectionPart)
    assert parts == 50
