"""The migration lifecycle, with the state machine alone (no threads, no sockets).

Every legal status change of both directions is driven once, every other
pair is shown to raise, and the paths an operator sees (complete, fail,
cancel, a cancel that comes too late) are walked end to end.
"""

from __future__ import annotations

import itertools

import pytest

from xbzrle.errors import MigrationStateError
from xbzrle.migration.status import (
    INCOMING_TRANSITIONS,
    OUTGOING_TRANSITIONS,
    TRANSITIONS,
    MigrationStatus,
    StatusMachine,
    check_transition,
)

S = MigrationStatus


def machine_at(direction: str, status: MigrationStatus) -> StatusMachine:
    """A machine walked to ``status`` along legal moves only (breadth first)."""
    table = TRANSITIONS[direction]
    paths = {S.NONE: []}
    frontier = [S.NONE]
    while frontier:
        here = frontier.pop(0)
        for nxt in sorted(table[here]):
            if nxt not in paths:
                paths[nxt] = [*paths[here], nxt]
                frontier.append(nxt)
    assert status in paths, f"{status} is unreachable on the {direction} side"
    m = StatusMachine(direction)
    for step in paths[status]:
        m.move(step)
    assert m.status == status
    return m


def pairs(direction: str, legal: bool):
    table = TRANSITIONS[direction]
    for a, b in itertools.product(table, S):
        if (b in table[a]) == legal:
            yield pytest.param(direction, a, b, id=f"{direction}:{a}->{b}")


LEGAL = [*pairs("outgoing", True), *pairs("incoming", True)]
ILLEGAL = [*pairs("outgoing", False), *pairs("incoming", False)]


@pytest.mark.parametrize("direction, current, new", LEGAL)
def test_every_legal_change_moves(direction, current, new):
    m = machine_at(direction, current)
    assert m.move(new) == current
    assert m.status == new


@pytest.mark.parametrize("direction, current, new", ILLEGAL)
def test_every_illegal_change_raises_and_leaves_the_status(direction, current, new):
    m = machine_at(direction, current)
    with pytest.raises(MigrationStateError, match=f"{current} -> {new}"):
        m.move(new)
    assert m.status == current
    with pytest.raises(MigrationStateError):
        check_transition(current, new, direction)


def test_the_tables_cover_what_each_side_can_be():
    assert set(OUTGOING_TRANSITIONS) == set(S)
    assert set(INCOMING_TRANSITIONS) == set(S) - {S.DEVICE}  # no switch-over on this side
    for table in (OUTGOING_TRANSITIONS, INCOMING_TRANSITIONS):
        for status in (S.COMPLETED, S.FAILED, S.CANCELLED):
            assert table[status] == frozenset() and status.is_final
        for nexts in table.values():
            assert all(n in table for n in nexts)


@pytest.mark.parametrize("direction", ["outgoing", "incoming"])
def test_cancel_means_cancelled_on_both_sides(direction):
    for start in (S.SETUP, S.ACTIVE):
        m = machine_at(direction, start)
        m.move(S.CANCELLING)
        m.move(S.CANCELLED)
        assert m.status == S.CANCELLED and m.status.is_final


@pytest.mark.parametrize("path", [
    [S.SETUP, S.ACTIVE, S.DEVICE, S.COMPLETED],
    [S.SETUP, S.ACTIVE, S.FAILED],
    [S.SETUP, S.ACTIVE, S.DEVICE, S.CANCELLING, S.CANCELLED],
    [S.SETUP, S.ACTIVE, S.DEVICE, S.CANCELLING, S.COMPLETED],  # too late: the peer runs it
])
def test_source_paths(path):
    m = StatusMachine("outgoing")
    for status in path:
        m.move(status)


def test_destination_has_no_switch_over_and_never_restarts():
    m = machine_at("incoming", S.ACTIVE)
    with pytest.raises(MigrationStateError):
        m.move(S.DEVICE)
    m.move(S.COMPLETED)
    with pytest.raises(MigrationStateError):
        m.move(S.SETUP)  # a new migration is a new object


def test_unknown_direction_is_refused():
    with pytest.raises(ValueError):
        StatusMachine("sideways")


class _Idle:
    """Stands in for the migration thread: this test drives the lifecycle by hand."""

    def start(self) -> None:
        pass

    def join(self, timeout=None) -> None:
        pass

    def is_alive(self) -> bool:
        return False


def lifecycle(direction: str):
    from xbzrle.migration.common import Migration
    from xbzrle.migration.stats import MigrationStats

    class Bare(Migration):
        pass

    Bare.direction = direction
    heard: list[MigrationStatus] = []
    mig = Bare(MigrationStats(total_ram=1 << 20, xbzrle=False), heard.append)
    mig.thread = _Idle()
    return mig, heard


@pytest.mark.parametrize("direction", ["outgoing", "incoming"])
def test_the_migration_base_owns_every_change_and_refuses_illegal_ones(direction):
    from xbzrle.errors import Cancelled

    mig, heard = lifecycle(direction)
    assert mig.status == S.NONE and mig.direction == direction
    with pytest.raises(AttributeError):
        mig.status = S.ACTIVE  # no way around the table
    mig.start()
    mig._transition(S.ACTIVE)
    assert mig._transition(S.ACTIVE) is False  # same status: nothing heard twice
    with pytest.raises(MigrationStateError):
        mig._transition(S.SETUP)
    mig.cancel()
    assert mig.status == S.CANCELLING and mig.cancel_requested
    with pytest.raises(Cancelled):
        mig._transition(S.COMPLETED, unless_cancelled=True)
    mig._conclude(S.CANCELLED, None)
    assert heard == [S.SETUP, S.ACTIVE, S.CANCELLING, S.CANCELLED]
    assert mig.finished and mig.query()["status"] == "cancelled"
    mig.cancel()  # after the end: nothing happens
    assert heard[-1] == S.CANCELLED and len(heard) == 4
