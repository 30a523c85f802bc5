"""QEMU's mapped-ram files (QEMU 9.0+): analyze shows the layout, extract rebuilds the RAM.

The files come from tests/mappedram_samples.py, a writer of QEMU's layout
that shares no code with the reader.  Hostile variants must end in one
clear StreamError, and a block claiming far more than the file holds must
cost what the file holds, not what it claims.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mappedram_samples as M
from xbzrle import StreamError
from xbzrle.cli import main
from xbzrle.guest.digest import ram_digest
from xbzrle.qemu import analyze_chunks, analyze_file, extract_file
from xbzrle.qemu.mappedram import bitmap_runs
from xbzrle.stream import MappedRamBlock, StreamParser, parse_bytes
from xbzrle.stream import records as ev

PAGE = M.PAGE
SRC = str(Path(__file__).resolve().parents[2] / "src")


def guest_ram(seed: int, blocks: list[tuple[str, int]]) -> dict[str, bytearray]:
    """RAM with pages of every kind: random, a few changed bytes, zero."""
    rng = random.Random(seed)
    ram = {}
    for block, size in blocks:
        data = bytearray(size)
        for offset in range(0, size, PAGE):
            kind = rng.random()
            if kind < 0.4:
                data[offset:offset + PAGE] = rng.randbytes(PAGE)
            elif kind < 0.7:
                data[offset + rng.randrange(PAGE)] = rng.randrange(1, 256)
        ram[block] = data
    return ram


BLOCKS = [("pc.ram", 96 * PAGE), ("/rom@etc/acpi/tables", 3 * PAGE), ("vga.vram", 64 * PAGE)]


def expected_present_sha256(data: bytes) -> str:
    """The manifest's present_sha256, computed the slow, obvious way."""
    present = [i for i in range(len(data) // PAGE) if any(data[i * PAGE:(i + 1) * PAGE])]
    digest = hashlib.sha256()
    runs: list[list[int]] = []
    for i in present:
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1][1] += 1
        else:
            runs.append([i, 1])
    for first, count in runs:
        digest.update(struct.pack(">QQ", first * PAGE, count * PAGE))
        digest.update(data[first * PAGE:(first + count) * PAGE])
    return digest.hexdigest()


def live_save(path: Path, seed: int, rounds: int = 3) -> tuple[M.MappedRamWriter, dict]:
    """A live save: pages sent in several rounds, rewritten in place, some turned zero."""
    rng = random.Random(seed)
    ram = guest_ram(seed, BLOCKS)
    with open(path, "w+b") as f:
        w = M.MappedRamWriter(f, BLOCKS)
        w.setup()
        for rnd in range(rounds):
            for block, size in BLOCKS:
                for offset in range(0, size, PAGE):
                    if rnd == 0 or rng.random() < 0.3:
                        if rnd and rng.random() < 0.3:  # dirtied: new bytes or all zero
                            new = rng.randbytes(PAGE) if rng.random() < 0.5 else bytes(PAGE)
                            ram[block][offset:offset + PAGE] = new
                        w.page(block, offset, bytes(ram[block][offset:offset + PAGE]))
            if rnd < rounds - 1:
                w.iterate()
        w.complete()
    return w, {name: bytes(data) for name, data in ram.items()}


# -- the writer follows QEMU's documented layout ---------------------------------------

def test_file_layout_matches_qemu_field_by_field(tmp_path):
    path = tmp_path / "save.bin"
    ram = guest_ram(1, BLOCKS)
    w = M.write_file(path, ram)
    raw = path.read_bytes()
    assert raw[:8] == b"QEVM\x00\x00\x00\x03"
    assert b"\x0aMAPPED-RAM".lower() in raw[:200]  # the capability is listed by name
    for block, size in BLOCKS:
        b = w.blocks[block]
        # the MEM_SIZE entry, then the header right after it
        entry = raw[b.entry_offset:b.header_offset]
        assert entry == bytes([len(block)]) + block.encode() + struct.pack(">Q", size)
        version, page_size, bitmap_offset, pages_offset = struct.unpack_from(
            ">IQQQ", raw, b.header_offset)
        assert version == 1
        assert page_size == 4096
        assert bitmap_offset == b.header_offset + 28  # the packed header is 28 bytes
        bitmap_size = -(-size // PAGE // 64) * 8  # BITS_TO_LONGS(pages) * 8
        assert pages_offset % 0x100000 == 0
        assert pages_offset - 0x100000 < bitmap_offset + bitmap_size <= pages_offset
        # the bitmap: bit i (little-endian words) set exactly for the non-zero pages
        bits = int.from_bytes(raw[bitmap_offset:bitmap_offset + bitmap_size], "little")
        for i in range(size // PAGE):
            page = ram[block][i * PAGE:(i + 1) * PAGE]
            assert bool(bits >> i & 1) == any(page), (block, i)
            if any(page):
                at = pages_offset + i * PAGE
                assert raw[at:at + PAGE] == page
        assert bits >> (size // PAGE) == 0
        # the parser finds the same fields and goes on at the end of the pages region
    events = parse_bytes(raw)
    headers = [e for e in events if isinstance(e, MappedRamBlock)]
    assert [(h.block, h.size, h.version, h.page_size, h.bitmap_offset, h.pages_offset)
            for h in headers] == [
        (n, s, 1, PAGE, w.blocks[n].bitmap_offset, w.blocks[n].pages_offset) for n, s in BLOCKS]
    ram_blocks = next(e for e in events if isinstance(e, ev.RamBlocks))
    assert ram_blocks.blocks == tuple(BLOCKS)
    eos = [e for e in events if isinstance(e, ev.EndOfSection)]
    last = w.blocks[BLOCKS[-1][0]]
    assert eos[0].stream_offset == last.pages_offset + last.size
    assert not any(isinstance(e, ev.ZeroPage | ev.NormalPage | ev.XbzrlePage) for e in events)


def test_bitmap_runs_find_every_set_bit():
    rng = random.Random(7)
    for _ in range(200):
        nbits = rng.choice([8, 64, 512, 600, 4096])
        density = rng.random()
        bits = [rng.random() < density for _ in range(nbits)]
        data = sum(1 << i for i, b in enumerate(bits) if b).to_bytes(nbits // 8 + 1, "little")
        found = set()
        for page, count in bitmap_runs(data, 1000):
            assert count > 0
            found.update(range(page - 1000, page - 1000 + count))
        assert found == {i for i, b in enumerate(bits) if b}


# -- extract and analyze ---------------------------------------------------------------

@pytest.mark.parametrize("seed", [3, 4])
def test_extract_rebuilds_every_block_byte_exact(tmp_path, seed):
    path = tmp_path / "save.bin"
    w, ram = live_save(path, seed)
    out = tmp_path / "out"
    manifest = extract_file(path, out)
    assert manifest["complete"] is True and manifest["error"] is None
    assert manifest["mapped_ram"] is True
    assert manifest["stream_bytes"] == manifest["stream_bytes_parsed"] == path.stat().st_size
    assert manifest["pages"]["xbzrle"] == 0 and manifest["pages"]["zero"] == 0
    present = 0
    for entry in manifest["blocks"]:
        data = ram[entry["name"]]
        assert (out / entry["file"]).read_bytes() == data
        pages = sum(1 for i in range(0, len(data), PAGE) if any(data[i:i + PAGE]))
        assert entry["pages_present"] == pages
        assert entry["present_sha256"] == expected_present_sha256(data)
        assert entry["ram_digest"] == ram_digest(data)
        present += pages
    assert manifest["pages"]["normal"] == manifest["pages"]["total"] == present
    raw = path.read_bytes()
    assert (out / "device-state.bin").read_bytes() == raw[w.device_offset:]
    assert [d["name"] for d in manifest["devices"]] == ["timer"]


def test_a_page_turned_zero_is_zero_although_its_slot_keeps_old_bytes(tmp_path):
    path = tmp_path / "save.bin"
    with open(path, "w+b") as f:
        w = M.MappedRamWriter(f, [("pc.ram", 4 * PAGE)])
        w.setup()
        w.page("pc.ram", PAGE, b"\x55" * PAGE)
        w.iterate()
        w.page("pc.ram", PAGE, bytes(PAGE))  # QEMU clears the bit, the slot is not rewritten
        w.complete()
    slot = w.blocks["pc.ram"].pages_offset + PAGE
    assert path.read_bytes()[slot:slot + PAGE] == b"\x55" * PAGE
    manifest = extract_file(path, tmp_path / "out")
    assert (tmp_path / "out" / "pc.ram.ram").read_bytes() == bytes(4 * PAGE)
    assert manifest["blocks"][0]["pages_present"] == 0


def test_analyze_shows_blocks_pages_present_and_layout(tmp_path, capsys):
    path = tmp_path / "save.bin"
    w, ram = live_save(path, 5)
    assert main(["analyze", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["complete"] is True and report["error"] is None
    assert report["size"] == report["end_offset"] == path.stat().st_size
    assert report["configuration"]["capabilities"] == ["mapped-ram"]
    assert report["ram"]["blocks"] == [{"name": n, "size": s} for n, s in BLOCKS]
    assert report["totals"]["normal"]["pages"] == 0  # no page records in the stream
    assert [c["name"] for c in report["commands"]] == ["SWITCHOVER_START"]
    mapped = report["mapped_ram"]
    total = 0
    for info, (block, size) in zip(mapped["blocks"], BLOCKS, strict=True):
        b = w.blocks[block]
        pages = sum(1 for i in range(0, size, PAGE) if any(ram[block][i:i + PAGE]))
        total += pages
        assert info == {
            "name": block, "size": size, "stream_offset": b.entry_offset,
            "header_version": 1, "page_size": PAGE,
            "bitmap_offset": b.bitmap_offset, "bitmap_size": b.bitmap_size,
            "pages_offset": b.pages_offset, "pages_end": b.pages_offset + size,
            "pages": size // PAGE, "pages_present": pages}
    assert mapped["pages_present"] == total

    assert main(["analyze", str(path)]) == 0
    text = capsys.readouterr().out
    assert "capabilities (configuration/capabilities): mapped-ram" in text
    assert f"mapped-ram: RAM at fixed file offsets, {total} pages present" in text
    first = w.blocks["pc.ram"]
    assert f"pc.ram: header v1 at offset {first.entry_offset}, 4096-byte pages" in text
    assert f"pages   {first.pages_offset:>14} .. {first.pages_offset + 96 * PAGE}" in text
    assert "SWITCHOVER_START (0x0b, 0 bytes)" in text


def test_a_pipe_skips_the_regions_but_extract_needs_the_file(tmp_path):
    path = tmp_path / "save.bin"
    live_save(path, 6)
    raw = path.read_bytes()
    # Fed as plain chunks (no jumps): the parser drops the regions, the layout is still read.
    report = analyze_chunks([raw[i:i + 10000] for i in range(0, len(raw), 10000)], "pipe")
    assert report.complete and report.error is None
    assert report.end_offset == len(raw)
    assert [i.block.block for i in report.mapped_ram] == [n for n, _ in BLOCKS]
    assert report.mapped_ram_pages_present() is None
    # Through a real pipe, extract says it needs the file; nothing breaks.
    code = (f"import sys; sys.path.insert(0, {SRC!r}); from xbzrle.cli import main; "
            f"sys.exit(main(['extract', '-', '-o', {str(tmp_path / 'out')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], input=raw, capture_output=True,
                          timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr.decode()
    assert "extract it from the file itself" in proc.stderr.decode()
    assert len(proc.stderr.decode().strip().splitlines()) == 1


def test_a_block_claiming_16_gib_with_one_page_costs_one_page(tmp_path):
    """Sparse input, sparse output, the bitmap read in bounded chunks, one page hashed."""
    size = 16 << 30
    path = tmp_path / "big.bin"
    with open(path, "w+b") as f:
        w = M.MappedRamWriter(f, [("pc.ram", size)])
        w.setup()
        w.page("pc.ram", size - PAGE, b"\x77" * PAGE)
        w.complete()
    assert path.stat().st_blocks * 512 < 4 << 20  # the writer left holes, as QEMU does
    tracemalloc.start()
    try:
        report = analyze_file(path)
        manifest = extract_file(path, tmp_path / "out", max_ram=size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    assert report.complete and report.mapped_ram_pages_present() == 1
    assert manifest["complete"] and manifest["blocks"][0]["pages_present"] == 1
    out = tmp_path / "out" / "pc.ram.ram"
    assert out.stat().st_size == size
    assert out.stat().st_blocks * 512 < 1 << 20  # only the page present was written
    with open(out, "rb") as f:
        f.seek(size - PAGE)
        assert f.read() == b"\x77" * PAGE
        f.seek(size // 2)
        assert f.read(PAGE) == bytes(PAGE)
    expected = hashlib.sha256(struct.pack(">QQ", size - PAGE, PAGE) + b"\x77" * PAGE)
    assert manifest["blocks"][0]["present_sha256"] == expected.hexdigest()


# -- hostile files ----------------------------------------------------------------------

def hostile(tmp_path, **fields) -> tuple[Path, M.MappedRamWriter]:
    path = tmp_path / "hostile.bin"
    w = M.write_file(path, guest_ram(8, BLOCKS[:2]), header_fields={"pc.ram": fields})
    return path, w


def bad_header_cases():
    def past_end(w):  # the pages region ends far past the end of the file
        return {"pages_offset": w.blocks["pc.ram"].pages_offset + (1 << 40)}
    return [
        ("version", lambda w: {"version": 2}, "header version 2: expected 1"),
        ("version 0", lambda w: {"version": 0}, "header version 0: expected 1"),
        ("page size", lambda w: {"page_size": 65536}, "page size 65536"),
        ("unaligned pages", lambda w: {"pages_offset": w.blocks["pc.ram"].pages_offset + 512},
         "is not aligned to 4096-byte pages"),
        ("bitmap over the header", lambda w: {"bitmap_offset": w.blocks["pc.ram"].header_offset},
         "overlaps its header or an earlier region"),
        ("bitmap over the pages", lambda w: {"bitmap_offset": w.blocks["pc.ram"].pages_offset},
         "overlaps the pages region"),
        ("pages over the bitmap", lambda w: {"pages_offset": w.blocks["pc.ram"].bitmap_offset
                                             // PAGE * PAGE},
         "overlaps"),
        ("past the end", past_end, "mapped-ram block 'pc.ram' up to offset"),
        ("beyond any file", lambda w: {"pages_offset": 1 << 63}, "beyond any file"),
    ]


@pytest.mark.parametrize("label,fields,message", bad_header_cases(),
                         ids=[c[0] for c in bad_header_cases()])
def test_bad_headers_are_one_clear_stream_error(tmp_path, capsys, label, fields, message):
    probe = tmp_path / "probe"
    probe.mkdir()
    _, w = hostile(probe)  # where the honest layout puts things
    path, _ = hostile(tmp_path, **fields(w))
    report = analyze_file(path)
    assert not report.complete
    assert message in report.error
    assert report.error.startswith("stream offset ")
    with pytest.raises(StreamError, match="stream offset"):
        extract_file(path, tmp_path / "out")
    assert main(["extract", str(path), "-o", str(tmp_path / "out2")]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_bits_past_the_block_are_refused(tmp_path):
    path = tmp_path / "save.bin"
    w = M.write_file(path, {"pc.ram": bytes(3 * PAGE) + b"\x01" * PAGE})
    b = w.blocks["pc.ram"]
    with open(path, "r+b") as f:  # a bitmap that goes on past the block's 4 pages
        f.seek(b.bitmap_offset)
        f.write(bytes([0b1001_1000]))
    report = analyze_file(path)
    assert "the bitmap marks page 4, past the block's 4 pages" in report.error
    with pytest.raises(StreamError, match="past the block's 4 pages"):
        extract_file(path, tmp_path / "out")


@pytest.mark.parametrize("block", ["pc.ram", "vga.vram"])
def test_a_file_cut_inside_the_pages_is_refused(tmp_path, block):
    path = tmp_path / "save.bin"
    w = M.write_file(path, guest_ram(9, BLOCKS))
    b = w.blocks[block]
    cut = b.pages_offset + 10 * PAGE
    os.truncate(path, cut)
    report = analyze_file(path)
    assert not report.complete
    assert report.error == (
        f"stream offset {cut}: the stream ended inside the record at offset {b.entry_offset}: "
        f"expected the bitmap and pages of mapped-ram block '{block}' up to offset "
        f"{b.pages_offset + b.size}")
    with pytest.raises(StreamError) as info:
        extract_file(path, tmp_path / "out")
    if block == "vga.vram":  # the last block: its pages are read before the stream goes on
        assert (f"stream offset {b.entry_offset}: mapped-ram block 'vga.vram': pages region "
                f"at offset {b.pages_offset} ends at {b.pages_offset + b.size}, past the end "
                f"of the file ({cut} bytes)") in str(info.value)
    else:
        assert str(info.value).startswith(report.error)


def test_a_block_claiming_an_exabyte_is_refused_before_any_allocation(tmp_path):
    path = tmp_path / "save.bin"
    with open(path, "w+b") as f:
        w = M.MappedRamWriter(f, [("pc.ram", 1 << 60)])
        w.setup(after_blocks=False)  # the header says 1 EiB, the file ends right after it
    tracemalloc.start()
    try:
        report = analyze_file(path)
        with pytest.raises(StreamError, match="more than the"):
            extract_file(path, tmp_path / "out")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20
    assert "the stream ended inside the record" in report.error


def test_page_records_in_a_mapped_ram_stream_are_refused(tmp_path):
    path = tmp_path / "save.bin"
    M.write_file(path, {"pc.ram": b"\x01" * PAGE})
    raw = path.read_bytes()
    eos = raw.index(M.EOS + M.footer(2))
    for record, message in [
        (M.be64(0x40) + M.name("pc.ram") + b"\x01" + M.be16(1) + b"\x00",
         "Mapped-ram migration is incompatible with xbzrle"),
        (M.be64(0x08) + M.name("pc.ram") + bytes(PAGE), "PAGE page record in a mapped-ram"),
        (M.be64(0x02) + M.name("pc.ram") + b"\x00", "ZERO page record in a mapped-ram"),
    ]:
        with pytest.raises(StreamError, match=message) as info:
            parse_bytes(raw[:eos] + record + raw[eos:])
        assert info.value.offset == eos


def test_multifd_flush_is_harmless_with_mapped_ram(tmp_path):
    path = tmp_path / "save.bin"
    M.write_file(path, {"pc.ram": b"\x01" * PAGE})
    raw = path.read_bytes()
    eos = raw.index(M.EOS + M.footer(2))
    events = parse_bytes(raw[:eos] + M.be64(0x200) + raw[eos:])
    assert any(isinstance(e, ev.EndOfSection) for e in events)


def test_jump_is_only_allowed_to_the_offset_the_parser_waits_for(tmp_path):
    path = tmp_path / "save.bin"
    w = M.write_file(path, {"pc.ram": b"\x01" * PAGE})
    raw = path.read_bytes()
    b = w.blocks["pc.ram"]
    parser = StreamParser()
    parser.feed(raw[:b.header_offset + 28])
    events = list(parser.events())
    assert isinstance(events[-1], ev.RamBlocks)
    assert parser.skip_target == b.pages_offset + PAGE
    with pytest.raises(ValueError):
        parser.jump(b.pages_offset)
    parser.jump(b.pages_offset + PAGE)
    parser.feed(raw[b.pages_offset + PAGE:])
    list(parser.events())
    parser.close()
    assert parser.offset == len(raw)


@settings(max_examples=150, deadline=None)
@given(edits=st.lists(st.tuples(st.one_of(st.integers(0, 400),  # up to the first header
                                          st.integers(0x102000, 0x102040),  # the second one
                                          st.integers(0x201000, 0x2014a0)),  # the stream after them
                                st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 3 << 20)))
def test_damaged_files_give_a_stream_error_or_a_whole_result(tmp_path_factory, edits, cut):
    """Bytes of the header area changed, or the file cut anywhere: never another exception."""
    d = tmp_path_factory.mktemp("fuzz")
    path = d / "save.bin"
    M.write_file(path, {"pc.ram": b"\x01" * PAGE + bytes(PAGE), "vga.vram": b"\x02" * PAGE})
    with open(path, "r+b") as f:
        for at, value in edits:
            f.seek(at)
            f.write(bytes([value]))
        if cut is not None:
            f.truncate(cut)
    report = analyze_file(path)
    assert report.error is None or report.error.startswith("stream offset ")
    try:
        manifest = extract_file(path, d / "out", max_ram=1 << 30)
    except StreamError as exc:
        assert str(exc).startswith("stream offset ")
    else:
        assert manifest["complete"]


def test_extract_summary_names_the_present_pages_hash(tmp_path, capsys):
    """The text summary shows what was hashed for a mapped-ram block, never 'None'."""
    path = tmp_path / "save.bin"
    live_save(path, 5)
    assert main(["extract", str(path), "-o", str(tmp_path / "out")]) == 0
    manifest = extract_file(path, tmp_path / "again")
    out = capsys.readouterr().out
    assert "None" not in out
    for entry in manifest["blocks"]:
        assert f"{entry['present_sha256']} ({entry['pages_present']} pages present)" in out
