"""analyze / extract / receive on streams built here (no QEMU needed).

Hand-built QEMU-like streams (tests/stream_samples.py) and streams of our own
writer carrying real XBZRLE deltas; truncated and hostile inputs must fail
with the offset and what was recovered, and never allocate from a length.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stream_samples as S
from xbzrle import ParameterError, StreamError, codec
from xbzrle.cli import main
from xbzrle.guest.digest import ram_digest
from xbzrle.qemu import IncompleteStreamError, analyze_chunks, extract_chunks, receive
from xbzrle.stream import StreamWriter

PAGE = 4096


VALID_DELTA = b"\x02\x02\x07\x08"  # the sample's own delta has an empty literal run


def sample_stream(**options: bool) -> bytes:
    """stream_samples.qemu_like_stream() with an XBZRLE delta a strict decoder accepts."""
    return S.qemu_like_stream(**options).replace(b"\x02\x00\x01\x07", VALID_DELTA)


def expected_sample_ram() -> dict[str, bytes]:
    """What sample_stream() leaves in each block."""
    ram = {name: bytearray(size) for name, size in S.BLOCKS}
    ram["pc.ram"][0x3000:0x4000] = bytes([0xAB]) * PAGE
    vram_page = bytearray(PAGE)
    codec.decode_into(VALID_DELTA, vram_page)
    ram["vga.vram"][0x1000:0x2000] = vram_page
    return {name: bytes(data) for name, data in ram.items()}


def read_block(out: Path, manifest: dict, name: str) -> bytes:
    entry = next(b for b in manifest["blocks"] if b["name"] == name)
    return (out / entry["file"]).read_bytes()


# -- our own streams: random rounds of zero, normal and XBZRLE pages ----------------------

BLOCKS = (("pc.ram", 32 * PAGE), ("/rom@etc/acpi/tables", 4 * PAGE))


def own_stream(seed: int, rounds: int) -> tuple[bytes, dict[str, bytes], dict[str, int]]:
    """A stream of our writer; returns it, the final RAM and the page kinds sent."""
    rng = random.Random(seed)
    w = StreamWriter()
    src = {name: bytearray(size) for name, size in BLOCKS}
    dst_cache: dict[tuple[str, int], bytes] = {}  # what the destination holds, per page
    kinds = {"zero": 0, "normal": 0, "xbzrle": 0}
    out = [w.header(), w.configuration("pc-i440fx-7.2"), w.section_start(0, "ram", 0, 4),
           w.ram_blocks(BLOCKS), w.eos(), w.footer(0)]
    for rnd in range(rounds):
        final = rnd == rounds - 1
        out.append(w.section_end(0) if final else w.section_part(0))
        for name, size in BLOCKS:
            for offset in sorted(rng.sample(range(0, size, PAGE), k=size // PAGE // 2)):
                page = src[name][offset:offset + PAGE]
                for _ in range(rng.randint(1, 6)):  # a few small writes: XBZRLE territory
                    at = rng.randrange(PAGE)
                    page[at] = rng.randrange(256)
                if rng.random() < 0.1:
                    page[:] = bytes(PAGE)
                src[name][offset:offset + PAGE] = page
                old = dst_cache.get((name, offset))
                delta = codec.encode(old, bytes(page)) if old is not None else None
                if not any(page):
                    out.append(w.zero_page(name, offset))
                    kinds["zero"] += 1
                elif delta:
                    out.append(w.xbzrle_page(name, offset, delta))
                    kinds["xbzrle"] += 1
                else:
                    out.append(w.normal_page(name, offset, bytes(page)))
                    kinds["normal"] += 1
                dst_cache[(name, offset)] = bytes(page)
        out += [w.eos(), w.footer(0)]
    out.append(w.eof())
    return b"".join(out), {n: bytes(d) for n, d in src.items()}, kinds


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rounds=st.integers(1, 4))
def test_extract_rebuilds_our_streams_byte_for_byte(tmp_path_factory, seed, rounds):
    data, ram, kinds = own_stream(seed, rounds)
    out = tmp_path_factory.mktemp("own")
    chunk = random.Random(seed).randint(1, 5000)
    manifest = extract_chunks((data[i:i + chunk] for i in range(0, len(data), chunk)), out)
    assert manifest["complete"] and manifest["eof"]
    for name, content in ram.items():
        block = read_block(out, manifest, name)
        assert block == content
        entry = next(b for b in manifest["blocks"] if b["name"] == name)
        assert entry["ram_digest"] == ram_digest(content + bytes(-len(content) % 4096))
    assert {k: manifest["pages"][k] for k in kinds} == kinds
    report = analyze_chunks([data])
    assert report.complete and report.eof
    assert {k: t.pages for k, t in report.totals().items()} == kinds
    assert report.rounds[-1].final
    assert len(report.rounds) == rounds


def test_analyze_counts_wire_bytes_of_every_page_record():
    data, _, _ = own_stream(seed=7, rounds=3)
    report = analyze_chunks([data])
    totals = report.totals()
    assert totals["normal"].bytes >= totals["normal"].pages * (8 + PAGE)
    # Every byte of the stream is a page record or one of the few framing records.
    page_bytes = sum(t.bytes for t in totals.values())
    assert 0 < len(data) - page_bytes < 400


# -- QEMU-like streams -------------------------------------------------------------------

def test_analyze_qemu_like_stream_reports_everything():
    report = analyze_chunks([sample_stream()], "sample")
    d = report.to_dict()
    assert d["complete"] and d["error"] is None
    assert d["version"] == 3
    assert d["configuration"]["machine"] == S.MACHINE
    assert [(s["idstr"], s["kind"]) for s in d["sections"]] == [
        ("ram", "iterable"), ("timer", "full")]
    assert d["sections"][0]["parts"] == 1 and d["sections"][0]["ended"]
    assert d["ram"]["blocks"] == [{"name": n, "size": s} for n, s in S.BLOCKS]
    first, final = d["rounds"]
    assert (first["zero"]["pages"], first["normal"]["pages"], first["xbzrle"]["pages"]) == (1, 1, 1)
    assert first["normal"]["bytes"] == 8 + PAGE  # CONTINUE: no block name
    assert first["xbzrle"]["bytes"] == 8 + 1 + len("vga.vram") + 3 + 4
    assert final["final"] and final["zero"]["pages"] == 1
    assert d["devices"] == [{"name": "timer", "instance_id": 0, "version": None}]
    timer = d["sections"][1]["stream_offset"]
    assert d["device_state"] == {"stream_offset": timer,
                                 "bytes": len(sample_stream()) - timer}


def test_analyze_without_footers_or_devices():
    report = analyze_chunks([sample_stream(footers=False, devices=False)])
    assert report.complete and report.eof and report.device_state_offset is None
    assert report.devices == [{"name": "timer", "instance_id": 0, "version": None}]


def test_extract_qemu_like_stream_keeps_device_state_raw(tmp_path):
    data = sample_stream()
    manifest = extract_chunks([data], tmp_path)
    for name, content in expected_sample_ram().items():
        assert read_block(tmp_path, manifest, name) == content
    dev = manifest["device_state"]
    assert (tmp_path / dev["file"]).read_bytes() == data[dev["stream_offset"]:]
    assert manifest["devices"][0]["name"] == "timer"
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk == manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "device-state.bin", "manifest.json", "pc.ram.ram", "vga.vram.ram"]


def test_block_names_become_safe_unique_file_names(tmp_path):
    w = StreamWriter()
    blocks = (("/rom@etc/acpi/tables", PAGE), ("rom@etc/acpi/tables", PAGE), ("../x", PAGE))
    data = (w.header() + w.section_start(0, "ram", 0, 4) + w.ram_blocks(blocks) + w.eos()
            + w.footer(0) + w.section_end(0) + w.eos() + w.footer(0) + w.eof())
    manifest = extract_chunks([data], tmp_path)
    files = [b["file"] for b in manifest["blocks"]]
    assert len(set(files)) == 3
    assert all("/" not in f and not f.startswith(".") for f in files)
    assert all((tmp_path / f).stat().st_size == PAGE for f in files)


# -- truncated and hostile input ------------------------------------------------------

def test_every_truncation_fails_and_reports_what_was_recovered(tmp_path):
    data = sample_stream()
    ram_end = data.index(b"\x04\x00\x00\x00\x00\x05timer")  # the first device section
    for n, cut in enumerate(range(0, ram_end, 37)):
        out = tmp_path / str(n)
        with pytest.raises(IncompleteStreamError) as info:
            extract_chunks([data[:cut]], out)
        manifest = info.value.manifest
        assert not manifest["complete"]
        assert "recovered" in str(info.value) and "stream offset" in str(info.value)
        assert json.loads((out / "manifest.json").read_text())["complete"] is False
        assert manifest["stream_bytes"] == cut
    # Past the RAM, only device state is missing: the RAM is whole.
    manifest = extract_chunks([data[: ram_end + 20]], tmp_path / "late")
    assert manifest["complete"] and manifest["devices"] is None


def test_truncated_stream_keeps_pages_already_applied(tmp_path):
    data, ram, _ = own_stream(seed=3, rounds=2)
    cut = len(data) * 2 // 3
    with pytest.raises(IncompleteStreamError) as info:
        extract_chunks([data[:cut]], tmp_path)
    manifest = info.value.manifest
    assert manifest["pages"]["total"] > 0
    assert 0 < manifest["stream_bytes_parsed"] <= cut
    assert info.value.offset <= cut


def test_cli_extract_truncated_exits_nonzero_with_offset(tmp_path, capsys):
    stream = tmp_path / "cut.bin"
    data = sample_stream()
    stream.write_bytes(data[:300])
    assert main(["extract", str(stream), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "stream offset 300" in err and "recovered 1 pages" in err


def test_ram_over_the_limit_is_refused_before_creating_files(tmp_path):
    w = StreamWriter()
    data = (w.header() + w.section_start(0, "ram", 0, 4)
            + w.ram_blocks([("pc.ram", 1 << 40)]) + w.eos())
    with pytest.raises(IncompleteStreamError, match="more than the 68719476736-byte limit"):
        extract_chunks([data], tmp_path)
    assert not list(tmp_path.glob("*.ram"))


def test_announced_ram_is_sparse_not_allocated(tmp_path):
    w = StreamWriter()
    size = 256 << 20
    data = (w.header() + w.section_start(0, "ram", 0, 4) + w.ram_blocks([("pc.ram", size)])
            + w.eos() + w.footer(0) + w.section_end(0)
            + w.normal_page("pc.ram", size - PAGE, b"\x5a" * PAGE) + w.eos() + w.footer(0)
            + w.eof())
    tracemalloc.start()
    manifest = extract_chunks([data], tmp_path, max_ram=size)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 << 20
    st_ = os.stat(tmp_path / manifest["blocks"][0]["file"])
    assert st_.st_size == size
    assert st_.st_blocks * 512 < 16 << 20
    with open(tmp_path / manifest["blocks"][0]["file"], "rb") as f:
        f.seek(size - PAGE)
        assert f.read() == b"\x5a" * PAGE


def test_huge_length_fields_do_not_allocate(tmp_path):
    data = sample_stream(devices=False)
    eof = data.rindex(b"\x00\x06")
    hostile = data[: eof + 1] + b"\x06\xff\xff\xff\xff" + bytes(1 << 20)
    tracemalloc.start()
    report = analyze_chunks([hostile])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert report.error is not None and "4294967295 bytes" in report.error
    assert f"stream offset {eof + 1}" in report.error
    assert peak < 16 << 20


def test_bad_xbzrle_delta_names_its_record_and_counts_pages_before_it(tmp_path):
    data = S.qemu_like_stream()  # its delta has a literal run of length 0
    record = data.index(b"\x00\x00\x00\x00\x00\x00\x10\x40")
    with pytest.raises(IncompleteStreamError) as info:
        extract_chunks([data], tmp_path)
    assert f"stream offset {record}:" in str(info.value)
    assert info.value.manifest["pages"] == {"total": 2, "zero": 1, "normal": 1, "xbzrle": 0}
    assert read_block(tmp_path, info.value.manifest, "pc.ram")[0x3000:0x4000] == b"\xab" * PAGE


def test_bad_page_offset_names_the_offset(tmp_path):
    w = StreamWriter()
    head = w.header() + w.section_start(0, "ram", 0, 4) + w.ram_blocks([("pc.ram", PAGE)])
    head += w.eos() + w.footer(0) + w.section_part(0)
    bad = head + (0x1000 | 0x08).to_bytes(8, "big") + b"\x06pc.ram" + bytes(PAGE) + w.eos()
    with pytest.raises(IncompleteStreamError, match=f"stream offset {len(head)}: page offset"):
        extract_chunks([bad], tmp_path)


def test_output_dir_with_foreign_files_is_refused(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ParameterError, match="not empty"):
        extract_chunks([sample_stream()], tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_output_dir_of_an_earlier_extraction_is_reused(tmp_path):
    extract_chunks([sample_stream()], tmp_path)
    manifest = extract_chunks([sample_stream(devices=False)], tmp_path)
    assert manifest["device_state"] is None
    assert not (tmp_path / "device-state.bin").exists()


# -- CLI and receive ------------------------------------------------------------------

def test_cli_analyze_json_and_text(tmp_path, capsys):
    stream = tmp_path / "s.bin"
    stream.write_bytes(sample_stream())
    assert main(["analyze", str(stream), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["totals"]["xbzrle"]["pages"] == 1 and d["complete"]
    assert main(["analyze", str(stream)]) == 0
    text = capsys.readouterr().out
    assert "pc-i440fx-7.2" in text and "vga.vram" in text and "timer instance 0" in text


def test_cli_analyze_reports_a_broken_stream(tmp_path, capsys):
    stream = tmp_path / "s.bin"
    stream.write_bytes(sample_stream()[:-2000])
    assert main(["analyze", str(stream), "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["complete"] is False
    assert "stream offset" in captured.err


def _send_when_listening(data: bytes, chunk: int, close_early: bool = False):
    sent = threading.Event()

    def on_listening(address: str) -> None:
        host, port = address.split(":")[1:]

        def run() -> None:
            with socket.create_connection((host, int(port))) as sock:
                end = len(data) // 2 if close_early else len(data)
                for i in range(0, end, chunk):
                    sock.sendall(data[i:i + chunk])
            sent.set()

        threading.Thread(target=run, daemon=True).start()

    return on_listening, sent


def test_receive_over_tcp(tmp_path):
    data, ram, kinds = own_stream(seed=11, rounds=3)
    on_listening, sent = _send_when_listening(data, 1500)
    manifest = receive("tcp:127.0.0.1:0", tmp_path, on_listening=on_listening)
    assert sent.wait(5)
    assert manifest["complete"] and manifest["pages"]["xbzrle"] == kinds["xbzrle"]
    for name, content in ram.items():
        assert read_block(tmp_path, manifest, name) == content


def test_receive_reports_a_source_that_vanished(tmp_path):
    data, _, _ = own_stream(seed=12, rounds=3)
    on_listening, _ = _send_when_listening(data, 4096, close_early=True)
    with pytest.raises(IncompleteStreamError, match="recovered"):
        receive("tcp:127.0.0.1:0", tmp_path, on_listening=on_listening)


def test_receive_refuses_file_uris(tmp_path):
    with pytest.raises(ParameterError, match="extract"):
        receive(f"file:{tmp_path / 'x'}", tmp_path / "out")


def test_errors_are_stream_errors():
    assert issubclass(IncompleteStreamError, StreamError)


def test_extract_checksum_ram_digest_equals_the_migrations_own_digest(tmp_path, capsys):
    """`--checksum ram-digest` puts xbzrle's RAM digest in the manifest instead of
    SHA-256: for one of our migrations it is the digest the source sent, so a
    user can check the extraction against the stream without SHA-256's cost."""
    from xbzrle import Guest
    from xbzrle.migration.manager import MigrationManager

    stream = tmp_path / "stream"
    with Guest(ram="4M") as guest:
        ram = guest.blocks["pc.ram"]
        for index in (0, 5, 1000):
            ram.page(index)[7] = index % 250 + 1
        guest.stop()
        manager = MigrationManager(guest)
        manager.migrate(f"file:{stream}").wait()
        assert manager.query()["status"] == "completed"
        expected = guest.digest()["pc.ram"]
    assert main(["extract", str(stream), "-o", str(tmp_path / "out"), "--checksum",
                 "ram-digest"]) == 0
    assert f"ram-digest {expected}" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    (block,) = manifest["blocks"]
    assert manifest["checksum"] == "ram-digest" and block["sha256"] is None
    assert block["ram_digest"] == expected == manifest["source_digest"]["pc.ram"]["digest"]
    none = extract_chunks([stream.read_bytes()], tmp_path / "none", checksum="none")
    assert none["blocks"][0]["sha256"] is None and "ram_digest" not in none["blocks"][0]
    with pytest.raises(ParameterError, match="unknown checksum 'md5'"):
        extract_chunks([b""], tmp_path / "bad", checksum="md5")
