"""An incoming exec: channel reads from a pipe widened to 1 MiB (64 KiB by default),
so that one read brings a whole buffer of the stream instead of sixteen pieces."""

from __future__ import annotations

import fcntl

from xbzrle.transport import Listener, parse_uri
from xbzrle.transport.connect import PIPE_SIZE


def test_incoming_exec_pipe_holds_a_whole_buffer(tmp_path):
    stream = tmp_path / "stream"
    stream.write_bytes(b"\x5a" * (3 * PIPE_SIZE))
    with open("/proc/sys/fs/pipe-max-size") as f:
        expected = min(PIPE_SIZE, int(f.read()))
    channel = Listener(parse_uri(f"exec:cat {stream}")).accept()
    try:
        assert fcntl.fcntl(channel.fd, fcntl.F_GETPIPE_SZ) == expected
        got = 0
        view = memoryview(bytearray(PIPE_SIZE))
        while n := channel.readinto(view):
            assert view[:n] == b"\x5a" * n
            got += n
        assert got == 3 * PIPE_SIZE
    finally:
        channel.close()
