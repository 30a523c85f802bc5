"""Opening a migration channel: the source connects, the destination listens.

With ``channels`` and ``uri``, the only code of the package that opens
sockets or spawns commands for a migration stream.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess

from ..errors import TransportError
from .channels import FileChannel, SocketChannel
from .uri import MigrationURI

PIPE_SIZE = 1 << 20
"""Pipe capacity asked for an incoming exec: channel (capped at fs.pipe-max-size).

A default pipe holds 64 KiB, so each read returns at most 64 KiB: sixteen
reads and sixteen trips through the stream parser per MiB of RAM.  With
1 MiB the destination's CPU time for a 1 GiB stream halved (measured, see
docs/migration.md).  The outgoing side keeps the default: a wider pipe made
no measurable difference to the source."""


def widen_pipe(fd: int) -> None:
    """Ask for a PIPE_SIZE pipe buffer; a smaller limit or a non-pipe is fine."""
    limit = PIPE_SIZE
    with contextlib.suppress(OSError, ValueError), open("/proc/sys/fs/pipe-max-size") as f:
        limit = min(limit, int(f.read()))
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, limit)


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
            widen_pipe(proc.stdout.fileno())
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
