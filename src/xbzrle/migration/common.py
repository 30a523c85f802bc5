"""The lifecycle both directions share: one thread, one enforced status.

:class:`Migration` owns a migration's status.  Every change goes through
:meth:`Migration._transition`, which checks :mod:`.status`'s table for the
side (``direction``), records the change under the lock and tells the
listener; an illegal move raises :class:`~xbzrle.errors.MigrationStateError`.
Cancel means the same on both sides: ``cancelling``, then ``cancelled``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import ClassVar

from ..errors import Cancelled
from .stats import MigrationStats
from .status import MigrationStatus, StatusMachine

log = logging.getLogger(__name__)

StatusListener = Callable[[MigrationStatus], None]


class Migration:
    """A migration run by one thread: start, cancel, wait for it, query it."""

    #: ``"outgoing"`` (source) or ``"incoming"`` (destination): picks the table.
    direction: ClassVar[str]

    thread: threading.Thread
    error: str | None
    stats: MigrationStats

    def __init__(self, stats: MigrationStats, on_status: StatusListener | None) -> None:
        self.stats = stats
        self.error = None
        self.on_status = on_status or (lambda status: None)
        self._machine = StatusMachine(self.direction)
        self._lock = threading.Lock()
        self._cancel = threading.Event()

    # -- status ----------------------------------------------------------------
    @property
    def status(self) -> MigrationStatus:
        return self._machine.status

    @property
    def outgoing(self) -> bool:
        return self.direction == "outgoing"

    @property
    def incoming(self) -> bool:
        return self.direction == "incoming"

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def _transition(self, new: MigrationStatus, *, unless_cancelled: bool = False) -> bool:
        """The one place a status changes: checked, logged, heard by the listener.

        Moving to the current status is a no-op (returns False).  With
        ``unless_cancelled``, a pending cancel wins: :class:`Cancelled` is
        raised instead of moving on.
        """
        with self._lock:
            if unless_cancelled and self._cancel.is_set():
                raise Cancelled()
            changed = self._move_locked(new)
        if changed:
            self._announce(new)
        return changed

    def _conclude(self, final: MigrationStatus, error: str | None) -> None:
        """End in ``final`` with ``error``: statistics, error and status change together."""
        with self._lock:
            self.error = error
            if final == MigrationStatus.COMPLETED:
                self.stats.remaining = 0
            self.stats.finish()
            changed = self._move_locked(final)
        if changed:
            self._announce(final)
        if error:
            log.warning("%s migration %s: %s", self.direction, final, error)

    def _move_locked(self, new: MigrationStatus) -> bool:
        if new == self._machine.status:
            return False
        self._machine.move(new)
        return True

    def _announce(self, new: MigrationStatus) -> None:
        log.info("%s migration status: %s", self.direction, new)
        self.on_status(new)

    # -- control (any thread) ----------------------------------------------------
    def start(self) -> None:
        """Enter ``setup`` and start the migration thread."""
        self._transition(MigrationStatus.SETUP)
        self.thread.start()

    def cancel(self) -> None:
        """Ask the migration to stop (``migrate_cancel``); it ends ``cancelled``."""
        with self._lock:
            if not self.status.is_running:
                return
            self._cancel.set()
            changed = self._move_locked(MigrationStatus.CANCELLING)
        if changed:
            self._announce(MigrationStatus.CANCELLING)
        self._interrupt()

    def _interrupt(self) -> None:
        """Wake the thread from whatever blocking call it is in (after a cancel)."""

    @property
    def finished(self) -> bool:
        return not self.thread.is_alive() and self.status.is_final

    def wait(self, timeout: float | None = None) -> MigrationStatus:
        self.thread.join(timeout)
        return self.status

    def query(self) -> dict[str, object]:
        with self._lock:
            info = self.stats.to_qmp(str(self.status))
        if self.error is not None:
            info["error-desc"] = self.error
        return info
