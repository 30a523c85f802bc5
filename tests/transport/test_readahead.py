"""The destination's read-ahead thread: the stream whole and in order, errors
raised where the loader runs, and no read after ``stop``.

Real sockets and pipes; the thread's state is read from /proc (the system
call it is blocked in), never guessed from a sleep.
"""

from __future__ import annotations

import fcntl
import os
import random
import socket
import ssl
import struct
import termios
import threading

import pytest

from support import wait_until
from xbzrle.errors import TransportError
from xbzrle.transport import FileChannel, SocketChannel
from xbzrle.transport.readahead import ReadAhead, stream_reader

SYS_POLL = 7  # x86-64


def readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "migration read-ahead"]


def in_poll(reader: ReadAhead) -> bool:
    """The reader thread is blocked in poll(2), waiting for input or a stop."""
    tid = reader._thread.native_id
    with open(f"/proc/self/task/{tid}/syscall") as f:
        return f.read().split()[0] == str(SYS_POLL)


def pipe_pending(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]


def test_a_socket_stream_comes_out_whole_and_in_order():
    data = random.Random(1).randbytes(8 << 20)
    ours, theirs = socket.socketpair()

    def send_in_odd_pieces() -> None:
        rng = random.Random(2)
        view = memoryview(data)
        while view:
            n = rng.randrange(1, 200_000)
            theirs.sendall(view[:n])
            view = view[n:]
        theirs.close()

    writer = threading.Thread(target=send_in_odd_pieces)
    writer.start()
    got = bytearray()
    with stream_reader(SocketChannel(ours), 64 << 10) as reader:
        assert isinstance(reader, ReadAhead)
        while piece := reader.read():
            assert len(piece) <= 64 << 10
            got += piece
        assert not reader.read()  # the end stays the end
    writer.join()
    ours.close()
    assert got == data
    wait_until(lambda: not readers())


def test_a_piece_is_not_overwritten_before_the_next_read():
    """The loader applies a piece in place: the thread may fill the other buffers,
    never the one handed out."""
    size = 64 << 10
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)
    pieces = [bytes([i]) * size for i in range(1, 6)]
    os.write(w, b"".join(pieces))  # five pieces wait in the pipe
    reader = ReadAhead(FileChannel(r), r, size, buffers=3)
    try:
        first = reader.read()
        # One buffer held here, two filled by the thread, which then waits for one back.
        wait_until(lambda: pipe_pending(r) == 2 * size)
        wait_until(lambda: reader._free.empty())
        assert bytes(first) == pieces[0]
        assert [bytes(reader.read()) for _ in range(4)] == pieces[1:]
    finally:
        reader.stop()
        os.close(r)
        os.close(w)


def test_stop_wakes_a_reader_that_waits_and_no_byte_is_read_after_it():
    ours, theirs = socket.socketpair()
    with stream_reader(SocketChannel(ours), 1 << 20) as reader:
        assert isinstance(reader, ReadAhead)
        wait_until(lambda: in_poll(reader))
    assert not readers()  # stop joined the thread
    theirs.sendall(b"the verdict's turn")
    assert ours.recv(100) == b"the verdict's turn"  # nothing was taken by a late read
    ours.close()
    theirs.close()


def test_a_read_error_is_raised_to_the_loader():
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    with stream_reader(SocketChannel(server), 1 << 20) as reader:
        client.sendall(b"x" * 1000)
        server_got = reader.read()
        assert bytes(server_got) == b"x" * len(server_got)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # a reset: the next recv fails
        with pytest.raises(TransportError, match="lost the migration peer while receiving"):
            while reader.read():
                pass
    server.close()
    assert not readers()


def test_a_file_channel_reads_ahead_and_tls_reads_inline(tmp_path):
    path = tmp_path / "stream"
    path.write_bytes(b"QEVM" * 1000)
    fd = os.open(path, os.O_RDONLY)
    with stream_reader(FileChannel(fd), 1000) as reader:
        assert isinstance(reader, ReadAhead)
        assert b"".join(bytes(p) for p in iter(reader.read, b"")) == b"QEVM" * 1000
    os.close(fd)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with context.wrap_socket(socket.socket(), server_hostname="dst",
                             do_handshake_on_connect=False) as tls:
        # Decrypted bytes can wait inside the TLS layer, where poll does not see them.
        assert SocketChannel(tls).raw_fd() is None
