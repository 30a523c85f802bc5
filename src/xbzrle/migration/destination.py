"""The destination side: receive one stream, rebuild the RAM, check it, resume.

The stream parser reads every record; page records are applied by the
compiled load loop when the parser hands them over, otherwise one by one.
The destination never writes outside a block (the parser and the load loop
check every offset against the announced block sizes) and fails loudly on a
digest mismatch instead of running a guest with corrupt memory.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .._backend import load_core
from ..errors import ParameterError, StreamError, TransportError, XbzrleError
from ..stream import constants as K
from ..stream import records as ev
from ..stream.counts import BatchCounts
from ..stream.load import PageLoader
from ..stream.parser import HEADER_SIZE, StreamParser, header_problem
from ..transport import Admission, FileChannel, Listener, SocketChannel
from ..transport.uri import MigrationURI
from .common import Migration
from .stats import MigrationStats
from .status import MigrationStatus

log = logging.getLogger(__name__)
_core = load_core()

READ_SIZE = 1 << 20


class IncomingMigration(Migration):
    """Listens on ``uri`` for one migration into ``guest``."""

    direction = "incoming"

    def __init__(
        self,
        guest,
        uri: MigrationURI,
        xbzrle: Callable[[], bool],
        on_status: Callable[[MigrationStatus], None] | None = None,
        resume: bool = True,
        admission: Admission | None = None,
    ) -> None:
        super().__init__(MigrationStats(
            total_ram=sum(b.size for b in guest.blocks.values()), xbzrle=False), on_status)
        self.guest = guest
        self.uri = uri
        self._xbzrle = xbzrle  # read when the stream arrives: the operator may enable it late
        self.resume = resume
        self._channel: SocketChannel | FileChannel | None = None
        #: The RAM digests compared at the end, as hex per block: what the source
        #: sent (``"source"``) and what this guest holds (``"destination"``).
        self.digests: dict[str, dict[str, str]] = {}
        self.refused: list[str] = []  # connections not admitted, why (the listener stayed open)
        self._admission = admission or Admission(prefix_size=HEADER_SIZE, check=header_problem)
        self._admission.on_refused = self._refused
        if self._admission.tls is not None and not uri.is_socket:
            raise ParameterError(
                f"TLS needs a socket migration (tcp: or unix:), not {uri.scheme}:")
        self.listener = Listener(uri)  # bind now: a bad address fails the command itself
        self.thread = threading.Thread(target=self._run, name="migration-incoming", daemon=True)

    @property
    def port(self) -> int:
        return self.listener.port

    def _refused(self, reason: str) -> None:
        log.warning("%s", reason)
        with self._lock:
            self.refused = [*self.refused[-9:], reason]

    def _interrupt(self) -> None:
        """After a cancel: stop listening, drop the stream; the thread reports cancelled."""
        self.listener.close()
        if self._channel is not None:
            self._channel.abort()

    def _run(self) -> None:
        error: str | None = None
        try:
            self._channel = self.listener.accept(self._admission)
            self._transition(MigrationStatus.ACTIVE, unless_cancelled=True)
            self._receive()
        except (XbzrleError, OSError) as exc:
            error = str(exc)
        except Exception as exc:  # a bug: report it, never resume a half-loaded guest
            log.exception("incoming migration crashed")
            error = f"internal error: {exc!r}"
        channel = self._channel
        if isinstance(channel, SocketChannel):
            channel.send_verdict(error)
        if channel is not None:
            try:
                channel.close()
            except XbzrleError as exc:
                error = error or str(exc)
        self.listener.close()
        if error is None:
            # Even after a late cancel: the source got our verdict and stays paused.
            self._conclude(MigrationStatus.COMPLETED, None)
            if self.resume:
                self.guest.cont()
        elif self.cancel_requested:
            self._conclude(MigrationStatus.CANCELLED, None)
        else:
            self._conclude(MigrationStatus.FAILED, error)

    def _receive(self) -> None:
        loader = PageLoader(self.guest.blocks, self._xbzrle(), anonymous=True)
        try:
            digest = self._load(loader)
        finally:
            loader.release()
        mine = self.guest.digest()
        self.digests = {"source": {name: want.hex() for name, (_size, want) in digest.items()},
                        "destination": dict(mine)}
        for name, (_size, want) in digest.items():
            if name not in mine:
                raise StreamError(f"digest names unknown RAM block {name!r}")
            if bytes.fromhex(mine[name]) != want:
                raise StreamError(
                    f"RAM block {name!r} differs from the source after migration "
                    "(digest mismatch): refusing to run a corrupt guest")

    def _load(self, loader: PageLoader) -> dict[str, tuple[int, bytes]]:
        """Read the stream to its EOF, applying pages; return the source's digest."""
        assert self._channel is not None
        parser = StreamParser()
        parser.page_sink = loader.sink
        view = memoryview(bytearray(READ_SIZE))
        digest: dict[str, tuple[int, bytes]] | None = None
        received = 0
        while not parser.eof_seen:
            n = self._channel.readinto(view)
            if n == 0:
                raise TransportError(
                    f"the migration stream ended at offset {received} before its EOF record: "
                    "the source cancelled or vanished")
            received += n
            parser.feed(view[:n])
            for event in parser.events():
                if isinstance(event, ev.RamBlocks):
                    loader.check_layout(event)
                elif isinstance(event, ev.ZeroPage | ev.NormalPage | ev.XbzrlePage):
                    loader.apply(event)
                elif isinstance(event, ev.Digest):
                    digest = event.blocks
                elif isinstance(event, ev.SectionFull) and event.idstr != K.DIGEST_IDSTR:
                    raise StreamError(
                        f"device section {event.idstr!r} is not supported by this destination",
                        event.stream_offset)
            with self._lock:
                loader.counts.wire_bytes = received
                self.stats.totals = loader.counts
                self.stats.add_batch(BatchCounts())  # rolls the rate window
        if digest is None:
            raise StreamError("the migration stream carries no RAM digest")
        return digest
