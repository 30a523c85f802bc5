"""What current QEMU streams carry, and the stream features we refuse by name.

QEMU 10 sends a SWITCHOVER_START command (QEMU_VM_COMMAND 0x08, command
0x0b, no data) after the last PART of the ram section and before its END;
analyze shows it by name, and extract still rebuilds the RAM.  Streams
that cannot be rebuilt from the stream alone (multifd channels, postcopy,
x-ignore-shared, page records in a mapped-ram stream) end in one clear
StreamError line naming the feature.
"""

from __future__ import annotations

import json

import pytest

import mappedram_samples as M
import stream_samples as S
from xbzrle import StreamError
from xbzrle.cli import main
from xbzrle.qemu import analyze_chunks, extract_chunks
from xbzrle.stream import parse_bytes
from xbzrle.stream import records as ev

PAGE = S.PAGE
VALID_DELTA = b"\x02\x02\x07\x08"


def qemu10_stream(extra_commands: bytes = b"", config: bytes | None = None) -> bytes:
    """A QEMU 10.2-shaped precopy stream: SWITCHOVER_START between the last PART and END."""
    sid = 2
    out = S.header() + (config if config is not None else M.configuration("pc-q35-10.2", ()))
    out += S.section(0x01, sid, "ram", 0, 4) + S.mem_size() + S.EOS + S.footer(sid)
    rounds = S.ram_round_pages().replace(b"\x02\x00\x01\x07", VALID_DELTA)
    out += bytes([0x02]) + S.be32(sid) + rounds + S.EOS + S.footer(sid)
    out += extra_commands
    out += M.command(M.SWITCHOVER_START)
    out += bytes([0x03]) + S.be32(sid) + S.be64(0x5000 | 0x08) + S.name("pc.ram") \
        + b"\x11" * PAGE + S.EOS + S.footer(sid)
    out += S.section(0x04, 0, "timer", 0, 2) + S.DEVICE_BYTES
    text = json.dumps(S.VMDESC).encode()
    return out + b"\x00" + bytes([0x06]) + S.be32(len(text)) + text


def test_switchover_start_is_read_and_shown_by_name(tmp_path, capsys):
    raw = qemu10_stream()
    at = raw.index(M.command(M.SWITCHOVER_START))
    events = parse_bytes(raw)
    assert ev.Command(0x0B, b"") in events
    report = analyze_chunks([raw])
    assert report.complete and report.error is None
    assert [(c.name, c.cmd, c.length, c.stream_offset) for c in report.commands] == [
        ("SWITCHOVER_START", 0x0B, 0, at)]
    path = tmp_path / "qemu10.bin"
    path.write_bytes(raw)
    assert main(["analyze", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["commands"] == [
        {"cmd": 11, "name": "SWITCHOVER_START", "length": 0, "stream_offset": at}]
    assert data["mapped_ram"] is None
    assert data["rounds"][-1]["final"] is True
    assert main(["analyze", str(path)]) == 0
    text = capsys.readouterr().out
    assert f"  SWITCHOVER_START (0x0b, 0 bytes) at offset {at}" in text
    manifest = extract_chunks([raw], tmp_path / "out")
    assert manifest["complete"] and manifest["mapped_ram"] is False
    ram = (tmp_path / "out" / "pc.ram.ram").read_bytes()
    assert ram[0x3000:0x4000] == b"\xab" * PAGE and ram[0x5000:0x6000] == b"\x11" * PAGE


def test_other_commands_are_named_and_unknown_ones_numbered():
    raw = qemu10_stream(extra_commands=M.command(2, S.be32(7)) + M.command(3, bytes(16))
                        + M.command(0x42))
    report = analyze_chunks([raw])
    assert report.error is None
    assert [c.name for c in report.commands] == [
        "PING", "POSTCOPY_ADVISE", "UNKNOWN_0x42", "SWITCHOVER_START"]


def test_capabilities_are_shown_by_name(tmp_path, capsys):
    path = tmp_path / "save.bin"
    M.write_file(path, {"pc.ram": b"\x01" * PAGE})
    assert main(["analyze", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["configuration"]["capabilities"] == ["mapped-ram"]


@pytest.mark.parametrize("cmd,label", [
    (4, "POSTCOPY_LISTEN"), (5, "POSTCOPY_RUN"), (6, "POSTCOPY_RAM_DISCARD"),
    (7, "PACKAGED"), (8, "ENABLE_COLO"), (9, "POSTCOPY_RESUME"), (10, "RECV_BITMAP")])
def test_postcopy_and_colo_are_refused_by_name(tmp_path, capsys, cmd, label):
    bad = M.command(cmd, S.be32(0) if cmd == 7 else b"")
    raw = qemu10_stream(extra_commands=bad)
    at = raw.index(bad)
    with pytest.raises(StreamError) as info:
        parse_bytes(raw)
    assert info.value.offset == at
    assert f"MIG_CMD_{label} ({cmd}): the stream switched to postcopy or COLO" in str(info.value)
    path = tmp_path / "postcopy.bin"
    path.write_bytes(raw)
    assert main(["extract", str(path), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "not supported" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_multifd_channels_are_refused_by_name(tmp_path, capsys):
    raw = qemu10_stream()
    flush_at = raw.index(S.EOS + S.footer(2))  # the setup's EOS: a flush goes before it
    raw = raw[:flush_at] + S.be64(0x200) + raw[flush_at:]
    path = tmp_path / "multifd.bin"
    path.write_bytes(raw)
    assert main(["analyze", str(path)]) == 1
    captured = capsys.readouterr()
    assert (f"stream offset {flush_at}: RAM_SAVE_FLAG_MULTIFD_FLUSH (0x200): multifd channels "
            "are not supported") in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_x_ignore_shared_is_refused_by_name():
    config = M.configuration("pc-q35-10.2", ("x-ignore-shared",))
    raw = qemu10_stream(config=config)
    with pytest.raises(StreamError, match="capability x-ignore-shared is not supported"):
        parse_bytes(raw)
