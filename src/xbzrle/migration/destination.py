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
from typing import TYPE_CHECKING

from .._backend import load_core
from ..errors import ParameterError, StreamError, TransportError, XbzrleError
from ..guest.hugepages import small_pages_for_incoming
from ..stream import constants as K
from ..stream import records as ev
from ..stream.counts import BatchCounts
from ..stream.load import PageLoader
from ..stream.parser import HEADER_SIZE, StreamParser, header_problem
from ..transport import Admission, FileChannel, Listener, SocketChannel
from ..transport.readahead import stream_reader
from ..transport.uri import MigrationURI
from .common import Migration
from .stats import MigrationStats
from .status import MigrationStatus

log = logging.getLogger(__name__)
if TYPE_CHECKING:  # type checkers see the compiled core's stub (_core.pyi)
    from .. import _core
    from ..guest import Guest
else:
    _core = load_core()


def check_capabilities(source_caps: tuple[str, ...], *, xbzrle: bool) -> None:
    """Refuse, before any page, a stream announcing XBZRLE when the capability is off here.

    The seed's rule (both ends enable ``xbzrle``) is kept, but checked where
    QEMU checks the capabilities it validates: in the configuration section.
    QEMU 7.2 itself accepts XBZRLE pages with the capability off.
    """
    if "xbzrle" in source_caps and not xbzrle:
        raise StreamError(
            "Capability xbzrle is off, but received capability is on: enable it on the "
            "destination with 'migrate_set_capability xbzrle on' (QMP: "
            "migrate-set-capabilities) before migrating")


class IncomingMigration(Migration):
    """Listens on ``uri`` for one migration into ``guest``."""

    direction = "incoming"

    def __init__(
        self,
        guest: Guest,
        uri: MigrationURI,
        xbzrle: Callable[[], bool],
        on_status: Callable[[MigrationStatus], None] | None = None,
        resume: bool = True,
        admission: Admission | None = None,
        ram_digest: Callable[[], bool] = lambda: True,
        ram_digest_full: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__(MigrationStats(
            total_ram=sum(b.size for b in guest.blocks.values()), xbzrle=False), on_status)
        self.guest = guest
        self.uri = uri
        # Both read when the stream arrives: the operator may set them late.
        self._xbzrle = xbzrle
        self._ram_digest = ram_digest
        self._ram_digest_full = ram_digest_full
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
            if self.cancel_requested:  # cancelled while it opened: _interrupt saw no channel
                self._channel.abort()  # (an exec: command is killed, not waited for)
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
        expect_digest = self._ram_digest()
        # The load loop keeps a digest table unless x-ram-digest-full asks for a
        # read of all RAM after EOF (or no digest is expected at all).
        tables = expect_digest and not self._ram_digest_full()
        small_pages_for_incoming(self.guest.blocks.values())
        loader = PageLoader(self.guest.blocks, self._xbzrle(), anonymous=True, tables=tables)
        try:
            digest = self._load(loader, expect_digest)
        finally:
            loader.release()
        if digest is None:
            return
        mine = {name: loader.digest(name) or block.digest()
                for name, block in self.guest.blocks.items()}
        self.digests = {"source": {name: want.hex() for name, (_size, want) in digest.items()},
                        "destination": dict(mine)}
        for name, (_size, want) in digest.items():
            if name not in mine:
                raise StreamError(f"digest names unknown RAM block {name!r}")
            if bytes.fromhex(mine[name]) != want:
                raise StreamError(
                    f"RAM block {name!r} differs from the source after migration "
                    "(digest mismatch): refusing to run a corrupt guest")

    def _load(self, loader: PageLoader,
              expect_digest: bool) -> dict[str, tuple[int, bytes]] | None:
        """Read the stream to its end, applying pages; return the source's digest.

        After EOF the source may append QEMU's VMDESCRIPTION; it is read too
        (up to the source's end of stream), so no unread byte makes closing
        the socket reset the connection before the verdict arrives.
        """
        assert self._channel is not None
        parser = StreamParser()
        parser.page_sink = loader.sink
        with stream_reader(self._channel) as reader:
            digest: dict[str, tuple[int, bytes]] | None = None
            received = 0
            described = False
            while not described:
                view = reader.read()
                n = len(view)
                if n == 0:
                    if parser.eof_seen:
                        break
                    # Why: the source vanished, the file is short, or the exec:
                    # command failed (reaped here, killed if it does not exit).
                    raise TransportError(
                        f"the migration stream ended at offset {received} before its EOF record: "
                        f"{self._channel.input_ended_early()}")
                received += n
                # In pieces cut at a round's end: the pages after it are applied in
                # place, not copied into the parser's buffer first.
                for _ in parser.feed_in_pieces(view):
                    for event in parser.events():
                        if isinstance(event, ev.Digest):
                            digest = event.blocks
                        elif isinstance(event, ev.VmDescription):
                            described = True
                        else:
                            self._apply(event, loader, expect_digest, digest is not None)
                with self._lock:
                    loader.counts.wire_bytes = received
                    self.stats.totals = loader.counts
                    self.stats.add_batch(BatchCounts())  # rolls the rate window
            return digest

    def _apply(self, event: ev.Event, loader: PageLoader, expect_digest: bool,
               have_digest: bool) -> None:
        """One event of the stream other than the digest and the description."""
        if isinstance(event, ev.Configuration):  # in QEMU's order: machine, caps
            self._check_machine(event)
            check_capabilities(event.capabilities, xbzrle=self._xbzrle())
        elif isinstance(event, ev.RamBlocks):
            loader.check_layout(event)
        elif isinstance(event, ev.ZeroPage | ev.NormalPage | ev.XbzrlePage):
            loader.apply(event)
        elif isinstance(event, ev.SectionFull) and event.idstr == K.DIGEST_IDSTR:
            if not expect_digest:
                raise StreamError(
                    "the source sent a RAM digest (x-ram-digest on) but x-ram-digest "
                    "is off on this destination: set it the same on both sides",
                    event.stream_offset)
        elif isinstance(event, ev.SectionFull):
            raise StreamError(
                f"device section {event.idstr!r} is not supported by this destination",
                event.stream_offset)
        elif isinstance(event, ev.Eof) and expect_digest and not have_digest:
            raise StreamError(
                "the migration stream carries no RAM digest (x-ram-digest off on the "
                "source) but x-ram-digest is on on this destination: set it the same "
                "on both sides", event.stream_offset)

    def _check_machine(self, config: ev.Configuration) -> None:
        """Refuse a stream of another machine type, as QEMU does (same wording)."""
        local = self.guest.machine.announced
        if config.machine != local:
            raise StreamError(
                f"Machine type received is '{config.machine}' and local is '{local}'",
                config.stream_offset)
