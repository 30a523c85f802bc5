"""Byte channels for the migration stream: sockets, files and pipes.

A channel moves bytes one way (source -> destination); socket
channels also carry the destination's one-line verdict back, which lets the
source report a failure the destination found (bad digest, missing
capability) instead of claiming success.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from typing import Protocol

from ..errors import TransportError

VERDICT_OK = b"XBZRLE-OK\n"
VERDICT_ERROR = b"XBZRLE-ERROR "
VERDICT_MAX = 4096


class Channel(Protocol):
    def write(self, data: memoryview | bytes) -> None: ...
    def writev_fd(self) -> int | None: ...
    def readinto(self, buf: memoryview) -> int: ...
    def abort(self) -> None: ...
    def close(self) -> None: ...


class SocketChannel:
    """A connected stream socket; ``abort`` unblocks a send or recv from another thread."""

    has_verdict = True

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def write(self, data: memoryview | bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            verdict = self._salvage_verdict()
            if verdict is not None:
                raise TransportError(
                    f"the destination refused the migration: {verdict}") from exc
            raise TransportError(f"lost the migration peer while sending: {exc}") from exc

    def writev_fd(self) -> int | None:
        """The descriptor the source may ``writev`` page payloads to straight from
        guest RAM (the zero-copy send), or None when bytes must go through
        ``write`` (a channel that transforms them, such as TLS)."""
        return self.sock.fileno() if type(self.sock) is socket.socket else None

    def send_failed(self, exc: OSError) -> TransportError:
        """The error for a failed send: the destination's refusal if it said one."""
        verdict = self._salvage_verdict()
        if verdict is not None:
            return TransportError(f"the destination refused the migration: {verdict}")
        return TransportError(f"lost the migration peer while sending: {exc}")

    def _salvage_verdict(self) -> str | None:
        """A destination that gave up said why before closing: read it if it is here."""
        data = b""
        with contextlib.suppress(OSError):
            while len(data) < VERDICT_MAX:
                chunk = self.sock.recv(VERDICT_MAX, socket.MSG_DONTWAIT)
                if not chunk:
                    break
                data += chunk
        if data.startswith(VERDICT_ERROR):
            return data[len(VERDICT_ERROR):].split(b"\n", 1)[0].decode(errors="replace")
        return None

    def readinto(self, buf: memoryview) -> int:
        try:
            return self.sock.recv_into(buf)
        except OSError as exc:
            raise TransportError(f"lost the migration peer while receiving: {exc}") from exc

    def send_verdict(self, error: str | None) -> None:
        msg = VERDICT_OK if error is None else VERDICT_ERROR + error.encode()[:2000] + b"\n"
        with contextlib.suppress(OSError):
            self.sock.sendall(msg)

    def read_verdict(self, timeout: float, required: bool = True) -> str | None:
        """Wait for the destination's verdict; None means success.

        ``required=False`` accepts a peer that closes without a word (a real
        QEMU destination, which has no way back in a precopy migration); an
        error verdict still counts.
        """
        self.sock.settimeout(timeout)
        try:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
            data = b""
            while not data.endswith(b"\n") and len(data) < VERDICT_MAX:
                chunk = self.sock.recv(VERDICT_MAX)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise TransportError("the destination did not confirm the migration") from None
        except OSError as exc:
            raise TransportError(f"lost the migration peer before its verdict: {exc}") from exc
        if data == VERDICT_OK or (not data and not required):
            return None
        if data.startswith(VERDICT_ERROR):
            return data[len(VERDICT_ERROR):].decode(errors="replace").strip()
        raise TransportError("the destination closed the connection without a verdict")

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()


class FileChannel:
    """A file or pipe; no way back, so no verdict."""

    has_verdict = False

    def __init__(self, fd: int, proc: subprocess.Popen[bytes] | None = None) -> None:
        self.fd = fd
        self.proc = proc

    def write(self, data: memoryview | bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        except OSError as exc:
            raise TransportError(f"migration output failed: {exc}") from exc

    def writev_fd(self) -> int | None:
        """Files and pipes take page payloads straight from guest RAM."""
        return self.fd

    def send_failed(self, exc: OSError) -> TransportError:
        return TransportError(f"migration output failed: {exc}")

    def readinto(self, buf: memoryview) -> int:
        try:
            return os.readv(self.fd, [buf])
        except OSError as exc:
            raise TransportError(f"migration input failed: {exc}") from exc

    def abort(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        if self.proc is not None:
            try:
                rc = self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise TransportError("exec: migration command did not finish") from None
            if rc != 0:
                raise TransportError(f"exec: migration command exited with status {rc}")
