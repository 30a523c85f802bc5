"""A plaintext source reset by its destination is told TLS may be what is missing.

That is all a QEMU destination with ``tls-creds`` ever says to a plaintext
source (GnuTLS fails the handshake on the first bytes, QEMU closes with them
unread); the QEMU case itself is in ``tests/qemu/test_qemu_destination_tls.py``.
"""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from xbzrle.errors import TransportError
from xbzrle.transport import connect, parse_uri


def test_reset_of_a_plain_channel_names_tls():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    got_bytes = threading.Event()

    def reset_after_first_bytes() -> None:
        conn, _ = listener.accept()
        conn.recv(16)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # linger 0: a reset, as a peer closing with data unread
        got_bytes.set()

    threading.Thread(target=reset_after_first_bytes, daemon=True).start()
    channel = connect(parse_uri(f"tcp:127.0.0.1:{port}"))
    try:
        channel.write(b"QEVM\x00\x00\x00\x03")
        assert got_bytes.wait(10)
        with pytest.raises(TransportError,
                           match=r"lost the migration peer while sending: .*"
                                 r"\(if the destination requires TLS, set tls-creds\)"):
            while True:  # the reset arrives on one of the next writes
                channel.write(b"\0" * 65536)
    finally:
        channel.close()
        listener.close()
