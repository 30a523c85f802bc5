"""Every expected failure of the command line: one line on stderr, never a traceback.

One table, each case run as a user runs it (a subprocess): the exit status
says whose fault it is (2: a refused option value or combination, 1: a
runtime failure) and stderr is exactly one line naming the thing and why.
"""

from __future__ import annotations

import gzip
import lzma
import socket
import subprocess
import sys

import pytest
import zstandard
from tests.stream_samples import qemu_like_stream as _sample


def qemu_like_stream() -> bytes:
    """The hand-built QEMU-layout stream, with an XBZRLE delta a strict decoder accepts."""
    return _sample().replace(b"\x02\x00\x01\x07", b"\x02\x02\x07\x08")

# (id, arguments, exit status, words the one line must contain)
CASES = [
    ("analyze-missing", ["analyze", "/nonexistent"], 1, ["/nonexistent", "No such file"]),
    ("analyze-directory", ["analyze", "/etc"], 1, ["/etc", "Is a directory"]),
    ("analyze-empty", ["analyze", "/dev/null"], 1, ["QEVM"]),
    ("extract-missing", ["extract", "/nonexistent", "-o", "{tmp}/out"], 1,
     ["/nonexistent", "No such file"]),
    ("extract-unwritable-output", ["extract", "{stream}", "-o", "/proc/x"], 1,
     ["-o /proc/x", "cannot create"]),
    ("extract-output-is-a-file", ["extract", "/dev/null", "-o", "/etc/passwd"], 2,
     ["-o /etc/passwd", "not a directory"]),
    ("receive-unwritable-output", ["receive", "tcp:127.0.0.1:0", "-o", "/proc/x"], 1,
     ["-o /proc/x"]),
    ("extract-bad-max-ram", ["extract", "{stream}", "-o", "{tmp}/o", "--max-ram", "lots"], 2,
     ["--max-ram", "'lots' is not a size"]),
    ("vm-monitor-port-taken", ["vm", "--ram", "16M", "--monitor", "tcp:127.0.0.1:{port}"], 1,
     ["--monitor tcp:127.0.0.1:{port}", "Address already in use"]),
    ("vm-qmp-port-taken", ["vm", "--ram", "16M", "--qmp", "tcp:127.0.0.1:{port}"], 1,
     ["--qmp tcp:127.0.0.1:{port}", "Address already in use"]),
    ("vm-qmp-missing-directory", ["vm", "--ram", "16M", "--qmp",
                                  "unix:/nonexistent-dir/x.sock"], 1,
     ["/nonexistent-dir/x.sock", "No such file"]),
    ("bandwidth-not-a-size", ["demo", "--bandwidth", "abc"], 2,
     ["--bandwidth: 'abc' is not a size"]),
    ("ram-fraction-of-a-byte", ["demo", "--ram", "1.5"], 2,
     ["--ram", "not a whole number of bytes"]),
    ("size-too-large", ["demo", "--cache-size", "17E"], 2, ["--cache-size", "larger"]),
    ("downtime-not-ms", ["demo", "--downtime-limit", "0.3"], 2,
     ["--downtime-limit", "milliseconds"]),
    ("downtime-out-of-range", ["demo", "--downtime-limit", "2000001"], 2,
     ["--downtime-limit", "ms"]),
    ("demo-bad-workload", ["demo", "--workload", "foo"], 2, ["--workload", "'foo'"]),
    ("demo-negative-time-cap", ["demo", "--time-cap", "-1"], 2, ["--time-cap"]),
    ("vm-bad-ram", ["vm", "--ram", "12Q"], 2, ["--ram", "'12Q'"]),
    ("vm-ram-too-small", ["vm", "--ram", "4K", "--seconds", "0"], 2, ["4096", "1 MiB"]),
    ("vm-defer-without-monitor", ["vm", "--incoming", "defer"], 2,
     ["--incoming defer", "--monitor"]),
    ("vm-exit-without-migration", ["vm", "--exit-after-migration"], 2,
     ["--exit-after-migration"]),
    ("vm-negative-seconds", ["vm", "--seconds", "-1"], 2, ["--seconds"]),
    ("vm-negative-rate", ["vm", "--rate", "-5"], 2, ["--rate"]),
    ("vm-bad-endpoint", ["vm", "--monitor", "tcp:localhost:http"], 2, ["tcp:HOST:PORT"]),
    ("no-command", [], 2, ["COMMAND"]),
    ("unknown-command", ["migrate"], 2, ["'migrate'"]),
]


@pytest.fixture(scope="module")
def taken_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def run_cli(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xbzrle", *args], capture_output=True,
                          text=True, timeout=60, **kwargs)


@pytest.mark.parametrize(("args", "status", "words"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_expected_failures_are_one_line(args, status, words, tmp_path, taken_port):
    stream = tmp_path / "vm.bin"
    stream.write_bytes(qemu_like_stream())
    fill = {"tmp": str(tmp_path), "port": str(taken_port), "stream": str(stream)}
    r = run_cli([a.format(**fill) for a in args])
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    for word in words:
        assert word.format(**fill) in lines[0], lines[0]
    assert r.returncode == status, r.stderr


def test_version():
    r = run_cli(["--version"])
    assert r.returncode == 0 and r.stdout.startswith("xbzrle ")


COMPRESSORS = {
    "gz": gzip.compress,
    "xz": lzma.compress,
    "zst": lambda data: zstandard.ZstdCompressor().compress(data),
}


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_compressed_streams_read_transparently(suffix, tmp_path):
    raw = tmp_path / "vm.bin"
    raw.write_bytes(qemu_like_stream())
    # The compression is found by its magic bytes: the name says nothing.
    packed = tmp_path / "vm.data"
    packed.write_bytes(COMPRESSORS[suffix](raw.read_bytes()))
    plain = run_cli(["analyze", str(raw), "--json"])
    unpacked = run_cli(["analyze", str(packed), "--json"])
    assert plain.returncode == unpacked.returncode == 0, unpacked.stderr
    assert unpacked.stdout.replace(str(packed), str(raw)) == plain.stdout
    out = run_cli(["extract", str(packed), "-o", str(tmp_path / "out")])
    assert out.returncode == 0, out.stderr
    assert run_cli(["extract", str(raw), "-o", str(tmp_path / "ref")]).returncode == 0
    for block in ("pc.ram.ram", "vga.vram.ram"):
        assert (tmp_path / "out" / block).read_bytes() == (tmp_path / "ref" / block).read_bytes()


def test_corrupt_compressed_stream_is_one_line(tmp_path):
    bad = tmp_path / "vm.gz"
    bad.write_bytes(gzip.compress(qemu_like_stream())[:-20] + b"\0" * 20)
    r = run_cli(["analyze", str(bad)])
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.splitlines()) == 1 and "gzip" in r.stderr


def test_a_stale_unix_socket_file_is_replaced(tmp_path):
    """QEMU unlinks whatever sits at a unix socket path before binding; so do we."""
    path = tmp_path / "s.sock"
    path.touch()
    r = run_cli(["vm", "--ram", "16M", "--workload", "idle", "--monitor", "stdio",
                 "--qmp", f"unix:{path}"], input="info status\nquit\n")
    assert r.returncode == 0, r.stderr
    assert "VM status: running" in r.stdout
    assert f"qmp on unix:{path}" in r.stderr
