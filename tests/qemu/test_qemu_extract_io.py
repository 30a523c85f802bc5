"""Extract's I/O: full pages written into the block files (pwritev), the rest
through the maps; a stream file read as views of a mapping of it.

The two paths share the page cache, so whatever order the records come in
(a page written whole, then patched by an XBZRLE record or cleared by a zero
record in the same read; the same page sent twice; blocks interleaved;
addresses out of order), the files, the manifest's RAM digests and the
counts are those of the mapping-only path, and of the RAM the stream builds.
"""

from __future__ import annotations

import json
import mmap
import os
import random
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from support import wait_until
from xbzrle import codec
from xbzrle._backend import load_core
from xbzrle.cli import main
from xbzrle.guest.digest import ram_digest
from xbzrle.qemu import extract_chunks, extract_file, mappedram, ramfiles
from xbzrle.qemu.extract import StreamExtractor
from xbzrle.qemu.mappedram import mapped_file_chunks
from xbzrle.stream import StreamParser, StreamWriter

PAGE = 4096
BLOCKS = (("pc.ram", 96 * PAGE), ("vga.vram", 24 * PAGE), ("/rom@etc/acpi/tables", 8 * PAGE))
_core = load_core()


def zero_fill_record(block: str, offset: int, fill: int) -> bytes:
    """A ZERO record with a fill byte (QEMU sends 0; the format allows any)."""
    name = block.encode()
    return (offset | 0x02).to_bytes(8, "big") + bytes([len(name)]) + name + bytes([fill])


def mixed_stream(seed: int) -> tuple[bytes, dict[str, bytes], dict[str, int]]:
    """Rounds of PAGE, ZERO and XBZRLE records over three blocks, out of order.

    Each round sends runs of consecutive pages (the batched writes), then,
    in the same round and often right after, XBZRLE and ZERO records on pages
    of those runs, a page sent whole twice, and pages of the other blocks
    in between.  Returns the stream, the RAM it leaves and the page counts.
    """
    rng = random.Random(seed)
    w = StreamWriter()
    ram = {name: bytearray(size) for name, size in BLOCKS}
    kinds = {"zero": 0, "normal": 0, "xbzrle": 0}
    out = [w.header(), w.configuration("pc-i440fx-7.2"), w.section_start(0, "ram", 0, 4),
           w.ram_blocks(BLOCKS), w.eos(), w.footer(0)]

    def full(name: str, offset: int) -> None:
        page = rng.randbytes(PAGE)
        ram[name][offset:offset + PAGE] = page
        out.append(w.normal_page(name, offset, page))
        kinds["normal"] += 1

    def patch(name: str, offset: int) -> None:
        old = bytes(ram[name][offset:offset + PAGE])
        new = bytearray(old)
        for _ in range(rng.randint(1, 8)):
            new[rng.randrange(PAGE)] = rng.randrange(256)
        delta = codec.encode(old, bytes(new))
        if not delta:
            return
        ram[name][offset:offset + PAGE] = new
        out.append(w.xbzrle_page(name, offset, delta))
        kinds["xbzrle"] += 1

    def zero(name: str, offset: int, fill: int = 0) -> None:
        ram[name][offset:offset + PAGE] = bytes([fill]) * PAGE
        out.append(w.zero_page(name, offset) if fill == 0 else zero_fill_record(name, offset, fill))
        kinds["zero"] += 1

    rounds = 4
    for rnd in range(rounds):
        out.append(w.section_end(0) if rnd == rounds - 1 else w.section_part(0))
        for _ in range(12):
            name, size = rng.choice(BLOCKS)
            pages = size // PAGE
            start = rng.randrange(pages)
            run = [start + i for i in range(rng.randint(1, 9)) if start + i < pages]
            if rng.random() < 0.3:
                run.reverse()  # addresses going down: no run to batch
            for p in run:
                full(name, p * PAGE)
            # right after the run, on its own pages: read-modify-write and clearing
            for p in rng.sample(run, k=min(len(run), 2)):
                action = rng.random()
                if action < 0.5:
                    patch(name, p * PAGE)
                elif action < 0.7:
                    zero(name, p * PAGE)
                elif action < 0.8:
                    zero(name, p * PAGE, fill=0x5A)
                else:
                    full(name, p * PAGE)  # the same page whole, again
            other, other_size = rng.choice(BLOCKS)
            full(other, rng.randrange(other_size // PAGE) * PAGE)
            patch(other, rng.randrange(other_size // PAGE) * PAGE)
        out += [w.eos(), w.footer(0)]
    out.append(w.eof())
    return b"".join(out), {n: bytes(d) for n, d in ram.items()}, kinds


def extract(data: bytes, out: Path, chunk: int) -> tuple[dict, dict[str, bytes]]:
    manifest = extract_chunks((data[i:i + chunk] for i in range(0, len(data), chunk)), out)
    files = {b["name"]: (out / b["file"]).read_bytes() for b in manifest["blocks"]}
    return manifest, files


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("chunk", [1 << 20, 1000, 4104 * 3 + 17])
def test_written_pages_give_the_files_of_the_mapping_path(tmp_path, monkeypatch, seed, chunk):
    data, ram, kinds = mixed_stream(seed)
    results = {}
    # 0: every block through its map (the path before pwritev); 1: pc.ram written,
    # the others mapped, in the same read; default: all three written.
    for fds in (0, 1, ramfiles.WRITE_FDS):
        monkeypatch.setattr(ramfiles, "WRITE_FDS", fds)
        results[fds] = extract(data, tmp_path / f"fds{fds}", chunk)
    mapped_manifest, mapped_files = results[0]
    assert mapped_files == ram
    for fds, (manifest, files) in results.items():
        assert files == mapped_files, fds
        assert manifest["pages"] == {"total": sum(kinds.values()), **kinds}
        assert manifest["complete"]
        for entry in manifest["blocks"]:
            assert entry["ram_digest"] == ram_digest(ram[entry["name"]]), (fds, entry["name"])
        assert manifest["blocks"] == mapped_manifest["blocks"]


def test_extract_keeps_a_descriptor_only_for_the_largest_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(ramfiles, "WRITE_FDS", 2)
    files = ramfiles.RamFiles(tmp_path, (("small", PAGE), ("big", 8 * PAGE), ("mid", 4 * PAGE)))
    try:
        assert sorted(files.fds) == ["big", "mid"]
        fds = list(files.fds.values())
        for fd in fds:
            os.fstat(fd)  # open
    finally:
        files.close()
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)  # closed with the files


def test_load_pages_writes_full_pages_into_the_file_and_the_rest_into_ram(tmp_path):
    """The fd of a block entry takes the PAGE records; ZERO and XBZRLE go to ram.

    ``ram`` here is not a mapping of the file, so each write shows where it went.
    """
    w = StreamWriter()
    page = bytes(range(256)) * 16
    delta = codec.encode(bytes(PAGE), b"\x07" + bytes(PAGE - 1))
    records = (w.normal_page("b", 0, page) + w.normal_page("b", PAGE, page)
               + w.xbzrle_page("b", 3 * PAGE, delta) + w.normal_page("b", 2 * PAGE, page))
    path = tmp_path / "b.ram"
    ram = bytearray(4 * PAGE)
    hashes = bytearray(4 * 8)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, 4 * PAGE)
        pos, _last, _status, counts = _core.load_pages(records, 0, [(b"b", ram, None, hashes, fd)],
                                                       -1, True, 0)
    finally:
        os.close(fd)
    assert pos == len(records) and counts[0] == 4
    content = path.read_bytes()
    assert content == page * 3 + bytes(PAGE)
    assert ram[:3 * PAGE] == bytes(3 * PAGE) and ram[3 * PAGE] == 7
    # the digest table holds the hash of what each page now holds, wherever it was written
    truth = _core.page_hashes(content[:3 * PAGE] + bytes(ram[3 * PAGE:]))
    assert _core.table_pairs(hashes) == truth and len(truth) == 4 * 16


def test_long_runs_of_written_pages_are_hashed_into_the_table_as_they_are_written(tmp_path):
    """Runs of 64 pages and more are hashed on a second thread while they are
    written; a page patched right after its run waits for both.  The table
    then holds the hash of every page as the file and RAM hold it."""
    rng = random.Random(9)
    w = StreamWriter()
    npages = 400
    pages = [rng.randbytes(PAGE) for _ in range(npages)]
    delta = codec.encode(pages[70], b"\x01" + pages[70][1:])
    records = b"".join(w.normal_page("b", i * PAGE, pages[i]) for i in range(300))
    records += w.xbzrle_page("b", 70 * PAGE, delta)  # a page of the pending run
    records += b"".join(w.normal_page("b", i * PAGE, pages[i]) for i in range(300, npages))
    path = tmp_path / "b.ram"
    hashes = bytearray(npages * 8)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, npages * PAGE)
        with mmap.mmap(fd, npages * PAGE) as ram:
            pos, _last, _status, counts = _core.load_pages(
                records, 0, [(b"b", ram, None, hashes, fd)], -1, True, 0)
    finally:
        os.close(fd)
    content = path.read_bytes()
    assert pos == len(records) and counts[0] == npages + 1
    assert content[70 * PAGE] == 1 and content[71 * PAGE:] == b"".join(pages[71:])
    assert _core.table_pairs(hashes) == _core.page_hashes(content)


def test_a_failed_write_is_an_oserror_naming_the_block(tmp_path):
    w = StreamWriter()
    path = tmp_path / "b.ram"
    path.write_bytes(bytes(PAGE))
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as info:
            _core.load_pages(w.normal_page("b", 0, b"\x01" * PAGE), 0,
                             [(b"b", bytearray(PAGE), None, None, fd)], -1, True, 0)
    finally:
        os.close(fd)
    assert info.value.filename == "b" and info.value.errno is not None
    assert path.read_bytes() == bytes(PAGE)


def test_cli_extract_says_which_file_it_could_not_write(tmp_path, capsys, monkeypatch):
    """A write that fails (here: a descriptor made read-only) is one line naming the file."""
    data, _ram, _kinds = mixed_stream(4)
    stream = tmp_path / "s.bin"
    stream.write_bytes(data)
    created = ramfiles.RamFiles.__init__

    def read_only_fds(self, *args, **kwargs):
        created(self, *args, **kwargs)
        for name, fd in self.fds.items():
            ro = os.open(self.out_dir / self.files[name], os.O_RDONLY)
            os.dup2(ro, fd)
            os.close(ro)

    monkeypatch.setattr(ramfiles.RamFiles, "__init__", read_only_fds)
    out = tmp_path / "out"
    assert main(["extract", str(stream), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(out / "pc.ram.ram") in err and "Bad file descriptor" in err
    assert not (out / "manifest.json").exists()


def test_the_manifest_digest_is_the_files_digest(tmp_path):
    data, _ram, _kinds = mixed_stream(5)
    manifest = StreamExtractor(tmp_path)
    manifest.feed(data)
    result = manifest.finish()
    for entry in result["blocks"]:
        assert entry["ram_digest"] == ramfiles.file_digest(tmp_path / entry["file"],
                                                           entry["size"])
    assert json.loads((tmp_path / "manifest.json").read_text())["blocks"] == result["blocks"]


# -- the stream file, mapped ------------------------------------------------------------


def test_a_mapped_file_gives_what_a_pipe_gives(tmp_path, monkeypatch):
    data, ram, kinds = mixed_stream(6)
    stream = tmp_path / "s.bin"
    stream.write_bytes(data)
    seen = []
    monkeypatch.setattr("xbzrle.qemu.extract.MAPPED_CHUNK", 5000)  # many chunks, cut anywhere
    manifest = extract_file(stream, tmp_path / "mapped", on_progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == len(data) and len(seen) > 10
    piped = extract_chunks([data], tmp_path / "piped")
    for key in ("pages", "blocks", "stream_bytes_parsed", "complete"):
        assert manifest[key] == piped[key]
    for entry in manifest["blocks"]:
        assert (tmp_path / "mapped" / entry["file"]).read_bytes() == ram[entry["name"]]
    assert manifest["pages"] == {"total": sum(kinds.values()), **kinds}


def test_a_stream_file_cut_while_mapped_ends_the_stream_without_sigbus(tmp_path):
    """The chunks past the new end are not touched through the mapping."""
    stream = tmp_path / "s.bin"
    stream.write_bytes(bytes(range(256)) * 1024)  # 256 KiB
    with open(stream, "rb") as f:
        chunks = mapped_file_chunks(f, StreamParser(), 64 << 10)
        assert chunks is not None
        got = [bytes(next(chunks))]
        os.truncate(stream, 100_000)  # a reader of the first chunk: not where the file ends
        got += [bytes(c) for c in chunks]
    assert b"".join(got) == (bytes(range(256)) * 1024)[:100_000]


def _mapped_present(path: Path, offset: int, length: int) -> list[bool]:
    """Whether each page of path[offset:offset + length] is mapped in this process
    (its page table entry present: /proc/self/pagemap bit 63), in the first
    mapping of the file /proc/self/maps lists."""
    with open("/proc/self/maps") as maps:
        for entry in maps:
            fields = entry.split()
            if len(fields) >= 6 and fields[5] == str(path):
                start = int(fields[0].split("-")[0], 16) - int(fields[2], 16)
                break
        else:
            raise AssertionError(f"{path} is not mapped")
    first = (start + offset) // PAGE
    with open("/proc/self/pagemap", "rb") as pagemap:
        pagemap.seek(first * 8)
        raw = pagemap.read(length // PAGE * 8)
    return [bool(int.from_bytes(raw[i:i + 8], "little") >> 63) for i in range(0, len(raw), 8)]


def test_the_next_piece_of_a_stream_file_is_mapped_while_the_consumer_holds_this_one(
        tmp_path, monkeypatch):
    """While the consumer holds chunk k, chunk k + 1 is mapped (MADV_POPULATE_READ)
    on the map-ahead thread; the pages behind the parser are let go."""
    piece = 64 << 10
    stream = tmp_path / "s.bin"
    stream.write_bytes(random.Random(1).randbytes(4 * piece))
    calls = []
    real = _core.populate_read

    def populate_read(mapping, offset, length):
        calls.append((threading.current_thread().name, offset, length))
        return real(mapping, offset, length)

    monkeypatch.setattr(mappedram, "_core", SimpleNamespace(populate_read=populate_read))
    with open(stream, "rb") as f:
        chunks = mapped_file_chunks(f, StreamParser(), piece)
        assert chunks is not None
        del calls[:]  # the probe of whether the kernel can map pages at all
        got = [bytes(next(chunks))]
        wait_until(lambda: any(name.startswith("extract-map-ahead") and (at, n) == (piece, piece)
                               for name, at, n in calls),
                   message="the second chunk was not mapped ahead")
        assert all(_mapped_present(stream, piece, piece))
        got.append(bytes(next(chunks)))
        assert not any(_mapped_present(stream, 0, piece))  # let go behind the parser
        got += [bytes(c) for c in chunks]
    assert b"".join(got) == stream.read_bytes()
    # Each chunk is also mapped by the generator itself before it is handed out.
    assert [(at, n) for name, at, n in calls if name == threading.current_thread().name] == \
        [(k * piece, piece) for k in range(4)]


def test_a_piece_mapped_ahead_and_then_jumped_over_is_let_go(tmp_path):
    """A parser jump (mapped-ram regions) leaves the piece mapped ahead unused:
    it is unmapped, so the process does not keep pages it will not read."""
    piece = 64 << 10
    stream = tmp_path / "s.bin"
    stream.write_bytes(bytes(8 * piece))
    with open(stream, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 8 * piece, prot=mmap.PROT_READ)
        ahead = mappedram._MapAhead(mapped)
        try:
            ahead.start(piece, piece)
            ahead.settle(piece)  # the next piece starts where the mapping ahead did: kept
            assert all(_mapped_present(stream, piece, piece))
            ahead.start(2 * piece, piece)
            ahead.settle(6 * piece)  # the parser jumped to 6 pieces in
            assert not any(_mapped_present(stream, 2 * piece, piece))
        finally:
            ahead.close()
            mapped.close()


def test_populate_read_refuses_what_it_cannot_map(tmp_path):
    stream = tmp_path / "s.bin"
    stream.write_bytes(bytes(4 * PAGE))
    with open(stream, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 4 * PAGE, prot=mmap.PROT_READ)
        try:
            with pytest.raises(ValueError):
                _core.populate_read(mapped, 3 * PAGE, 2 * PAGE)
            os.truncate(stream, PAGE)  # the mapping now reaches past the file's end
            _core.populate_read(mapped, 0, PAGE)
            with pytest.raises(OSError):
                _core.populate_read(mapped, 2 * PAGE, PAGE)
        finally:
            mapped.close()


def test_only_regular_files_are_mapped(tmp_path):
    read, write = os.pipe()
    try:
        with open(read, "rb", closefd=False) as f:
            assert mapped_file_chunks(f, StreamParser()) is None
    finally:
        os.close(read)
        os.close(write)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with open(empty, "rb") as f:
        assert mapped_file_chunks(f, StreamParser()) is None


_PEAK = ("import re, sys\n"
         "from xbzrle.qemu import extract_file\n"
         "extract_file(sys.argv[1], sys.argv[2])\n"
         "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n")


def test_memory_does_not_grow_with_the_stream_file(tmp_path):
    """The mapped stream's pages are let go behind the parser (and the block's
    pages are written, not mapped): a 256 MiB stream leaves the peak RSS far below."""
    w = StreamWriter()
    pages = 65536
    page = bytes(range(256)) * 16
    stream = tmp_path / "s.bin"
    with open(stream, "wb") as f:
        f.write(w.header() + w.section_start(0, "ram", 0, 4)
                + w.ram_blocks([("pc.ram", pages * PAGE)]) + w.eos() + w.footer(0)
                + w.section_end(0))
        for i in range(pages):
            f.write(w.normal_page("pc.ram", i * PAGE, page))
        f.write(w.eos() + w.footer(0) + w.eof())
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    env.pop("LD_PRELOAD", None)  # under scripts/asan-test: the child is the normal build
    child = subprocess.run([sys.executable, "-c", _PEAK, str(stream), str(tmp_path / "out")],
                           env=env, capture_output=True, check=True)
    peak_mib = int(child.stdout.split()[-1]) / 1024
    assert peak_mib < 128, peak_mib  # about 30 MiB; 280 MiB if the pages stayed mapped
    assert (tmp_path / "out" / "pc.ram.ram").stat().st_size == pages * PAGE
