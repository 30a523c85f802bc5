"""Issue 13 §2 for extract, analyze and receive: work and memory follow what a stream carries.

The heavy cases run ``xbzrle extract`` in a child process so that its peak
memory (``wait4``'s rusage) and its file-descriptor limit are its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import socket
import subprocess
import sys
import threading
from pathlib import Path

import hostile_inputs as h
import stream_samples as s
from xbzrle._backend import load_core
from xbzrle.cli import main
from xbzrle.guest.digest import ram_digest
from xbzrle.qemu import IncompleteStreamError, extract_chunks, receive
from xbzrle.qemu.ramfiles import MAX_STEM, block_file_name

SRC = str(Path(__file__).resolve().parents[2] / "src")


_CHILD = ("import re, sys\n"
          "from xbzrle.cli import main\n"
          "code = main(sys.argv[1:])\n"
          "peak = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
          "print('peak-rss-kib', peak, file=sys.stderr)\n"
          "sys.exit(code)\n")


def run_extract(stream: Path, out: Path, nofile: int | None = None) -> tuple[int, str, int]:
    """(exit code, stderr, peak RSS in KiB) of ``xbzrle extract`` in a child process.

    The peak is the child's own high-water mark after exec (VmHWM), so neither
    this test process's memory nor a sanitizer runtime in it counts.
    """

    def limits() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    env = dict(os.environ, PYTHONPATH=SRC)
    env.pop("LD_PRELOAD", None)  # under scripts/asan-test: the child is the normal build
    child = subprocess.run([sys.executable, "-c", _CHILD, "extract", str(stream), "-o", str(out)],
                           env=env, stderr=subprocess.PIPE, preexec_fn=limits, check=False)
    err = child.stderr.decode()
    peak = re.search(r"peak-rss-kib (\d+)", err)
    return child.returncode, err, int(peak.group(1)) if peak else -1


def test_a_16_gib_block_with_one_page_costs_one_page(tmp_path):
    size = 16 << 30
    stream = tmp_path / "sparse.bin"
    stream.write_bytes(h.huge_sparse_block(size))
    code, err, peak_kib = run_extract(stream, tmp_path / "out")
    assert code == 0, err
    assert peak_kib < 200 * 1024  # was 16.8 GB: the whole block hashed through the page cache
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    (block,) = manifest["blocks"]
    path = tmp_path / "out" / block["file"]
    assert path.stat().st_size == size and path.stat().st_blocks * 512 < (1 << 20)
    with open(path, "rb") as f:
        f.seek(size - s.PAGE)
        assert f.read() == bytes([0x5A]) * s.PAGE
    # ram_digest of the whole block, without building 16 GiB: its only non-zero page is the last.
    pairs = load_core().page_hashes(bytes([0x5A]) * s.PAGE, size // s.PAGE - 1)
    assert block["ram_digest"] == hashlib.blake2b(size.to_bytes(8, "little") + pairs,
                                              digest_size=32).hexdigest()


def test_the_digest_is_the_ram_digest_of_the_contents(tmp_path):
    manifest = extract_chunks([h.huge_sparse_block(64 * s.PAGE)], tmp_path)
    for block in manifest["blocks"]:
        content = (tmp_path / block["file"]).read_bytes()
        assert block["ram_digest"] == ram_digest(content)


def test_more_blocks_than_open_files_allowed(tmp_path):
    stream = tmp_path / "many.bin"
    stream.write_bytes(h.many_blocks(1100))
    code, err, _ = run_extract(stream, tmp_path / "out", nofile=256)
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["complete"] and len(manifest["blocks"]) == 1100
    assert len(list((tmp_path / "out").glob("*.ram"))) == 1100


def test_too_many_blocks_is_one_line_and_no_files(tmp_path, capsys):
    stream = tmp_path / "many.bin"
    stream.write_bytes(h.many_blocks(65536))
    assert main(["extract", str(stream), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "more than 4096 RAM blocks" in err and "Traceback" not in err
    assert not list((tmp_path / "out").glob("*.ram"))


def test_a_255_byte_block_name_extracts_under_a_valid_file_name(tmp_path):
    manifest = extract_chunks([h.long_block_name(255)], tmp_path)
    (block,) = manifest["blocks"]
    assert block["name"] == "n" * 255
    assert len(block["file"]) <= MAX_STEM + 20
    assert (tmp_path / block["file"]).read_bytes() == bytes([7]) * s.PAGE


def test_file_names_are_valid_and_distinct_for_names_that_escape_alike():
    taken: set[str] = set()
    names = ["pc.ram", "/rom@etc/acpi/tables", "rom@etc/acpi/tables", "a?b", "a*b", "a_b",
             "..", ".", "", "x" * 255, "x" * 254 + "y", "é" * 127, "/" * 255]
    files = [block_file_name(n, taken) for n in names]
    assert len(set(files)) == len(names)
    assert files[0] == "pc.ram.ram"
    for f in files:
        assert "/" not in f and f not in (".", "..") and len(f.encode()) < 255
        assert f.endswith(".ram")


def test_deep_vmdescription_in_extract_and_the_cli(tmp_path, capsys):
    stream = tmp_path / "deep.bin"
    stream.write_bytes(h.nested_vmdescription(100_000))
    assert main(["extract", str(stream), "-o", str(tmp_path / "out")]) == 1
    assert main(["analyze", str(stream)]) in (0, 1)
    err = capsys.readouterr().err
    assert "nested deeper than 128 levels" in err and "Traceback" not in err


def test_deep_vmdescription_in_receive(tmp_path):
    data = h.nested_vmdescription(100_000)

    def on_listening(address: str) -> None:
        host, port = address.split(":")[1:]

        def send() -> None:
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(data)

        threading.Thread(target=send, daemon=True).start()

    try:
        receive("tcp:127.0.0.1:0", tmp_path, on_listening=on_listening)
    except IncompleteStreamError as exc:
        assert "nested deeper" in str(exc)
    else:
        raise AssertionError("a deep VMDESCRIPTION was accepted")
