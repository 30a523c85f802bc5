"""Reading an incoming stream ahead of the load loop, on a thread of its own.

Why: with one thread the destination alternates between the kernel's copy
out of the socket (``recv``) and the load loop writing pages into guest RAM,
and each waits for the other.  With a reader thread the next piece is
copied out of the socket while the current one is applied, on the second
core the source leaves idle part of the time (a 1 GiB pass over loopback
TCP: 0.93 s -> 0.74-0.76 s in interleaved passes; see docs/migration.md,
"Seventh pass").

The reader owns the channel's reads until ``stop`` returns: it waits for
input with ``poll`` on the channel and on a wake-up pipe, so ``stop`` never
has to interrupt a read that is blocked, and no read is started after it
(the caller may then close the channel, whose descriptor number the kernel
may give to the next file opened).  Only channels with a descriptor to poll
and no buffered layer above it (plain sockets, pipes, files) are read ahead;
a TLS socket can hold decrypted bytes that ``poll`` does not see.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import threading
from collections.abc import Iterator

from .channels import Channel

PIECE_SIZE = 2 << 20
"""Bytes per read.  With the reader thread, 2 MiB pieces beat 1 MiB ones (fewer
hand-overs between the threads; 4 MiB measured the same as 2 MiB)."""

BUFFERS = 4
"""Buffers in flight: one being applied, the others filled or being read, so a
burst from the socket does not wait for the loader (3 measured slower)."""


class ReadAhead:
    """Hands out the stream piece by piece as a thread reads it from ``channel``.

    ``read()`` returns the next piece (an empty view at the end of input)
    and takes back the one it returned before, so a piece stays valid until
    the next call.  A read error is raised from ``read()`` in the caller's
    thread, as the channel raised it.
    """

    def __init__(self, channel: Channel, fd: int, size: int = PIECE_SIZE,
                 buffers: int = BUFFERS) -> None:
        self._channel = channel
        self._fd = fd
        self._wake_r, self._wake_w = os.pipe()
        self._free: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        self._filled: queue.SimpleQueue[tuple[memoryview, int] | BaseException] = \
            queue.SimpleQueue()
        self._held: memoryview | None = None
        self._ended = False
        for _ in range(buffers):
            self._free.put(memoryview(bytearray(size)))
        self._thread = threading.Thread(target=self._read, name="migration read-ahead",
                                        daemon=True)
        self._thread.start()

    def _read(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        try:
            while (buf := self._free.get()) is not None:
                ready = [fd for fd, _ in poller.poll()]
                if self._wake_r in ready:
                    return
                n = self._channel.readinto(buf)
                self._filled.put((buf, n))
                if n == 0:
                    return
        except BaseException as exc:  # raised again by read(), in the loader's thread
            self._filled.put(exc)

    def read(self) -> memoryview:
        if self._held is not None:
            self._free.put(self._held)
            self._held = None
        if self._ended:
            return memoryview(b"")
        item = self._filled.get()
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        buf, n = item
        self._ended = n == 0
        self._held = buf
        return buf[:n]

    def stop(self) -> None:
        """Stop reading and wait for the thread; bytes it did not read stay in the channel."""
        os.write(self._wake_w, b"\0")
        self._free.put(None)
        self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)


class InlineReader:
    """Reads in the caller's thread into one reused buffer (a channel that cannot
    be read ahead); the same ``read``/``stop`` as ReadAhead."""

    def __init__(self, channel: Channel, size: int = PIECE_SIZE) -> None:
        self._channel = channel
        self._buf = memoryview(bytearray(size))

    def read(self) -> memoryview:
        return self._buf[:self._channel.readinto(self._buf)]

    def stop(self) -> None:
        pass


@contextlib.contextmanager
def stream_reader(channel: Channel,
                  size: int = PIECE_SIZE) -> Iterator[ReadAhead | InlineReader]:
    """Read ``channel`` in pieces of up to ``size`` bytes, ahead on a thread where
    it can be; the thread is stopped when the block ends, before any close."""
    fd = channel.raw_fd()
    reader = ReadAhead(channel, fd, size) if fd is not None else InlineReader(channel, size)
    try:
        yield reader
    finally:
        reader.stop()
