"""StreamParser: QEMU-7.2-like streams, any chunking, and a clear error for every bad input."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stream_samples as s
from xbzrle.errors import StreamError
from xbzrle.stream import (
    NEED_DATA,
    Configuration,
    DeviceState,
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
    StreamParser,
    StreamWriter,
    VmDescription,
    XbzrlePage,
    ZeroPage,
    find_vmdescription,
    parse_bytes,
)

STREAM = s.qemu_like_stream()


def merged(events):
    """Events with consecutive DeviceState chunks joined (their cut depends on feeding)."""
    out = []
    for event in events:
        if isinstance(event, DeviceState) and out and isinstance(out[-1], DeviceState):
            first = out[-1]
            out[-1] = DeviceState(first.offset, first.data + event.data, stream_offset=first.offset)
        else:
            out.append(event)
    return [(type(e).__name__, e.stream_offset, e) for e in out]


def parse_in_chunks(data, cuts):
    parser = StreamParser()
    events = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        parser.feed(data[start:cut])
        events.extend(parser.events())
        start = cut
    parser.close()
    events.extend(parser.events())
    return events


def test_qemu_like_stream_parses_to_the_expected_events():
    events = parse_bytes(STREAM)
    ram = dict(s.BLOCKS)
    assert events[:16] == [
        Header(3),
        Configuration(s.MACHINE, ()),
        SectionStart(2, "ram", 0, 4),
        RamBlocks(sum(ram.values()), s.BLOCKS),
        EndOfSection(),
        SectionFooter(2),
        SectionPart(2),
        ZeroPage("pc.ram", 0x2000, 0),
        NormalPage("pc.ram", 0x3000, bytes([0xAB]) * s.PAGE),
        XbzrlePage("vga.vram", 0x1000, b"\x02\x00\x01\x07"),
        EndOfSection(),
        SectionFooter(2),
        SectionEnd(2),
        ZeroPage("vga.vram", 0, 0),  # CONTINUE across sections, as QEMU's loader allows
        EndOfSection(),
        SectionFooter(2),
    ]
    assert events[16] == SectionFull(0, "timer", 0, 2)
    raw = b"".join(e.data for e in events[17:])
    assert all(isinstance(e, DeviceState) for e in events[17:])
    assert STREAM.endswith(raw)
    assert raw.startswith(s.DEVICE_BYTES + s.section(0x04, 3, "cpu", 0, 17))
    assert events[17].offset == events[17].stream_offset == len(STREAM) - len(raw)


def test_stream_without_footers_or_devices_parses_too():
    events = parse_bytes(s.qemu_like_stream(footers=False, devices=False))
    assert not any(isinstance(e, SectionFooter) for e in events)
    assert events[-2:] == [Eof(), VmDescription(s.VMDESC)]


def test_configuration_with_capabilities_and_uuid_subsections():
    uuid = bytes(range(16))
    caps = s.be32(2) + s.name("x-ignore-shared") + s.name("validate-uuid")
    config = (
        s.configuration()
        + b"\x05" + s.name("configuration/capabilities") + s.be32(1) + caps
        + b"\x05" + s.name("configuration/uuid") + s.be32(1) + uuid
        + b"\x05" + s.name("configuration/target-page-bits") + s.be32(1) + s.be32(12)
    )  # fmt: skip
    events = parse_bytes(s.header() + config + b"\x00")
    assert events == [
        Header(3),
        Configuration(s.MACHINE, ("x-ignore-shared", "validate-uuid"), uuid),
        Eof(),
    ]
    assert StreamWriter().configuration(s.MACHINE, ["x-ignore-shared"]) == (
        s.configuration() + b"\x05" + s.name("configuration/capabilities") + s.be32(1)
        + s.be32(1) + s.name("x-ignore-shared")
    )  # fmt: skip


def test_one_byte_at_a_time_gives_the_same_events():
    assert merged(parse_in_chunks(STREAM, range(1, len(STREAM)))) == merged(parse_bytes(STREAM))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, len(STREAM)), max_size=40))
def test_any_split_gives_the_same_events(cuts):
    assert merged(parse_in_chunks(STREAM, cuts)) == merged(parse_bytes(STREAM))


def test_any_bytes_like_input_is_accepted():
    parser = StreamParser()
    parser.feed(memoryview(STREAM)[:100])
    parser.feed(bytearray(STREAM[100:200]))
    parser.feed(STREAM[200:])
    events = list(parser.events())
    parser.close()
    assert merged(events) == merged(parse_bytes(STREAM))


def test_next_event_reports_need_data_until_a_record_is_whole():
    parser = StreamParser()
    parser.feed(b"QEVM\x00\x00")
    assert parser.next_event() is NEED_DATA
    parser.feed(b"\x00\x03")
    assert parser.next_event() == Header(3)
    assert parser.next_event() is NEED_DATA
    assert parser.offset == 8


def test_truncation_at_every_byte_is_reported_by_close():
    stream = s.qemu_like_stream(devices=False)
    clean_ends = {stream.rindex(b"\x00\x06") + 1, len(stream)}  # after EOF, after the vmdesc
    for end in range(len(stream)):
        parser = StreamParser()
        parser.feed(stream[:end])
        list(parser.events())
        if end in clean_ends:
            parser.close()
            continue
        with pytest.raises(StreamError, match="ended") as info:
            parser.close()
        assert info.value.offset == end


def test_truncation_message_names_the_record_and_what_was_missing():
    stream = s.qemu_like_stream()
    cut = stream.index(bytes([0xAB]) * 16) + 100
    with pytest.raises(StreamError) as info:
        parse_bytes(stream[:cut])
    message = str(info.value)
    assert f"stream offset {cut}" in message
    assert "4096 bytes of page data" in message
    assert f"record at offset {stream.index(s.be64(0x3000 | 0x28))}" in message


def ram_stream(*records: bytes) -> bytes:
    """A stream whose ram START announces the sample blocks, then one PART of records."""
    return (
        s.header()
        + s.section(0x01, 0, "ram", 0, 4)
        + s.mem_size()
        + s.EOS
        + s.footer(0)
        + b"\x02"
        + s.be32(0)
        + b"".join(records)
    )


PART_AT = len(ram_stream())


def page(addr_flags: int, block: str = "pc.ram") -> bytes:
    return s.be64(addr_flags) + s.name(block)


@pytest.mark.parametrize(
    ("stream", "offset", "message"),
    [
        (b"QEVX" + s.be32(3), 0, "magic"),
        (b"QEVM" + s.be32(2), 4, "version 2"),
        (b"QEVM" + s.be32(4), 4, "unsupported stream version 4"),
        (s.header() + b"QEVM", 8, "unknown section type 0x51"),
        (s.header() + b"\x09", 8, "unknown section type 0x09"),
        (s.header() + b"\x02" + s.be32(5), 8, "not open"),
        (s.header() + s.section(0x01, 0, "block", 0, 1), 8, "unsupported iterable section"),
        (s.header() + s.section(0x01, 0, "ram", 0, 3), 8, "expected 4"),
        (
            s.header()
            + s.section(0x01, 0, "ram", 0, 4)
            + s.be64(0x04)
            + s.EOS
            + s.footer(0)
            + b"\x00",
            46,
            "still open",
        ),  # fmt: skip
        (s.header() + b"\x00\x07", 9, "after EOF"),
        (s.header() + b"\x00" + b"\x06" + s.be32(2) + b"{}" + b"x", 16, "trailing"),
        (s.header() + b"\x06", 8, "before EOF"),
        (s.header() + b"\x7e" + s.be32(0), 8, "no section payload"),
        (s.header() + b"\x00" + s.configuration(), 9, "after EOF"),
        (s.header() + b"\x08\x00\x01\x00\x00" + s.configuration(), 13, "right after the header"),
        (
            s.header() + s.configuration() + b"\x05" + s.name("configuration/foo") + s.be32(1),
            8 + len(s.configuration()),
            "unknown configuration subsection 'configuration/foo'",
        ),
        (ram_stream(page(0x200)), PART_AT, "MULTIFD_FLUSH .0x200.: multifd channels"),
        (ram_stream(page(0x01)), PART_AT, "RAM_SAVE_FLAG_FULL"),
        (ram_stream(page(0x80)), PART_AT, "RDMA not supported"),
        (ram_stream(page(0x100)), PART_AT, "not supported"),
        (ram_stream(page(0x02 | 0x08)), PART_AT, "unknown RAM record flags 0x00a"),
        (ram_stream(s.be64(0x10 | 0x20)), PART_AT, "unknown RAM record flags 0x030"),
        (ram_stream(s.be64(0x1000 | 0x10)), PART_AT, "EOS record with offset"),
        (ram_stream(page(0x02, "pc.rom")), PART_AT, "unknown RAM block 'pc.rom'"),
        (ram_stream(page(16 * 4096 | 0x02)), PART_AT, "outside RAM block 'pc.ram'"),
        (ram_stream(s.be64(0x02 | 0x20)), PART_AT, "CONTINUE flag but no earlier page"),
        (
            ram_stream(page(0x40) + b"\x01" + s.be16(4097)),
            PART_AT,
            "XBZRLE delta of 4097 bytes",
        ),
        (ram_stream(page(0x40) + b"\x02" + s.be16(4)), PART_AT, "wrong encoding 0x02"),
        (ram_stream(s.mem_size()), PART_AT, "a second MEM_SIZE record"),
        (ram_stream(s.EOS + s.footer(1)), PART_AT + 8, "footer for id 1: expected id 0"),
        (ram_stream(s.EOS + b"\x00"), PART_AT + 8, "expected the section footer"),
        (
            s.header()
            + s.section(0x01, 0, "ram", 0, 4)
            + s.be64(4096 | 0x04)
            + s.name("a")
            + s.be64(8192),
            33,
            "exceeds",
        ),  # fmt: skip
        (
            s.header() + s.section(0x04, 1, "xbzrle-digest", 0, 2),
            8,
            "'xbzrle-digest' section version 2",
        ),
        (s.header() + s.section(0x04, 1, "ram", 0, 4), 8, "FULL section"),
    ],
)
def test_malformed_streams_raise_stream_error_with_the_offset(stream, offset, message):
    with pytest.raises(StreamError, match=message) as info:
        parse_bytes(stream)
    assert info.value.offset == offset
    assert f"stream offset {offset}:" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_errors_are_sticky():
    parser = StreamParser()
    parser.feed(b"QEVX" + s.be32(3))
    with pytest.raises(StreamError):
        parser.next_event()
    with pytest.raises(StreamError):
        parser.next_event()
    with pytest.raises(StreamError):
        parser.close()


def test_page_records_after_the_ram_section_ended_are_rejected():
    stream = s.qemu_like_stream(devices=False)
    stream = stream[: stream.rindex(b"\x00\x06")] + page(0x02) + b"\x00"
    with pytest.raises(StreamError):
        parse_bytes(stream)


def test_huge_vmdesc_length_neither_allocates_nor_waits():
    tracemalloc.start()
    try:
        parser = StreamParser()
        parser.feed(s.header() + b"\x00\x06\xff\xff\xff\xff" + b"{" * 1000)
        with pytest.raises(StreamError, match="VMDESCRIPTION of 4294967295 bytes"):
            list(parser.events())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_a_large_vmdesc_limit_waits_for_data_without_preallocating():
    tracemalloc.start()
    try:
        parser = StreamParser(max_vmdesc=1 << 33)
        parser.feed(s.header() + b"\x00\x06\xff\xff\xff\xff")
        for _ in range(16):
            parser.feed(b" " * 65536)
            assert [type(e) for e in parser.events()] in ([], [Header, Eof])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    with pytest.raises(StreamError, match="VMDESCRIPTION JSON"):
        parser.close()


def test_huge_name_lengths_are_refused_up_front():
    with pytest.raises(StreamError, match="machine type name of 4294967295 bytes"):
        parse_bytes(s.header() + b"\x07\xff\xff\xff\xff")


def test_device_state_streams_through_in_bounded_chunks():
    tracemalloc.start()
    try:
        parser = StreamParser(device_chunk=4096)
        parser.feed(s.header() + s.section(0x04, 0, "timer", 0, 2))
        total = 0
        for _ in range(256):  # 16 MiB of device state
            parser.feed(bytes(65536))
            for event in parser.events():
                if isinstance(event, DeviceState):
                    assert len(event.data) <= 4096
                    total += len(event.data)
        parser.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 256 * 65536
    assert peak < 4 << 20


def test_find_vmdescription_locates_the_trailing_json():
    position, obj = find_vmdescription(STREAM[-200:])
    assert obj == s.VMDESC
    assert STREAM[-200:][position] == 0x06
    assert find_vmdescription(STREAM[:-1]) is None
    assert find_vmdescription(b"\x06\x00\x00") is None
