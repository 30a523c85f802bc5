"""Byte channels for the migration stream: sockets, files and pipes.

A channel moves bytes one way (source -> destination); socket
channels also carry the destination's one-line verdict back, which lets the
source report a failure the destination found (bad digest, missing
capability) instead of claiming success.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import logging
import os
import select
import signal
import socket
import ssl
import struct
import subprocess
import termios
import threading
import time
from typing import Protocol, cast

from ..errors import TransportError

log = logging.getLogger(__name__)

VERDICT_OK = b"XBZRLE-OK\n"
VERDICT_ERROR = b"XBZRLE-ERROR "
VERDICT_MAX = 4096


class Channel(Protocol):
    def write(self, data: memoryview | bytes) -> None: ...
    def raw_fd(self) -> int | None: ...
    def readinto(self, buf: memoryview) -> int: ...
    def input_ended_early(self) -> str: ...
    def abort(self) -> None: ...
    def close(self) -> None: ...


class SocketChannel:
    """A connected stream socket, plain or TLS; ``abort`` unblocks a send or recv elsewhere.

    ``stall_timeout`` (seconds) bounds how long a write may make no progress:
    a destination that is alive but stopped reading then fails the migration
    instead of blocking the source forever.  ``pending`` holds bytes already
    read from the socket (the stream header the listener checked); the first
    reads return them.
    """

    has_verdict = True

    def __init__(self, sock: socket.socket, *, stall_timeout: float | None = None,
                 pending: bytes = b"") -> None:
        self.sock = sock
        self.stall_timeout = stall_timeout
        self._pending = pending
        if stall_timeout is not None:
            sock.settimeout(stall_timeout)

    @property
    def is_tls(self) -> bool:
        return isinstance(self.sock, ssl.SSLSocket)

    def write(self, data: memoryview | bytes) -> None:
        if select.select([self.sock], [], [], 0)[0]:  # the destination spoke: a refusal?
            verdict = self._salvage_verdict()
            if verdict is not None:
                raise TransportError(f"the destination refused the migration: {verdict}")
        try:
            if self.stall_timeout is None:
                self.sock.sendall(data)
                return
            view = memoryview(data).cast("B")
            while view:  # per send call, not per byte: each may take a whole buffer
                view = view[self.sock.send(view):]
        except TimeoutError as exc:
            raise TransportError(
                f"the destination stopped reading: no progress for {self.stall_timeout:g} s "
                "(x-stall-timeout)") from exc
        except OSError as exc:
            verdict = self._salvage_verdict()
            if verdict is not None:
                raise TransportError(
                    f"the destination refused the migration: {verdict}") from exc
            raise TransportError(self._lost_while_sending(exc)) from exc

    def raw_fd(self) -> int | None:
        """The descriptor the bytes reach unchanged, or None under TLS.

        The source ``writev``s page payloads to it straight from guest RAM
        (the zero-copy send); the destination reads it ahead of the load
        loop on a thread that polls it first (readahead.py).  TLS allows
        neither: it transforms the bytes, and decrypted ones can wait in a
        buffer ``poll`` does not see."""
        return self.sock.fileno() if type(self.sock) is socket.socket else None

    def send_failed(self, exc: OSError) -> TransportError:
        """The error for a failed send: the destination's refusal if it said one."""
        verdict = self._salvage_verdict()
        if verdict is not None:
            return TransportError(f"the destination refused the migration: {verdict}")
        if self.stall_timeout is not None and (
                isinstance(exc, TimeoutError)
                or exc.errno in (errno.ETIMEDOUT, errno.EAGAIN, errno.EWOULDBLOCK)):
            return TransportError(
                f"the destination stopped reading: no progress for {self.stall_timeout:g} s "
                "(x-stall-timeout)")
        return TransportError(self._lost_while_sending(exc))

    def _lost_while_sending(self, exc: OSError) -> str:
        """Why a send failed; a plain channel that was reset gets a hint about TLS.

        A QEMU destination with ``tls-creds`` set says nothing to a plaintext
        source: GnuTLS fails the handshake on our first bytes and QEMU closes
        the socket with them unread, which reaches us as a reset.
        """
        text = f"lost the migration peer while sending: {exc}"
        if not self.is_tls and isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            text += " (if the destination requires TLS, set tls-creds)"
        return text

    def _salvage_verdict(self) -> str | None:
        """A destination that gave up said why before closing: read it if it is here."""
        data = b""
        try:
            self.sock.settimeout(0.0)  # what is already here; plain and TLS sockets alike
            while len(data) < VERDICT_MAX:
                chunk = self.sock.recv(VERDICT_MAX)
                if not chunk:
                    break
                data += chunk
        except ssl.SSLError as exc:  # TLS 1.3: a refused certificate shows up as an alert here
            if "ALERT" in str(exc.reason or ""):
                return f"TLS alert {exc.reason}"
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                self.sock.settimeout(self.stall_timeout)
        if data.startswith(VERDICT_ERROR):
            return data[len(VERDICT_ERROR):].split(b"\n", 1)[0].decode(errors="replace")
        return None

    def readinto(self, buf: memoryview) -> int:
        if self._pending:
            n = min(len(buf), len(self._pending))
            buf[:n] = self._pending[:n]
            self._pending = self._pending[n:]
            return n
        try:
            return self.sock.recv_into(buf)
        except OSError as exc:
            raise TransportError(f"lost the migration peer while receiving: {exc}") from exc

    def input_ended_early(self) -> str:
        """Why the stream stopped before its EOF record: a socket's peer just closed."""
        return "the source cancelled or vanished"

    def send_verdict(self, error: str | None) -> None:
        msg = VERDICT_OK if error is None else VERDICT_ERROR + error.encode()[:2000] + b"\n"
        with contextlib.suppress(OSError):
            self.sock.sendall(msg)

    def _unsent(self) -> int:
        """Bytes written but not yet acknowledged by the peer's kernel (SIOCOUTQ)."""
        try:
            raw = fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ, b"\0" * 4)
        except OSError:
            return 0
        unsent: int = struct.unpack("i", raw)[0]
        return unsent

    def _wait_drained(self) -> None:
        """The stream's tail can sit in the socket buffers of a destination that stopped
        reading: fail when they make no progress for ``stall_timeout``."""
        if self.stall_timeout is None:
            return
        unsent, since = self._unsent(), time.monotonic()
        while unsent:
            time.sleep(0.02)
            now_unsent = self._unsent()
            if now_unsent != unsent:
                unsent, since = now_unsent, time.monotonic()
            elif time.monotonic() - since >= self.stall_timeout:
                raise TransportError(
                    f"the destination stopped reading: {unsent} bytes unread for "
                    f"{self.stall_timeout:g} s (x-stall-timeout)")

    def read_verdict(self, timeout: float, required: bool = True) -> str | None:
        """Wait for the destination's verdict; None means success.

        ``required=False`` accepts a peer that closes without a word (a real
        QEMU destination, which has no way back in a precopy migration); an
        error verdict still counts.
        """
        self._wait_drained()
        self.sock.settimeout(timeout)
        try:
            if not self.is_tls:  # TLS has no half-close: the EOF record ends the stream
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


class StderrTail:
    """Drains a command's stderr in a thread, keeping its last line (bounded)."""

    KEEP = 4096

    def __init__(self, stream: io.BufferedReader) -> None:
        self._stream = stream
        self._tail = b""
        self._thread = threading.Thread(target=self._drain, name="exec-stderr", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            while chunk := self._stream.read1(65536):
                self._tail = (self._tail + chunk)[-self.KEEP:]
        with contextlib.suppress(OSError):
            self._stream.close()

    def last_line(self, wait: float = 2.0) -> str:
        self._thread.join(wait)
        lines = [ln for ln in self._tail.decode(errors="replace").splitlines() if ln.strip()]
        return lines[-1].strip() if lines else ""


EXEC_EXIT_WAIT = 5.0
"""Seconds to wait for an ``exec:`` command that closed its end of the pipe to exit.

A write into its pipe fails with EPIPE as soon as the command closed its
stdin, and a read from it sees end of file as soon as the command closed
its stdout, either of which may be well before it exits (it may still be
writing its error message, or be slow on a loaded machine): the source, or
the destination whose stream ended early, waits this long for the exit
status and stderr that explain the failure, then kills it."""

EXEC_CLOSE_WAIT = 30.0
"""Seconds a source's ``exec:`` command may take to finish once the whole stream
went through its pipe (it may still be compressing or storing it); still
running then, it is killed and the migration fails.  (A destination's command
is killed at once: the stream it wrote has decided the migration.)"""


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (Linux /proc; best effort, an exiting one is skipped)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as f:
                children = [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
        found += children
        todo += children
    return found


def _kill_command(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL an exec: command and what it started.

    ``/bin/sh -c CMD`` forks the programs of CMD: killing the shell alone
    leaves them running, holding the pipe (a read then blocks until they
    end) and stderr.  The tree is listed before the shell dies, while its
    children are still its own.
    """
    below = _descendants(proc.pid) if proc.poll() is None else []
    with contextlib.suppress(OSError):
        proc.kill()
    for pid in below:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


class FileChannel:
    """A file or pipe; no way back, so no verdict.

    For ``exec:`` the command's exit status and last stderr line explain a
    failure: a write to a command that stopped reading is only "Broken
    pipe", and an incoming command that dies early is only an end of file
    in the middle of the stream, so in both cases the channel reaps the
    command (``EXEC_EXIT_WAIT``) and reports why it ended, or that it had to
    be killed.
    """

    has_verdict = False

    def __init__(self, fd: int, proc: subprocess.Popen[bytes] | None = None, *,
                 incoming: bool = False) -> None:
        self.fd = fd
        self.proc = proc
        self.incoming = incoming
        # Popen(stderr=PIPE) with the default buffering gives an io.BufferedReader
        self._stderr = StderrTail(cast(io.BufferedReader, proc.stderr)) \
            if proc is not None and proc.stderr else None

    def _ended(self, rc: int, how: str = "") -> str:
        """QEMU-like words for the command's end: its status, then its last stderr line."""
        status = f"killed by signal {-rc}" if rc < 0 else f"exited with status {rc}"
        line = self._stderr.last_line() if self._stderr is not None else ""
        return f"exec: migration command {status}{how}" + (f": {line}" if line else "")

    def _command_failure(self) -> str | None:
        """Why the exec: command failed (status and last stderr line), once it exited."""
        if self.proc is None:
            return None
        try:
            rc = self.proc.wait(timeout=EXEC_EXIT_WAIT)
        except subprocess.TimeoutExpired:
            return None
        return self._ended(rc) if rc != 0 else None

    def _reap(self, closed: str, early: str) -> str:
        """Why the exec: command closed its ``closed`` end ("input" or "output")
        before the stream's end; ``early`` completes "exited with status 0".

        It is exiting, or has exited, but its status may not exist yet: wait
        up to ``EXEC_EXIT_WAIT`` for it; a command still alive then is killed.
        """
        assert self.proc is not None
        if self.proc.poll() is None:
            log.info("exec: migration command closed its %s; waiting up to %g s for it "
                     "to exit", closed, EXEC_EXIT_WAIT)
        try:
            rc = self.proc.wait(timeout=EXEC_EXIT_WAIT)
        except subprocess.TimeoutExpired:
            _kill_command(self.proc)
            rc = self.proc.wait()  # SIGKILL: at once
            return self._ended(rc, f" (it closed its {closed} and was still running after "
                                   f"{EXEC_EXIT_WAIT:g} s)")
        return self._ended(rc, early if rc == 0 else "")

    def _command_stopped_reading(self) -> str:
        """Why the exec: command's pipe broke (EPIPE): it closed its input."""
        return self._reap("input", " before reading the whole stream")

    def input_ended_early(self) -> str:
        """Why the stream stopped (end of file) before its EOF record.

        A file simply holds less than a whole stream.  An exec: command
        closed its output: it failed (its status and last stderr line say
        why), exited 0 having written only part of a stream, or is still
        running, and is killed after ``EXEC_EXIT_WAIT``.
        """
        if self.proc is None:
            return "the file holds an incomplete stream"
        return self._reap("output", " without writing the whole stream")

    def write(self, data: memoryview | bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        except OSError as exc:
            raise self.send_failed(exc) from exc

    def raw_fd(self) -> int | None:
        """Files and pipes: page payloads go straight from guest RAM, and reads
        run ahead of the load loop (see SocketChannel.raw_fd)."""
        return self.fd

    @property
    def splices_pages(self) -> bool:
        """An exec: command's pipe may hold references to guest pages (vmsplice)
        instead of copies: close() waits for the command to exit, so it has
        read every page before the migration completes and the guest may run."""
        return self.proc is not None

    def send_failed(self, exc: OSError) -> TransportError:
        """The error for a failed write (here or in the zero-copy send): for an
        exec: command that stopped reading, its exit status and stderr."""
        if self.proc is not None and exc.errno == errno.EPIPE:
            return TransportError(self._command_stopped_reading())
        failure = self._command_failure() if self.proc is not None else None
        return TransportError(failure or f"migration output failed: {exc}")

    def readinto(self, buf: memoryview) -> int:
        try:
            return os.readv(self.fd, [buf])
        except OSError as exc:
            failure = self._command_failure()
            raise TransportError(failure or f"migration input failed: {exc}") from exc

    def abort(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            _kill_command(self.proc)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        if self.proc is not None and self.incoming:
            self._close_incoming()
        elif self.proc is not None:
            try:
                rc = self.proc.wait(timeout=EXEC_CLOSE_WAIT)
            except subprocess.TimeoutExpired:
                _kill_command(self.proc)
                self.proc.wait()  # SIGKILL: at once; no zombie left behind
                raise TransportError(f"exec: migration command did not finish within "
                                     f"{EXEC_CLOSE_WAIT:g} s of the stream's end: "
                                     "killed") from None
            if rc != 0:
                raise TransportError(self._command_failure() or
                                     f"exec: migration command exited with status {rc}")

    def _close_incoming(self) -> None:
        """The end of an incoming command, once the destination is done reading.

        The stream decided the migration (its EOF record, the digest; a stream
        cut short was already reported with the command's status), so what
        the command does now only gets a log line, as QEMU ignores it too.
        One still running is killed at once, with what it started: the
        guest's resume waits for this close.
        """
        assert self.proc is not None
        if self.proc.poll() is None:
            log.info("exec: migration command still running after the stream: killed")
            _kill_command(self.proc)
        rc = self.proc.wait()  # exited, or SIGKILLed just now
        if rc > 0:
            log.warning("%s after the whole stream was read (ignored)", self._ended(rc))
