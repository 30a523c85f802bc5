"""The migration state machine: which status may follow which.

QEMU's names.  Pure logic: the source and destination threads ask
:func:`check_transition` before they move, so an illegal move is a bug that
shows up as an exception instead of a wrong ``info migrate``.
"""

from __future__ import annotations

import enum

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
        return self in _RUNNING


_RUNNING = frozenset(
    {MigrationStatus.SETUP, MigrationStatus.ACTIVE, MigrationStatus.DEVICE,
     MigrationStatus.CANCELLING}
)

_S = MigrationStatus
_ALLOWED: dict[MigrationStatus, frozenset[MigrationStatus]] = {
    _S.NONE: frozenset({_S.SETUP}),
    _S.SETUP: frozenset({_S.ACTIVE, _S.FAILED, _S.CANCELLING}),
    _S.ACTIVE: frozenset({_S.DEVICE, _S.COMPLETED, _S.FAILED, _S.CANCELLING}),
    _S.DEVICE: frozenset({_S.COMPLETED, _S.FAILED, _S.CANCELLING}),
    _S.CANCELLING: frozenset({_S.CANCELLED, _S.FAILED}),
    _S.COMPLETED: frozenset({_S.SETUP}),
    _S.FAILED: frozenset({_S.SETUP}),
    _S.CANCELLED: frozenset({_S.SETUP}),
}


def check_transition(current: MigrationStatus, new: MigrationStatus) -> None:
    if new not in _ALLOWED[current]:
        raise MigrationStateError(f"illegal migration status change {current} -> {new}")


IN_PROGRESS_MESSAGE = "There's a migration process in progress"
