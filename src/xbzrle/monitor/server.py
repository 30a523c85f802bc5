"""The monitors' I/O: stdio, unix sockets and TCP, several at once.

One thread reads each connection and runs its session (HMP or QMP); one
writer thread per connection sends replies and events, so a client that
stops reading can never block the migration thread that raised an event.
Listeners accept any number of clients; each gets its own session.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import stat
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .endpoint import Endpoint
from .hmp import MAX_LINE, PROMPT, HmpSession, LineReader, TooLong, run_captured
from .qmp import QmpSession
from .qmp_commands import QmpCommands

if TYPE_CHECKING:
    from .control import VmControl

log = logging.getLogger(__name__)

READ_SIZE = 65536
MAX_QUEUED = 8 << 20
"""Bytes of replies and events a client may leave unread before it is disconnected."""


class Connection:
    """A byte pipe to one client, with a queued writer.

    The queue is bounded by bytes: a client that never reads its replies is
    disconnected once MAX_QUEUED bytes wait for it, instead of growing the
    process (``send`` never blocks: events come from migration threads).
    """

    def __init__(self, name: str, read: Callable[[], bytes], write: Callable[[bytes], None],
                 close: Callable[[], None], abort: Callable[[], None] | None = None,
                 max_queued: int = MAX_QUEUED) -> None:
        self.name = name
        self.read = read
        self._write = write
        self._close = close
        self._abort = abort
        self.max_queued = max_queued
        self.queued = 0
        self.overflowed = False
        self._qlock = threading.Lock()
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self._writer = threading.Thread(target=self._drain, name=f"{name}-writer", daemon=True)
        self._writer.start()
        self.closed = False
        #: Held while one request is handled, so shutting down never cuts a reply off.
        self.busy = threading.Lock()

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        with self._qlock:
            overflow = self.queued + len(data) > self.max_queued
            if not overflow:
                self.queued += len(data)
                self._queue.put(data)
        if overflow:
            self._overflow()

    def _overflow(self) -> None:
        if self.overflowed:
            return
        self.overflowed = self.closed = True
        log.warning("monitor %s: the client left %d bytes of replies unread: disconnected",
                    self.name, self.queued)
        if self._abort is not None:
            self._abort()  # unblocks the writer's send and the reader's recv

    def _drain(self) -> None:
        while (data := self._queue.get()) is not None:
            try:
                self._write(data)
            except OSError:
                self.closed = True
                return
            with self._qlock:
                self.queued -= len(data)

    def flush(self, timeout: float = 5.0) -> None:
        """Send what is queued, then stop the writer."""
        self._queue.put(None)
        self._writer.join(timeout)

    def close(self) -> None:
        self.closed = True
        self.flush()
        with contextlib.suppress(OSError):
            self._close()


def _socket_connection(sock: socket.socket, name: str) -> Connection:
    def read() -> bytes:
        try:
            return sock.recv(READ_SIZE)
        except OSError:
            return b""

    def abort() -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def close() -> None:
        abort()
        sock.close()

    return Connection(name, read, sock.sendall, close, abort)


def _stdio_connection() -> Connection:
    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(1, view):]

    return Connection("stdio", lambda: os.read(0, READ_SIZE), write, lambda: None)


class MonitorServer:
    """Runs HMP and QMP monitors over one :class:`~.control.VmControl`."""

    def __init__(self, control: VmControl, package: str) -> None:
        self.control = control
        self.package = package
        self._lock = threading.Lock()
        self._connections: list[Connection] = []
        self._listeners: list[tuple[socket.socket, Endpoint]] = []
        self._closing = False

    # -- setting up --------------------------------------------------------------
    def listen(self, endpoint: Endpoint, protocol: str) -> Endpoint:
        """Start a monitor; returns where it listens (the real port for port 0)."""
        if protocol not in ("hmp", "qmp"):
            raise ValueError(f"unknown monitor protocol {protocol!r}")
        if endpoint.kind == "stdio":
            self._start(_stdio_connection(), protocol, eof_quits=True)
            return endpoint
        if endpoint.kind == "unix":
            # A stale socket (or any file) left at the path by an earlier run is
            # removed first, as QEMU's unix_listen does; a directory is kept.
            with contextlib.suppress(FileNotFoundError):
                if not stat.S_ISDIR(os.lstat(endpoint.path).st_mode):
                    os.unlink(endpoint.path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(endpoint.path)
            actual = endpoint
        else:
            family = socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((endpoint.host, endpoint.port))
            actual = Endpoint("tcp", host=endpoint.host, port=sock.getsockname()[1])
        sock.listen(8)
        with self._lock:
            self._listeners.append((sock, actual))
        threading.Thread(target=self._accept, args=(sock, actual, protocol),
                         name=f"{protocol}-listen", daemon=True).start()
        return actual

    def _accept(self, sock: socket.socket, endpoint: Endpoint, protocol: str) -> None:
        while not self._closing:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            self._start(_socket_connection(conn, f"{protocol}@{endpoint}"), protocol,
                        eof_quits=False)

    def _start(self, conn: Connection, protocol: str, eof_quits: bool) -> None:
        with self._lock:
            self._connections.append(conn)
        serve = self._serve_hmp if protocol == "hmp" else self._serve_qmp
        threading.Thread(target=self._run, args=(serve, conn, eof_quits),
                         name=conn.name, daemon=True).start()

    def _run(self, serve: Callable[[Connection], None], conn: Connection,
             eof_quits: bool) -> None:
        try:
            serve(conn)
        except Exception:
            log.exception("monitor %s crashed", conn.name)
        finally:
            # Close (and so flush) before leaving the list: close() must find and wait
            # for a connection whose last reply, e.g. to 'quit', is still being sent.
            conn.close()
            with self._lock:
                if conn in self._connections:
                    self._connections.remove(conn)
            if eof_quits and not self._closing:
                self.control.request_quit()  # stdin closed: nobody can drive us any more

    # -- the two protocols --------------------------------------------------------------
    def _serve_hmp(self, conn: Connection) -> None:
        session = HmpSession(self.control, lambda text: conn.send(text.encode()))
        conn.send(f"{self.package} monitor - type 'help' for more information\n"
                  f"{PROMPT}".encode())
        lines = LineReader()
        while data := conn.read():
            for line in lines.feed(data):
                with conn.busy:
                    if isinstance(line, TooLong):
                        session.write(f"Error: command line of {line.size} bytes: "
                                      f"at most {MAX_LINE}")
                    else:
                        session.execute(line)
                    if self.control.quit_requested.is_set():
                        return
                    conn.send(PROMPT.encode())
                if conn.closed:
                    return

    def _serve_qmp(self, conn: Connection) -> None:
        commands = QmpCommands(self.control, hmp=lambda line: run_captured(self.control, line))
        session = QmpSession(commands, self.package)

        def on_event(name: str, data: dict[str, object] | None) -> None:
            message = session.event(name, data)
            if message is not None:
                conn.send(message)

        conn.send(session.greeting())
        self.control.subscribe(on_event)
        try:
            while data := conn.read():
                with conn.busy:
                    for reply in session.replies(data):
                        conn.send(reply)
                if self.control.quit_requested.is_set() or conn.closed:
                    return
        finally:
            self.control.unsubscribe(on_event)

    # -- tearing down ---------------------------------------------------------------------
    def settle(self, timeout: float = 5.0) -> None:
        """Let requests being handled (e.g. the ``quit`` itself) queue their replies."""
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            if conn.busy.acquire(timeout=timeout):
                conn.busy.release()

    def close(self) -> None:
        """Stop listening and close every connection, sending what is queued first."""
        self._closing = True
        with self._lock:
            listeners, self._listeners = self._listeners, []
            connections = list(self._connections)
        for sock, endpoint in listeners:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            if endpoint.kind == "unix":
                with contextlib.suppress(OSError):
                    os.unlink(endpoint.path)
        for conn in connections:
            if conn.name == "stdio":
                conn.flush()
            else:
                conn.close()
