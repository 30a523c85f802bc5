"""Write-behind: a channel's writes on a second thread, in order.

The source's save loop (compiled, without the GIL) fills a buffer with page
records; the channel then copies that buffer into the kernel (a socket, a
pipe, a file; also without the GIL).  Done in turn on one thread, the two
take the sum of their times; with two buffers and one writer thread they run
on two cores at once, the save loop filling one buffer while the other is
being written.  Writes keep their order; a failed write is raised in the
caller's thread by the next call that waits for it.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from .channels import Channel


class WriteBehind:
    """Two buffers of ``size`` bytes written to ``channel`` by a writer thread.

    ``buffer()`` returns the next buffer once its previous write is done;
    ``submit(view)`` queues a write of a view of it (or of any bytes the
    caller will not change); ``flush()`` waits for every queued write.
    """

    DEPTH = 2

    def __init__(self, channel: Channel, size: int) -> None:
        self._channel = channel
        self._buffers = [bytearray(size) for _ in range(self.DEPTH)]
        self._owner: list[Future[None] | None] = [None] * self.DEPTH
        self._next = 0
        self._queued: deque[Future[None]] = deque()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="migration-writer")

    def buffer(self) -> bytearray:
        """The next free buffer (waits for its last write; raises that write's error)."""
        index = self._next
        pending = self._owner[index]
        if pending is not None:
            self._owner[index] = None
            pending.result()
        return self._buffers[index]

    def submit(self, data: bytes | memoryview, *, from_buffer: bool = True) -> None:
        """Queue a write; ``from_buffer``: ``data`` is a view of the last ``buffer()``."""
        self._reap()
        future = self._pool.submit(self._channel.write, data)
        self._queued.append(future)
        if from_buffer:
            self._owner[self._next] = future
            self._next = (self._next + 1) % self.DEPTH

    def flush(self) -> None:
        """Wait for every queued write; raise the first failure."""
        while self._queued:
            self._queued.popleft().result()
        self._owner = [None] * self.DEPTH

    def close(self) -> None:
        """Stop the writer thread without waiting for writes still queued.

        Call after ``flush()``, or after aborting the channel (a write blocked
        in the kernel then fails at once).
        """
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._queued.clear()

    def _reap(self) -> None:
        """Raise a failure of a finished write early; forget finished writes."""
        while self._queued and self._queued[0].done():
            self._queued.popleft().result()


class ReadAhead:
    """A reader thread that fills buffers from ``channel`` while the caller parses.

    The destination's mirror of :class:`WriteBehind`: receiving (the kernel's
    copy out of the socket or pipe) and loading (the compiled load loop's copy
    into RAM) run on two cores at once.  ``next()`` returns a view of the next
    filled buffer, empty at the end of input; the buffer is reused once the
    following ``next()`` is called, so the caller must be done with it (the
    stream parser copies what it keeps).  A read error is raised by ``next()``
    in order, after the data read before it.
    """

    DEPTH = 3

    def __init__(self, channel: Channel, size: int) -> None:
        import queue
        import threading

        self._channel = channel
        self._free: queue.Queue[bytearray] = queue.Queue()
        self._full: queue.Queue[tuple[bytearray, int] | BaseException] = queue.Queue()
        for _ in range(self.DEPTH):
            self._free.put(bytearray(size))
        self._held: bytearray | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="migration-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            buf = self._free.get()
            if self._stopped.is_set():
                return
            try:
                n = self._channel.readinto(memoryview(buf))
            except BaseException as exc:  # handed to the caller's thread
                self._full.put(exc)
                return
            self._full.put((buf, n))
            if n == 0:
                return

    def next(self) -> memoryview:
        """The next bytes read (empty at the end); raises the reader's error."""
        if self._held is not None:
            self._free.put(self._held)
            self._held = None
        item = self._full.get()
        if isinstance(item, BaseException):
            self._full.put(item)  # every later call fails the same way
            raise item
        buf, n = item
        if n == 0:
            self._full.put(item)
            return memoryview(b"")
        self._held = buf
        return memoryview(buf)[:n]

    def stop(self) -> None:
        """Stop reading ahead (after the stream's end, or on failure); does not block."""
        self._stopped.set()
        self._free.put(bytearray(0))  # wakes a reader waiting for a buffer
