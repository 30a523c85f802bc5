"""The migration state machine: which status may follow which.

QEMU's names.  Pure logic, no threads and no I/O: a :class:`StatusMachine`
holds one migration's status and :meth:`StatusMachine.move` is the only way
to change it; it checks the direction's transition table and raises
:class:`~xbzrle.errors.MigrationStateError` for an illegal move, so a bug
shows up as an exception instead of a wrong ``info migrate``.

Each migration object runs once: it starts at ``none`` and ends in one of
the final states (``completed``, ``failed``, ``cancelled``); the next
migration is a new object with a new machine.  Both directions share the
meaning of cancel: the operator's ``migrate_cancel`` moves to ``cancelling``
and the migration ends ``cancelled``; a failure while cancelling still ends
``failed``; a cancel that comes after the destination has accepted the whole
stream is too late, and the migration ends ``completed`` (the destination
runs the guest, so the source must not resume it).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from ..errors import MigrationStateError


class MigrationStatus(enum.StrEnum):
    NONE = "none"
    SETUP = "setup"
    ACTIVE = "active"
    DEVICE = "device"  # guest stopped, last pages going out
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def is_running(self) -> bool:
        """True while a migration owns the guest and the settings are locked."""
        return self in RUNNING_STATUSES

    @property
    def is_final(self) -> bool:
        """True once the migration is over (whichever way it ended)."""
        return self in FINAL_STATUSES


RUNNING_STATUSES = frozenset(
    {MigrationStatus.SETUP, MigrationStatus.ACTIVE, MigrationStatus.DEVICE,
     MigrationStatus.CANCELLING}
)
FINAL_STATUSES = frozenset(
    {MigrationStatus.COMPLETED, MigrationStatus.FAILED, MigrationStatus.CANCELLED}
)

Transitions = Mapping[MigrationStatus, frozenset[MigrationStatus]]

_S = MigrationStatus

#: The outgoing side: rounds in ``active``, the stopped guest's last pages in ``device``.
OUTGOING_TRANSITIONS: Transitions = {
    _S.NONE: frozenset({_S.SETUP}),
    _S.SETUP: frozenset({_S.ACTIVE, _S.FAILED, _S.CANCELLING}),
    _S.ACTIVE: frozenset({_S.DEVICE, _S.COMPLETED, _S.FAILED, _S.CANCELLING}),
    _S.DEVICE: frozenset({_S.COMPLETED, _S.FAILED, _S.CANCELLING}),
    _S.CANCELLING: frozenset({_S.CANCELLED, _S.FAILED, _S.COMPLETED}),
    _S.COMPLETED: frozenset(),
    _S.FAILED: frozenset(),
    _S.CANCELLED: frozenset(),
}

#: The incoming side: listening in ``setup``, loading in ``active`` (no ``device``).
INCOMING_TRANSITIONS: Transitions = {
    _S.NONE: frozenset({_S.SETUP}),
    _S.SETUP: frozenset({_S.ACTIVE, _S.FAILED, _S.CANCELLING}),
    _S.ACTIVE: frozenset({_S.COMPLETED, _S.FAILED, _S.CANCELLING}),
    _S.CANCELLING: frozenset({_S.CANCELLED, _S.FAILED, _S.COMPLETED}),
    _S.COMPLETED: frozenset(),
    _S.FAILED: frozenset(),
    _S.CANCELLED: frozenset(),
}

TRANSITIONS: Mapping[str, Transitions] = {
    "outgoing": OUTGOING_TRANSITIONS,
    "incoming": INCOMING_TRANSITIONS,
}


def check_transition(current: MigrationStatus, new: MigrationStatus,
                     direction: str = "outgoing") -> None:
    """Raise :class:`MigrationStateError` unless ``current -> new`` is legal."""
    if new not in TRANSITIONS[direction].get(current, frozenset()):
        raise MigrationStateError(
            f"illegal {direction} migration status change {current} -> {new}")


class StatusMachine:
    """One migration's status; :meth:`move` is the one way to change it."""

    def __init__(self, direction: str) -> None:
        if direction not in TRANSITIONS:
            raise ValueError(f"unknown migration direction {direction!r}")
        self.direction = direction
        self.status = MigrationStatus.NONE

    def can_move(self, new: MigrationStatus) -> bool:
        return new in TRANSITIONS[self.direction][self.status]

    def move(self, new: MigrationStatus) -> MigrationStatus:
        """Change to ``new`` after checking the table; returns the old status."""
        check_transition(self.status, new, self.direction)
        old, self.status = self.status, new
        return old


IN_PROGRESS_MESSAGE = "There's a migration process in progress"
