"""An incoming exec: channel reads from a pipe widened to PIPE_SIZE (64 KiB by
default; fs.pipe-max-size for an unprivileged process), so that one read brings
a whole buffer of the stream instead of many pieces."""

from __future__ import annotations

import fcntl
import os

from xbzrle.transport import Listener, parse_uri
from xbzrle.transport.connect import PIPE_SIZE, widen_pipe


def test_incoming_exec_pipe_holds_a_whole_buffer(tmp_path):
    stream = tmp_path / "stream"
    stream.write_bytes(b"\x5a" * (3 * PIPE_SIZE))
    r, w = os.pipe()
    try:  # may this process pass fs.pipe-max-size?
        expected = fcntl.fcntl(r, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except PermissionError:
        with open("/proc/sys/fs/pipe-max-size") as f:
            expected = min(PIPE_SIZE, int(f.read()))
    finally:
        os.close(r)
        os.close(w)
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


def test_an_unprivileged_process_gets_pipe_max_size():
    """Past fs.pipe-max-size only a privileged process may go: the others get the limit.
    (As root, a forked child drops to nobody, which drops CAP_SYS_RESOURCE.)"""
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery from here, only os._exit
        status = 1
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            r, w = os.pipe()
            widen_pipe(w)
            os.write(report_w, str(fcntl.fcntl(r, fcntl.F_GETPIPE_SZ)).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(report_w)
    got = os.read(report_r, 100)
    os.close(report_r)
    assert os.waitpid(pid, 0)[1] == 0
    with open("/proc/sys/fs/pipe-max-size") as f:
        assert int(got) == min(PIPE_SIZE, int(f.read()))
