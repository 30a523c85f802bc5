"""The VM as its monitors see it: run state, stop/cont, settings, events, migrations.

Both monitors (HMP and QMP) call this object and nothing below it, so the
two always agree.  It owns QEMU's run state (:class:`RunState`: ``running``,
``prelaunch``, ``paused``, ``inmigrate``, ``finish-migrate``,
``postmigrate``, ``shutdown``), changed only through a checked transition table, with
commands guarded by :func:`require` as qemu.qmp guards its methods.  It asks
the migration which side it is (``mig.outgoing``), turns the migration's
status changes into the ``MIGRATION``/``MIGRATION_PASS``/``STOP``/``RESUME``
events, and resumes an incoming guest itself so that ``RESUME`` and the run
state never disagree.
"""

from __future__ import annotations

import enum
import functools
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from ..errors import MigrationStateError, ParameterError
from ..migration.common import Migration
from ..migration.destination import IncomingMigration
from ..migration.manager import MigrationManager
from ..migration.stats import PassProgress
from ..migration.status import MigrationStatus
from .version import QEMU_VERSION, package_version

if TYPE_CHECKING:
    from ..guest import Guest

EventSink = Callable[[str, "dict[str, object] | None"], None]

#: Bytes copied per write by ``pmemsave``, so a huge dump does not double memory.
PMEMSAVE_CHUNK = 1 << 20


class RunState(enum.StrEnum):
    """QEMU's run states, as ``query-status`` spells them.

    ``prelaunch`` is a guest started with ``-S`` that never ran yet; ``stop``
    leaves it there, ``cont`` starts it, as in QEMU.
    """

    RUNNING = "running"
    PRELAUNCH = "prelaunch"
    PAUSED = "paused"
    INMIGRATE = "inmigrate"
    FINISH_MIGRATE = "finish-migrate"
    POSTMIGRATE = "postmigrate"
    SHUTDOWN = "shutdown"


_R = RunState
#: Which run state may follow which (QEMU's ``runstate_transitions_def``, our subset).
RUNSTATE_TRANSITIONS: Mapping[RunState, frozenset[RunState]] = {
    _R.RUNNING: frozenset({_R.PAUSED, _R.FINISH_MIGRATE, _R.SHUTDOWN}),
    _R.PRELAUNCH: frozenset({_R.RUNNING, _R.FINISH_MIGRATE, _R.SHUTDOWN}),
    _R.PAUSED: frozenset({_R.RUNNING, _R.FINISH_MIGRATE, _R.SHUTDOWN}),
    _R.INMIGRATE: frozenset({_R.RUNNING, _R.PAUSED, _R.SHUTDOWN}),
    _R.FINISH_MIGRATE: frozenset({_R.POSTMIGRATE, _R.RUNNING, _R.PAUSED, _R.PRELAUNCH,
                                  _R.SHUTDOWN}),
    _R.POSTMIGRATE: frozenset({_R.RUNNING, _R.FINISH_MIGRATE, _R.SHUTDOWN}),
    _R.SHUTDOWN: frozenset(),
}

P = ParamSpec("P")
T = TypeVar("T")


def require(*states: RunState,
            error: str | Mapping[RunState, str]) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Allow the decorated :class:`VmControl` method only in ``states``
    (qemu.qmp's ``@require``); elsewhere it raises
    :class:`~xbzrle.errors.MigrationStateError` with QEMU's text: ``error``,
    or ``error[state]`` when it names the refused states one by one."""
    allowed = frozenset(states)

    def refusal(state: RunState) -> str:
        if isinstance(error, str):
            return error
        return error.get(state, f"The command is not allowed while the VM is '{state}'")

    def decorate(method: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(method)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            state = args[0].runstate  # type: ignore[attr-defined]
            if state not in allowed:
                raise MigrationStateError(refusal(state))
            return method(*args, **kwargs)

        return guarded

    return decorate


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
    Every run-state change goes through :meth:`_set_runstate`, which checks
    :data:`RUNSTATE_TRANSITIONS`.
    """

    def __init__(self, guest: Guest, manager: MigrationManager | None = None, *,
                 autostart: bool = True, incoming: str | None = None) -> None:
        self.guest = guest
        self.manager = manager or MigrationManager(guest)
        self.autostart = autostart
        self.quit_requested = threading.Event()
        self._lock = threading.RLock()
        self._sinks: list[EventSink] = []
        self._guest_was_running = guest.running
        self._state_before_switchover = RunState.RUNNING
        self.manager.add_status_listener(self._on_migration_status)
        self.manager.add_pass_listener(self._on_pass)
        if incoming is not None:
            self._runstate = RunState.INMIGRATE
            self._quiesce()
            if incoming != "defer":
                self.migrate_incoming(incoming)
        elif autostart:
            self._runstate = RunState.RUNNING
            if not guest.running:
                guest.cont()
        else:
            self._runstate = RunState.PRELAUNCH
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
        outgoing = mig is not None and mig.outgoing
        with self._lock:
            if self._runstate == RunState.SHUTDOWN:  # quitting: only the events go out
                pass
            elif outgoing:
                if status == MigrationStatus.DEVICE:
                    self._state_before_switchover = self._runstate
                    self._set_runstate(RunState.FINISH_MIGRATE)
                elif status == MigrationStatus.COMPLETED:
                    self._set_runstate(RunState.POSTMIGRATE)
                elif status in (MigrationStatus.FAILED, MigrationStatus.CANCELLED):
                    self._after_failed_migration()
            self._sync_running_events()
        if self._events_on():
            self.emit("MIGRATION", {"status": str(status)})
        if not outgoing and status == MigrationStatus.COMPLETED:
            with self._lock:
                if self._runstate == RunState.SHUTDOWN:
                    return
                self._set_runstate(RunState.PAUSED)
                if self.autostart:
                    self._resume()

    def _after_failed_migration(self) -> None:
        """The source runs on as before: running if the guest runs, else as it was."""
        if self.guest.running:
            self._set_runstate(RunState.RUNNING)
        elif self._runstate == RunState.FINISH_MIGRATE:
            self._set_runstate(self._state_before_switchover)

    def _sync_running_events(self) -> None:
        """STOP/RESUME for changes made below us (the source's switch-over)."""
        running = self.guest.running
        if running != self._guest_was_running:
            self._guest_was_running = running
            self.emit("RESUME" if running else "STOP")

    # -- run state ---------------------------------------------------------------
    @property
    def runstate(self) -> RunState:
        return self._runstate

    @property
    def running(self) -> bool:
        return self._runstate == RunState.RUNNING

    def _set_runstate(self, new: RunState) -> None:
        """The one place the run state changes; an illegal move is a bug and raises."""
        if new == self._runstate:
            return
        if new not in RUNSTATE_TRANSITIONS[self._runstate]:
            raise MigrationStateError(f"illegal run state change {self._runstate} -> {new}")
        self._runstate = new

    def query_status(self) -> dict[str, object]:
        """``query-status`` (QEMU 7.2 shape)."""
        return {"status": str(self._runstate), "singlestep": False, "running": self.running}

    @staticmethod
    def query_version() -> dict[str, object]:
        """``query-version``: the QEMU release we speak like, and our package."""
        return {"qemu": dict(QEMU_VERSION), "package": package_version()}

    def stop(self) -> None:
        """Pause the guest; on a waiting destination, only drop the autostart."""
        with self._lock:
            if self._runstate == RunState.INMIGRATE:
                self.autostart = False
                return
            if self._runstate != RunState.RUNNING:
                return
            self.guest.stop()
            self._set_runstate(RunState.PAUSED)
            self._sync_running_events()

    @require(RunState.RUNNING, RunState.PRELAUNCH, RunState.PAUSED, RunState.INMIGRATE,
             RunState.POSTMIGRATE,
             error={RunState.FINISH_MIGRATE: "The guest is being migrated: it resumes by "
                                             "itself if the migration fails"})
    def cont(self) -> None:
        """Resume the guest; on a waiting destination, resume once it arrives."""
        with self._lock:
            if self._runstate == RunState.INMIGRATE:
                self.autostart = True
                return
            if self._runstate == RunState.RUNNING:
                return
            self._resume()

    def _resume(self) -> None:
        self.guest.cont()
        self._set_runstate(RunState.RUNNING)
        self._sync_running_events()

    # -- settings ----------------------------------------------------------------
    def query_capabilities(self) -> list[dict[str, object]]:
        """``query-migrate-capabilities``."""
        return self.manager.settings.query_capabilities()

    def set_capabilities(self, wanted: list[tuple[str, bool]]) -> None:
        """``migrate-set-capabilities``: all or nothing."""
        self.manager.set_capabilities(wanted)

    def query_parameters(self) -> dict[str, int | bool | str]:
        """``query-migrate-parameters``."""
        return self.manager.settings.parameters.to_qmp()

    def set_parameters(self, **values: object) -> None:
        """``migrate-set-parameters`` (QMP spelling or Python spelling of the names)."""
        self.manager.set_parameters(**values)

    def cache_size(self) -> int:
        """``query-migrate-cache-size``: bytes."""
        return self.manager.settings.parameters.xbzrle_cache_size

    def set_cache_size(self, size: object) -> int:
        """The seed's ``migrate_set_cache_size``: rounds down to a power of two."""
        return self.manager.set_cache_size(size)  # type: ignore[arg-type]

    def set_speed(self, bytes_per_second: object) -> None:
        """The old ``migrate_set_speed``."""
        self.manager.set_parameters(max_bandwidth=bytes_per_second)

    def set_downtime(self, seconds: object) -> None:
        """The old ``migrate_set_downtime`` (seconds)."""
        self.manager.set_downtime_seconds(seconds)  # type: ignore[arg-type]

    # -- migrations --------------------------------------------------------------
    @require(RunState.RUNNING, RunState.PRELAUNCH, RunState.PAUSED, RunState.FINISH_MIGRATE,
             RunState.POSTMIGRATE,
             error={RunState.INMIGRATE: "Guest is waiting for an incoming migration"})
    def migrate(self, uri: str) -> Migration:
        return self.manager.migrate(uri)

    @require(RunState.INMIGRATE,
             error={state: "'-incoming' was not specified on the command line"
                    for state in RunState if state != RunState.SHUTDOWN})
    def migrate_incoming(self, uri: str) -> Migration:
        """Listen for a migration (``--incoming URI``, or later after ``defer``)."""
        with self._lock:
            mig = self.manager.current
            if mig is not None and mig.incoming and mig.status.is_running:
                raise MigrationStateError("The incoming migration has already been started")
            return self.manager.incoming(uri, resume=False)

    def cancel(self) -> None:
        self.manager.cancel()

    @property
    def migration(self) -> Migration | None:
        """The current (or last) migration of either direction, for the CLI's report."""
        return self.manager.current

    def migration_progress(self) -> PassProgress | None:
        """Where the current outgoing migration is in its pass (progress displays)."""
        mig = self.manager.current
        return mig.stats.progress() if mig is not None and mig.outgoing else None

    def wait_migration(self, timeout: float | None = None) -> MigrationStatus:
        """Wait up to ``timeout`` seconds for the current migration; its status."""
        return self.manager.wait(timeout)

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
        """``quit``: the process ends once its monitors have answered."""
        with self._lock:
            self._set_runstate(RunState.SHUTDOWN)
        self.quit_requested.set()
