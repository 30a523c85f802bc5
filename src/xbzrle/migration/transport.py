"""Byte channels for the migration stream: sockets, files and pipes.

The only module of the migration package that opens sockets or spawns
commands.  A channel moves bytes one way (source -> destination); socket
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
from .uri import MigrationURI

VERDICT_OK = b"XBZRLE-OK\n"
VERDICT_ERROR = b"XBZRLE-ERROR "
VERDICT_MAX = 4096


class Channel(Protocol):
    def write(self, data: memoryview | bytes) -> None: ...
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

    def read_verdict(self, timeout: float) -> str | None:
        """Wait for the destination's verdict; None means success."""
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
        if data == VERDICT_OK:
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


def connect(uri: MigrationURI, timeout: float = 10.0) -> SocketChannel | FileChannel:
    """Open the source side of a migration."""
    try:
        if uri.scheme == "tcp":
            sock = socket.create_connection((uri.host or "127.0.0.1", uri.port), timeout)
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return SocketChannel(sock)
        if uri.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(uri.path)
            sock.settimeout(None)
            return SocketChannel(sock)
        if uri.scheme == "file":
            fd = os.open(uri.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            return FileChannel(fd)
        proc = subprocess.Popen(["/bin/sh", "-c", uri.command], stdin=subprocess.PIPE)
        assert proc.stdin is not None
        fd = os.dup(proc.stdin.fileno())
        proc.stdin.close()
        return FileChannel(fd, proc)
    except OSError as exc:
        raise TransportError(f"cannot open migration channel {uri}: {exc}") from exc


class Listener:
    """The destination side: bound before the source is told where to connect."""

    def __init__(self, uri: MigrationURI) -> None:
        self.uri = uri
        self.sock: socket.socket | None = None
        try:
            if uri.scheme == "tcp":
                host = uri.host
                if host in ("", "0"):
                    host = "0.0.0.0"
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                self.sock = socket.socket(family, socket.SOCK_STREAM)
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                self.sock.bind((host, uri.port))
                self.sock.listen(1)
            elif uri.scheme == "unix":
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(uri.path)
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.bind(uri.path)
                self.sock.listen(1)
        except OSError as exc:
            if self.sock is not None:
                self.sock.close()
            raise TransportError(f"cannot listen on {uri}: {exc}") from exc
        # Kept after close: monitors still report where a migration came in.
        self._port = self.sock.getsockname()[1] if uri.scheme == "tcp" and self.sock else 0

    @property
    def port(self) -> int:
        """The bound tcp port (useful with port 0)."""
        return self._port

    def accept(self) -> SocketChannel | FileChannel:
        uri = self.uri
        sock = self.sock  # cancel() may close and clear it from another thread
        try:
            if sock is not None:
                conn, _ = sock.accept()
                self.close()
                return SocketChannel(conn)
            if uri.scheme == "file":
                return FileChannel(os.open(uri.path, os.O_RDONLY))
            proc = subprocess.Popen(["/bin/sh", "-c", uri.command], stdout=subprocess.PIPE)
            assert proc.stdout is not None
            fd = os.dup(proc.stdout.fileno())
            proc.stdout.close()
            return FileChannel(fd, proc)
        except OSError as exc:
            raise TransportError(f"incoming migration on {uri} failed: {exc}") from exc

    def close(self) -> None:
        # Called from the migration thread and from cancel(): take the socket once.
        sock, self.sock = self.sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes an accept() blocked elsewhere
            with contextlib.suppress(OSError):
                sock.close()
            if self.uri.scheme == "unix":
                with contextlib.suppress(OSError):
                    os.unlink(self.uri.path)
