"""The VM as its monitors see it: run state, stop/cont, events, migrations.

Both monitors (HMP and QMP) call this object and nothing below it, so the
two always agree.  It owns QEMU's run state (``running``, ``paused``,
``inmigrate``, ``postmigrate``, ``finish-migrate``), turns the migration's
status changes into the ``MIGRATION``/``MIGRATION_PASS``/``STOP``/``RESUME``
events, and resumes an incoming guest itself so that ``RESUME`` and the run
state never disagree.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from ..errors import MigrationStateError, ParameterError
from ..migration.destination import IncomingMigration
from ..migration.manager import MigrationManager
from ..migration.source import SourceMigration
from ..migration.status import MigrationStatus

EventSink = Callable[[str, "dict[str, object] | None"], None]

#: Bytes copied per write by ``pmemsave``, so a huge dump does not double memory.
PMEMSAVE_CHUNK = 1 << 20


def incoming_address(mig: IncomingMigration) -> dict[str, str] | None:
    """QAPI SocketAddress of a listening destination (the port as a string, as QEMU)."""
    uri = mig.uri
    if uri.scheme == "tcp":
        host = "0.0.0.0" if uri.host in ("", "0") else uri.host
        return {"type": "inet", "host": host, "port": str(mig.port)}
    if uri.scheme == "unix":
        return {"type": "unix", "path": uri.path}
    return None


class VmControl:
    """One process's guest and migration manager, behind QEMU's semantics.

    ``incoming`` is what ``--incoming`` said: ``None`` (a normal VM),
    ``"defer"`` (wait for ``migrate_incoming``) or a URI to listen on now.
    ``autostart`` is false for ``-S``: the guest stays paused until ``cont``.
    """

    def __init__(self, guest, manager: MigrationManager | None = None, *,
                 autostart: bool = True, incoming: str | None = None) -> None:
        self.guest = guest
        self.manager = manager or MigrationManager(guest)
        self.autostart = autostart
        self.quit_requested = threading.Event()
        self._lock = threading.RLock()
        self._sinks: list[EventSink] = []
        self._guest_was_running = guest.running
        self.manager.add_status_listener(self._on_migration_status)
        self.manager.add_pass_listener(self._on_pass)
        if incoming is not None:
            self._runstate = "inmigrate"
            self._quiesce()
            if incoming != "defer":
                self.migrate_incoming(incoming)
        elif autostart:
            self._runstate = "running"
            if not guest.running:
                guest.cont()
        else:
            self._runstate = "paused"
            self._quiesce()
        self._guest_was_running = guest.running

    def _quiesce(self) -> None:
        if self.guest.running:
            self.guest.stop()

    # -- events ------------------------------------------------------------------
    def subscribe(self, sink: EventSink) -> None:
        with self._lock:
            self._sinks.append(sink)

    def unsubscribe(self, sink: EventSink) -> None:
        with self._lock:
            if sink in self._sinks:
                self._sinks.remove(sink)

    def emit(self, name: str, data: dict[str, object] | None = None) -> None:
        with self._lock:
            sinks = list(self._sinks)
        for sink in sinks:
            sink(name, data)

    def _events_on(self) -> bool:
        return self.manager.settings.capability("events")

    def _on_pass(self, count: int) -> None:
        if self._events_on():
            self.emit("MIGRATION_PASS", {"pass": count})

    def _on_migration_status(self, status: MigrationStatus) -> None:
        """Runs in the migration thread: keep run state and events in step."""
        mig = self.manager.current
        with self._lock:
            if isinstance(mig, SourceMigration):
                if status == MigrationStatus.DEVICE:
                    self._runstate = "finish-migrate"
                elif status == MigrationStatus.COMPLETED:
                    self._runstate = "postmigrate"
                elif status in (MigrationStatus.FAILED, MigrationStatus.CANCELLED) \
                        and self.guest.running:
                    self._runstate = "running"
            self._sync_running_events()
        if self._events_on():
            self.emit("MIGRATION", {"status": str(status)})
        if isinstance(mig, IncomingMigration) and status == MigrationStatus.COMPLETED:
            with self._lock:
                self._runstate = "paused"
                if self.autostart:
                    self._resume()

    def _sync_running_events(self) -> None:
        """STOP/RESUME for changes made below us (the source's switch-over)."""
        running = self.guest.running
        if running != self._guest_was_running:
            self._guest_was_running = running
            self.emit("RESUME" if running else "STOP")

    # -- run state ---------------------------------------------------------------
    @property
    def runstate(self) -> str:
        return self._runstate

    @property
    def running(self) -> bool:
        return self._runstate == "running"

    def query_status(self) -> dict[str, object]:
        """``query-status`` (QEMU 7.2 shape)."""
        return {"status": self._runstate, "singlestep": False, "running": self.running}

    def stop(self) -> None:
        """Pause the guest; on a waiting destination, only drop the autostart."""
        with self._lock:
            if self._runstate == "inmigrate":
                self.autostart = False
                return
            if self._runstate != "running":
                return
            self.guest.stop()
            self._runstate = "paused"
            self._sync_running_events()

    def cont(self) -> None:
        """Resume the guest; on a waiting destination, resume once it arrives."""
        with self._lock:
            if self._runstate == "inmigrate":
                self.autostart = True
                return
            if self._runstate == "finish-migrate":
                raise MigrationStateError(
                    "The guest is being migrated: it resumes by itself if the migration fails")
            if self._runstate == "running":
                return
            self._resume()

    def _resume(self) -> None:
        self.guest.cont()
        self._runstate = "running"
        self._sync_running_events()

    # -- migrations --------------------------------------------------------------
    def migrate(self, uri: str) -> SourceMigration:
        if self._runstate == "inmigrate":
            raise MigrationStateError("Guest is waiting for an incoming migration")
        return self.manager.migrate(uri)

    def migrate_incoming(self, uri: str) -> IncomingMigration:
        """Listen for a migration (``--incoming URI``, or later after ``defer``)."""
        with self._lock:
            if self._runstate != "inmigrate":
                raise MigrationStateError(
                    "'-incoming' was not specified on the command line")
            mig = self.manager.current
            if isinstance(mig, IncomingMigration) and mig.status.is_running:
                raise MigrationStateError("The incoming migration has already been started")
            return self.manager.incoming(uri, resume=False)

    def cancel(self) -> None:
        self.manager.cancel()

    def query_migrate(self) -> dict[str, object]:
        """``query-migrate``, plus where a waiting destination listens (QEMU's
        ``socket-address``: how an operator learns the port chosen for port 0)."""
        info = self.manager.query()
        mig = self.manager.current
        if isinstance(mig, IncomingMigration) and mig.status == MigrationStatus.SETUP:
            address = incoming_address(mig)
            if address is not None:
                info["socket-address"] = [address]
        return info

    # -- memory ------------------------------------------------------------------
    def ram_layout(self) -> list[tuple[str, int, int]]:
        """(block, guest-physical start, size): blocks laid out back to back."""
        layout, base = [], 0
        for name, block in self.guest.blocks.items():
            layout.append((name, base, block.size))
            base += block.size
        return layout

    def pmemsave(self, addr: int, size: int, filename: str) -> None:
        """Write guest RAM ``[addr, addr+size)`` to ``filename``, like QEMU."""
        total = sum(size for _, _, size in self.ram_layout())
        if addr < 0 or size < 0 or addr + size > total:
            raise ParameterError(
                f"Invalid addr 0x{addr:x}/size {size} specified: guest RAM is "
                f"0x0..0x{total:x}")
        try:
            fd = os.open(filename, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as exc:
            raise ParameterError(f"Could not open '{filename}': {exc.strerror}") from None
        try:
            with os.fdopen(fd, "wb") as out:
                for name, base, length in self.ram_layout():
                    lo, hi = max(addr, base), min(addr + size, base + length)
                    if lo >= hi:
                        continue
                    with memoryview(self.guest.blocks[name]) as raw, raw.cast("B") as view:
                        for pos in range(lo - base, hi - base, PMEMSAVE_CHUNK):
                            out.write(view[pos:min(pos + PMEMSAVE_CHUNK, hi - base)])
        except OSError as exc:
            raise ParameterError(f"Could not write '{filename}': {exc.strerror}") from None

    # -- lifetime ----------------------------------------------------------------
    def request_quit(self) -> None:
        self.quit_requested.set()
