"""One process's migration API: what the CLI and both monitors call.

It owns the capabilities and parameters (checked by :mod:`.params`), starts
at most one outgoing or incoming migration at a time, forwards live changes
(cache size, bandwidth, downtime) to a running one, and answers
``query-migrate``.  Listeners hear status changes, e.g. to emit QMP events.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import MigrationStateError
from ..transport.uri import parse_uri
from .access import ObjectRegistry, admission, source_transport
from .common import StatusListener
from .destination import IncomingMigration
from .params import Parameters, Settings
from .source import SourceConfig, SourceMigration
from .status import IN_PROGRESS_MESSAGE, MigrationStatus
from .throttle import ThrottleSettings

if TYPE_CHECKING:
    from ..guest import Guest


class MigrationManager:
    """The migration side of one guest, as QEMU's migration commands see it.

    Settings (capabilities, parameters) live here and apply to the next
    migration; at most one migration, outgoing or incoming, runs at a time
    (``current``), and settings that QEMU lets change live are forwarded to
    it.  Every method is safe to call from any thread.  Typical use::

        m = MigrationManager(guest)
        m.set_capability("xbzrle", True)
        m.migrate("tcp:127.0.0.1:4444").wait()
        print(m.query()["status"])
    """

    def __init__(self, guest: Guest) -> None:
        """Manage migrations of ``guest`` (its RAM size bounds the cache size)."""
        self.guest = guest
        self.settings = Settings(ram_size=sum(b.size for b in guest.blocks.values()))
        self.current: SourceMigration | IncomingMigration | None = None
        self._listeners: list[StatusListener] = []
        self._pass_listeners: list[Callable[[int], None]] = []
        self._lock = threading.Lock()
        self.objects = ObjectRegistry()  # --object tls-creds-x509/authz-*, by id

    # -- listeners -----------------------------------------------------------
    def add_status_listener(self, fn: StatusListener) -> None:
        """Call ``fn(status)`` on every status change of every later migration.

        It runs in the migration's thread: keep it short, never block.
        """
        self._listeners.append(fn)

    def add_pass_listener(self, fn: Callable[[int], None]) -> None:
        """Call ``fn(dirty_sync_count)`` after every dirty sync (QEMU's MIGRATION_PASS)."""
        self._pass_listeners.append(fn)

    def _notify(self, status: MigrationStatus) -> None:
        for fn in list(self._listeners):
            fn(status)

    def _notify_pass(self, count: int) -> None:
        for fn in list(self._pass_listeners):
            fn(count)

    # -- state -----------------------------------------------------------------
    @property
    def status(self) -> MigrationStatus:
        """The current (or last) migration's status; ``none`` before the first."""
        return self.current.status if self.current is not None else MigrationStatus.NONE

    @property
    def running(self) -> bool:
        """True while a migration has not reached completed, failed or cancelled."""
        return self.status.is_running

    def _refuse_if_running(self) -> None:
        mig = self.current
        waiting = mig is not None and mig.incoming and mig.status == MigrationStatus.SETUP
        if self.running and not waiting:
            raise MigrationStateError(IN_PROGRESS_MESSAGE)

    # -- settings ----------------------------------------------------------------
    def set_capability(self, name: str, state: bool) -> None:
        """``migrate_set_capability NAME on|off``; ParameterError for an unknown name,
        MigrationStateError while a migration runs (a waiting destination may)."""
        self.set_capabilities([(name, state)])

    def set_capabilities(self, wanted: list[tuple[str, bool]]) -> None:
        """``migrate-set-capabilities``: all or nothing, refused while migrating."""
        self._refuse_if_running()
        self.settings.set_capabilities(wanted)

    def set_parameters(self, **values: object) -> None:
        """``migrate-set-parameters``: all values or none (ParameterError names the bad one).

        Names in either spelling (``max_bandwidth`` or ``max-bandwidth``); a
        running migration picks up the cache size, bandwidth and downtime limit.
        """
        self.settings.set_parameters(**values)
        self._forward_live()

    def set_cache_size(self, size: int) -> int:
        """The seed's ``migrate_set_cache_size``: rounds down to a power of two."""
        value = self.settings.set_cache_size(size)
        self._forward_live()
        return value

    def set_downtime_seconds(self, seconds: float) -> None:
        """The old ``migrate_set_downtime`` (seconds, fractions allowed)."""
        self.set_parameters(downtime_limit=self.settings.downtime_seconds_to_ms(seconds))

    def _forward_live(self) -> None:
        mig = self.current
        if isinstance(mig, SourceMigration) and mig.status.is_running:
            p = self.settings.parameters
            if mig.cache is not None or mig.config.xbzrle:
                mig.set_cache_size(p.xbzrle_cache_size)
            mig.set_bandwidth(p.max_bandwidth)
            mig.set_downtime_limit(p.downtime_limit)
            mig.set_throttle_settings(throttle_settings(p))

    # -- migrations ----------------------------------------------------------------
    def migrate(self, uri: str, max_rounds: int = 0) -> SourceMigration:
        """Start migrating the guest to ``uri`` (``tcp:HOST:PORT``, ``unix:``, ``file:``,
        ``exec:``) in a thread; returns it at once (``.wait()`` for the end).

        ``max_rounds`` > 0 forces the switch-over after that many passes.
        MigrationStateError if a migration is already running.
        """
        with self._lock:
            self._refuse_if_running()
            p = self.settings.parameters
            config = SourceConfig(
                xbzrle=self.settings.capability("xbzrle"),
                cache_size=p.xbzrle_cache_size,
                max_bandwidth=p.max_bandwidth,
                downtime_limit_ms=p.downtime_limit,
                max_rounds=max_rounds,
                transport=source_transport(self.objects, p),
                ram_digest=self.settings.capability("x-ram-digest"),
                ram_digest_full=self.settings.capability("x-ram-digest-full"),
                auto_converge=self.settings.capability("auto-converge"),
                throttle=throttle_settings(p),
                throttle_raw_bytes=p.x_throttle_raw_bytes,
                overflow_backoff=p.x_overflow_backoff,
            )
            mig = SourceMigration(self.guest, parse_uri(uri), config, self._notify,
                                  self._notify_pass)
            self.current = mig
            mig.start()
        return mig

    def incoming(self, uri: str, resume: bool = True) -> IncomingMigration:
        """Listen on ``uri`` for one migration into the guest (bound before returning:
        ``.port`` is the real port of ``tcp:HOST:0``).

        The guest should be stopped first; with ``resume`` it runs once the RAM
        is in and its digest checked.
        """
        with self._lock:
            self._refuse_if_running()
            if self.current is not None and self.current.status.is_running:
                raise MigrationStateError(IN_PROGRESS_MESSAGE)
            mig = IncomingMigration(self.guest, parse_uri(uri),
                                    lambda: self.settings.capability("xbzrle"),
                                    self._notify, resume=resume,
                                    admission=admission(self.objects, self.settings.parameters),
                                    ram_digest=lambda: self.settings.capability("x-ram-digest"),
                                    ram_digest_full=lambda: self.settings.capability(
                                        "x-ram-digest-full"))
            self.current = mig
            mig.start()
        return mig

    def cancel(self) -> None:
        """``migrate_cancel``: stop the running migration (the source guest runs on)."""
        mig = self.current
        if mig is not None and mig.status.is_running:
            mig.cancel()

    def query(self) -> dict[str, object]:
        """``query-migrate``: QEMU's dict for the current migration, ``{}`` before any."""
        mig = self.current
        if mig is None:
            return {}
        return mig.query()

    def wait(self, timeout: float | None = None) -> MigrationStatus:
        """Wait up to ``timeout`` seconds for the current migration's thread; its status."""
        mig = self.current
        if mig is None:
            return MigrationStatus.NONE
        return mig.wait(timeout)


def throttle_settings(p: Parameters) -> ThrottleSettings:
    """The auto-converge parameters as the trigger reads them."""
    return ThrottleSettings(threshold=p.throttle_trigger_threshold,
                            initial=p.cpu_throttle_initial,
                            increment=p.cpu_throttle_increment,
                            tailslow=p.cpu_throttle_tailslow,
                            max_throttle=p.max_cpu_throttle)
