"""Opening a migration channel: the source connects, the destination listens.

With ``channels`` and ``uri``, the only code of the package that opens
sockets or spawns commands for a migration stream.

Who may migrate in: the listener admits one connection at a time
(:class:`Admission`).  A connection must finish its TLS handshake (when
``tls-creds`` is set), pass ``tls-authz`` and send a valid stream header
within the handshake timeout; otherwise it is refused with a reason (sent
back as a verdict line, reported through ``on_refused``) and the listener
keeps waiting for the real source.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict

from ..errors import ParameterError, TransportError
from .channels import VERDICT_ERROR, FileChannel, SocketChannel
from .tls import AuthzList, check_authz
from .uri import MigrationURI

TLS_HANDSHAKE_RECORD = 0x16
PIPE_SIZE = 4 << 20
"""Pipe capacity asked for an exec: channel, both ways.

A default pipe holds 64 KiB, so each read returns at most 64 KiB: sixteen
reads and sixteen trips through the stream parser per MiB of RAM.  With
1 MiB the destination's CPU time for a 1 GiB stream halved (measured, see
docs/migration.md), and on the source a buffer of records went in one
write: 1 GiB into ``exec:cat > /dev/null`` went from 0.64-0.68 s to
0.48-0.60 s.  The source hangs each page and each 8-byte page header in the
pipe as a slot of its own (vmsplice), so a 1 MiB pipe (256 slots) took only
half of a 1 MiB buffer before the source waited for the reader; 4 MiB lets
the buffer in at once (1 GiB into ``cat``: 3.6-8 % faster, interleaved).
Only a privileged process may pass ``fs.pipe-max-size`` (1 MiB by default);
others get that limit."""


def widen_pipe(fd: int) -> None:
    """Ask for a PIPE_SIZE pipe buffer, else the most allowed; a non-pipe is fine."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        return
    except OSError:  # EPERM past fs.pipe-max-size without CAP_SYS_RESOURCE
        pass
    limit = PIPE_SIZE
    with contextlib.suppress(OSError, ValueError), open("/proc/sys/fs/pipe-max-size") as f:
        limit = min(limit, int(f.read()))
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, limit)



def _tls_client(sock: socket.socket, uri: MigrationURI, tls: ssl.SSLContext,
                hostname: str, timeout: float) -> ssl.SSLSocket:
    name = hostname or (uri.host if uri.scheme == "tcp" else "")
    if not name and tls.check_hostname:
        sock.close()
        raise ParameterError("No hostname available for TLS: set tls-hostname")
    sock.settimeout(timeout)
    try:
        wrapped = tls.wrap_socket(sock, server_hostname=name or None)
    except ssl.SSLError as exc:
        sock.close()
        raise TransportError(f"TLS handshake with the destination failed: "
                             f"{exc.reason or exc}") from exc
    except OSError as exc:  # the destination closed on us: it may have said why
        verdict = _refusal_in(sock)
        sock.close()
        raise TransportError(verdict or f"TLS handshake with the destination failed: {exc}") \
            from exc
    wrapped.settimeout(None)
    return wrapped


def _refusal_in(sock: socket.socket) -> str | None:
    with contextlib.suppress(OSError):
        sock.settimeout(0.0)
        data = sock.recv(4096)
        if data.startswith(VERDICT_ERROR):
            reason = data[len(VERDICT_ERROR):].split(b"\n", 1)[0].decode(errors="replace")
            return f"the destination refused the migration: {reason}"
    return None


class ConnectOptions(TypedDict, total=False):
    """The keyword arguments of :func:`connect` a migration's parameters decide."""

    tls: ssl.SSLContext | None
    tls_hostname: str
    stall_timeout: float | None


def connect(uri: MigrationURI, timeout: float = 10.0, *, tls: ssl.SSLContext | None = None,
            tls_hostname: str = "", stall_timeout: float | None = None,
            ) -> SocketChannel | FileChannel:
    """Open the source side of a migration (over TLS when ``tls`` is given).

    ``stall_timeout`` (seconds) fails a write that makes no progress that long.
    """
    if tls is not None and not uri.is_socket:
        raise ParameterError(f"TLS needs a socket migration (tcp: or unix:), not {uri.scheme}:")
    try:
        if uri.scheme in ("tcp", "unix"):
            if uri.scheme == "tcp":
                sock = socket.create_connection((uri.host or "127.0.0.1", uri.port), timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            else:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                sock.connect(uri.path)
            sock.settimeout(None)
            if tls is not None:
                sock = _tls_client(sock, uri, tls, tls_hostname, timeout)
            return SocketChannel(sock, stall_timeout=stall_timeout)
        if uri.scheme == "file":
            fd = os.open(uri.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            return FileChannel(fd)
        proc = subprocess.Popen(["/bin/sh", "-c", uri.command], stdin=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdin is not None
        fd = os.dup(proc.stdin.fileno())
        proc.stdin.close()
        widen_pipe(fd)  # one buffer of records per write (see PIPE_SIZE)
        return FileChannel(fd, proc)
    except OSError as exc:
        raise TransportError(f"cannot open migration channel {uri}: {exc}") from exc


class Refused(TransportError):
    """An incoming connection that was not admitted (the listener stays open)."""


@dataclass
class Admission:
    """What an incoming connection must do before it is the migration.

    ``check`` judges the first ``prefix_size`` bytes (the stream header) and
    returns what is wrong, or None.  ``timeout`` (seconds) bounds the TLS
    handshake and the header together.
    """

    timeout: float | None = 10.0
    tls: ssl.SSLContext | None = None
    authz: AuthzList | None = None
    prefix_size: int = 0
    check: Callable[[bytes], str | None] | None = None
    on_refused: Callable[[str], None] | None = None

    def admit(self, conn: socket.socket, peer: str) -> SocketChannel:
        """The admitted channel, or Refused (the connection is then closed)."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        sock: socket.socket = conn
        try:
            if self.tls is not None:
                sock = self._handshake(conn, deadline)
                check_authz(self.authz, sock)
            prefix = self._read_prefix(sock, deadline)
            problem = self.check(prefix) if self.check is not None else None
            if problem is not None:
                raise Refused(problem)
        except (TransportError, OSError) as exc:
            reason = str(exc) if isinstance(exc, TransportError) else f"connection failed: {exc}"
            _refuse(sock, reason)
            raise Refused(f"refused the incoming connection from {peer}: {reason}") from exc
        sock.settimeout(None)
        return SocketChannel(sock, pending=prefix)

    def _remaining(self, deadline: float | None) -> float | None:
        if deadline is None:
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            raise Refused(f"no migration stream header within {self.timeout:g} s "
                          "(x-handshake-timeout)")
        return left

    def _handshake(self, conn: socket.socket, deadline: float | None) -> ssl.SSLSocket:
        assert self.tls is not None
        conn.settimeout(self._remaining(deadline))
        try:
            first = conn.recv(1, socket.MSG_PEEK)
        except TimeoutError:
            raise Refused(f"no TLS handshake within {self.timeout:g} s "
                          "(x-handshake-timeout)") from None
        if first and first[0] != TLS_HANDSHAKE_RECORD:
            raise Refused("this destination requires TLS (tls-creds): the source sent "
                          "plaintext")
        wrapped = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        try:
            wrapped.do_handshake()
        except TimeoutError:
            wrapped.close()
            raise Refused(f"no TLS handshake within {self.timeout:g} s "
                          "(x-handshake-timeout)") from None
        except (ssl.SSLError, OSError) as exc:
            wrapped.close()
            reason = exc.reason if isinstance(exc, ssl.SSLError) and exc.reason else exc
            raise Refused(f"TLS handshake failed: {reason}") from exc
        return wrapped

    def _read_prefix(self, sock: socket.socket, deadline: float | None) -> bytes:
        data = b""
        while len(data) < self.prefix_size:
            sock.settimeout(self._remaining(deadline))
            try:
                chunk = sock.recv(self.prefix_size - len(data))
            except TimeoutError:
                raise Refused(f"no migration stream header within {self.timeout:g} s "
                              "(x-handshake-timeout)") from None
            if not chunk:
                raise Refused("the connection closed before a migration stream header")
            data += chunk
        return data


REFUSAL_LINGER = 1.0
"""Seconds a refused connection is drained after the verdict, so the peer can read it."""


def _refuse(sock: socket.socket, reason: str) -> None:
    """Tell the peer why (it may be our own source, which reports it), then close.

    Closing while the peer's data is still arriving would reset the
    connection and discard the verdict before the peer reads it: what the
    peer sends is read and dropped for at most REFUSAL_LINGER seconds, until
    it closes.
    """
    with contextlib.suppress(OSError, ValueError):
        sock.settimeout(REFUSAL_LINGER)
        sock.sendall(VERDICT_ERROR + reason.encode()[:2000] + b"\n")
        deadline = time.monotonic() + REFUSAL_LINGER
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                break
    with contextlib.suppress(OSError, ValueError):
        sock.close()


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

    def accept(self, admission: Admission | None = None) -> SocketChannel | FileChannel:
        """The incoming migration; with ``admission``, the first connection that passes it.

        Refused connections are reported to ``admission.on_refused`` and the
        listener goes on waiting; the one admitted closes it (one migration
        at a time).
        """
        uri = self.uri
        if admission is not None and admission.tls is not None and not uri.is_socket:
            raise ParameterError(
                f"TLS needs a socket migration (tcp: or unix:), not {uri.scheme}:")
        try:
            while (sock := self.sock) is not None:  # cancel() may close and clear it
                conn, peer = sock.accept()
                if admission is None:
                    self.close()
                    return SocketChannel(conn)
                try:
                    channel = admission.admit(conn, _peer_name(peer))
                except Refused as exc:
                    if admission.on_refused is not None:
                        admission.on_refused(str(exc))
                    continue
                self.close()
                return channel
            if uri.is_socket:
                raise TransportError(f"incoming migration on {uri} was cancelled")
            if uri.scheme == "file":
                return FileChannel(os.open(uri.path, os.O_RDONLY))
            proc = subprocess.Popen(["/bin/sh", "-c", uri.command], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
            assert proc.stdout is not None
            widen_pipe(proc.stdout.fileno())
            fd = os.dup(proc.stdout.fileno())
            proc.stdout.close()
            return FileChannel(fd, proc, incoming=True)
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


def _peer_name(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = f"[{peer[0]}]" if ":" in str(peer[0]) else str(peer[0])
        return f"{host}:{peer[1]}"
    return str(peer) or "a unix socket peer"
