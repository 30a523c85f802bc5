"""StreamWriter: byte-exact records from the QEMU 7.2 layout, CONTINUE as QEMU sets it."""

from __future__ import annotations

import pytest

import stream_samples as s
from xbzrle.errors import ParameterError
from xbzrle.stream import (
    Command,
    Digest,
    EndOfSection,
    Eof,
    Header,
    NormalPage,
    RamBlocks,
    SectionEnd,
    SectionFooter,
    SectionFull,
    SectionPart,
    SectionStart,
    StreamWriter,
    VmDescription,
    XbzrlePage,
    ZeroPage,
    constants,
    parse_bytes,
)


def test_zero_page_without_continue_matches_the_spec_bytes():
    expected = bytes.fromhex("00 00 00 00 00 00 20 02 06") + b"pc.ram" + b"\x00"
    assert StreamWriter().zero_page("pc.ram", 0x2000) == expected


def test_header_and_section_records_are_byte_exact():
    w = StreamWriter()
    assert w.header() == b"QEVM\x00\x00\x00\x03"
    assert w.configuration(s.MACHINE) == s.configuration()
    assert w.section_start(2, "ram", 0, 4) == s.section(0x01, 2, "ram", 0, 4)
    assert w.section_full(3, "cpu", 1, 17) == s.section(0x04, 3, "cpu", 1, 17)
    assert w.section_part(2) == b"\x02\x00\x00\x00\x02"
    assert w.section_end(2) == b"\x03\x00\x00\x00\x02"
    assert w.footer(2) == b"\x7e\x00\x00\x00\x02"
    assert w.eof() == b"\x00"
    assert w.command(2, b"\x00\x00\x00\x01") == b"\x08\x00\x02\x00\x04\x00\x00\x00\x01"
    assert w.vmdescription("{}") == b"\x06\x00\x00\x00\x02{}"


def test_ram_blocks_and_pages_match_a_hand_built_round():
    w = StreamWriter()
    assert w.ram_blocks(s.BLOCKS) == s.mem_size()
    pages = (
        w.zero_page("pc.ram", 0x2000)
        + w.normal_page("pc.ram", 0x3000, bytes([0xAB]) * s.PAGE)
        + w.xbzrle_page("vga.vram", 0x1000, b"\x02\x00\x01\x07")
    )
    assert pages == s.ram_round_pages()
    assert w.eos() == s.EOS


def test_footers_off_writes_nothing_after_payloads():
    w = StreamWriter(send_footers=False)
    assert w.footer(7) == b""
    digest = w.digest({"pc.ram": (4096, b"d")}, section_id=7)
    assert not digest.endswith(b"\x7e\x00\x00\x00\x07")


def test_continue_chain_survives_sections_and_restarts_at_setup():
    """QEMU resets last_sent_block only when a migration sets up (ram_state_reset)."""
    w = StreamWriter()
    w.ram_blocks(s.BLOCKS)
    first = w.zero_page("pc.ram", 0)
    same = w.zero_page("pc.ram", 4096)
    w.eos()
    w.section_part(2)
    next_round = w.zero_page("pc.ram", 8192)
    other = w.zero_page("vga.vram", 0)
    assert first[7] == 0x02 and same[7] == 0x22 and next_round[7] == 0x22
    assert len(same) == 9 and other[7] == 0x02
    w.ram_blocks(s.BLOCKS)
    assert w.zero_page("vga.vram", 0)[7] == 0x02


def test_last_block_can_be_handed_to_and_from_a_c_save_loop():
    w = StreamWriter()
    w.last_block = "pc.ram"
    assert w.normal_page("pc.ram", 0, bytes(s.PAGE))[7] == 0x28
    w.last_block = None
    assert w.normal_page("pc.ram", 0, bytes(s.PAGE))[7] == 0x08


def test_every_record_kind_round_trips_through_the_parser():
    w = StreamWriter()
    data = bytes(range(256)) * 16
    stream = (
        w.header()
        + w.section_start(0, "ram", 0, 4)
        + w.ram_blocks([("pc.ram", 8 * s.PAGE)])
        + w.eos()
        + w.footer(0)
        + w.section_part(0)
        + w.zero_page("pc.ram", 0)
        + w.normal_page("pc.ram", s.PAGE, data)
        + w.xbzrle_page("pc.ram", 7 * s.PAGE, b"\x00\x01\xff")
        + w.eos()
        + w.footer(0)
        + w.section_end(0)
        + w.eos()
        + w.footer(0)
        + w.digest({"pc.ram": (8 * s.PAGE, b"\x11" * 32)})
        + w.command(1)
        + w.eof()
        + w.vmdescription({"devices": []})
    )
    events = parse_bytes(stream)
    assert events == [
        Header(3),
        SectionStart(0, "ram", 0, 4),
        RamBlocks(8 * s.PAGE, (("pc.ram", 8 * s.PAGE),)),
        EndOfSection(),
        SectionFooter(0),
        SectionPart(0),
        ZeroPage("pc.ram", 0, 0),
        NormalPage("pc.ram", s.PAGE, data),
        XbzrlePage("pc.ram", 7 * s.PAGE, b"\x00\x01\xff"),
        EndOfSection(),
        SectionFooter(0),
        SectionEnd(0),
        EndOfSection(),
        SectionFooter(0),
        SectionFull(constants.DIGEST_SECTION_ID, constants.DIGEST_IDSTR, 0, 1),
        Digest({"pc.ram": (8 * s.PAGE, b"\x11" * 32)}),
        SectionFooter(constants.DIGEST_SECTION_ID),
        Command(1, b""),
        Eof(),
        VmDescription({"devices": []}),
    ]
    assert [e.stream_offset for e in events[:3]] == [0, 8, 25]


@pytest.mark.parametrize(
    "call",
    [
        lambda w: w.normal_page("pc.ram", 0, b"short"),
        lambda w: w.xbzrle_page("pc.ram", 0, bytes(4097)),
        lambda w: w.zero_page("pc.ram", 100),
        lambda w: w.zero_page("x" * 256, 0),
        lambda w: w.ram_blocks([("a", 4096), ("a", 4096)]),
        lambda w: w.ram_blocks([("a", 4096), ("b", 0)]),
        lambda w: w.ram_blocks([("a", 100)]),
        lambda w: w.section_part(-1),
    ],
)
def test_writer_refuses_what_cannot_be_encoded(call):
    with pytest.raises(ParameterError):
        call(StreamWriter())


def test_writer_checks_pages_against_its_block_table():
    w = StreamWriter()
    w.ram_blocks([("pc.ram", 2 * s.PAGE)])
    with pytest.raises(ParameterError, match="outside"):
        w.zero_page("pc.ram", 2 * s.PAGE)
    with pytest.raises(ParameterError, match="unknown"):
        w.zero_page("vga", 0)
