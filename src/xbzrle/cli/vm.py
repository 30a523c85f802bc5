"""The ``xbzrle vm`` process: a guest, its migration manager and its monitors.

It behaves like a QEMU process for everything migration needs: monitors on
stdio, unix sockets or TCP (``--monitor`` for the human console, ``--qmp``
for QMP, each repeatable), ``--incoming URI|defer`` for a destination and
``-S`` to start paused.  The process runs until ``quit`` (or end of input on
a stdio monitor).  ``--exit-after-migration`` is the demo's mode: wait for
one migration, print a JSON report and exit.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from .. import __version__
from ..errors import TransportError
from ..guest import Guest
from ..migration.destination import IncomingMigration
from ..migration.manager import MigrationManager
from ..migration.status import MigrationStatus
from ..monitor.control import VmControl
from ..monitor.endpoint import parse_endpoint
from ..monitor.server import MonitorServer
from ..sizes import PAGE_SIZE

PACKAGE = f"xbzrle {__version__}"
SHUTDOWN_WAIT = 10.0  # seconds allowed for a cancelled migration to unwind


@dataclass
class VmOptions:
    ram: int | str = "256M"
    workload: str | None = None
    rate: float = 0.0
    tracker: str = "auto"
    machine: str = "xbzrle-vm"
    monitors: list[str] = field(default_factory=list)
    qmp: list[str] = field(default_factory=list)
    incoming: str | None = None
    start_stopped: bool = False
    xbzrle: bool = False
    exit_after_migration: bool = False
    report_json: bool = False
    objects: list[str] = field(default_factory=list)  # --object specs (TLS, authz)


def _note(text: str) -> None:
    print(f"xbzrle vm: {text}", file=sys.stderr, flush=True)



def run_vm(opts: VmOptions) -> int:
    # Parse every endpoint first: a typo must fail before any RAM is allocated.
    endpoints = [(parse_endpoint(s), "hmp") for s in opts.monitors]
    endpoints += [(parse_endpoint(s), "qmp") for s in opts.qmp]
    if sum(e.kind == "stdio" for e, _ in endpoints) > 1:
        from ..errors import ParameterError

        raise ParameterError("only one monitor can use stdio")
    # A human console on a terminal gets line editing, history, Tab and Ctrl-C.
    terminal = (any(e.kind == "stdio" and p == "hmp" for e, p in endpoints)
                and not opts.exit_after_migration and sys.stdin.isatty()
                and sys.stdout.isatty())
    if terminal:
        endpoints = [(e, p) for e, p in endpoints if e.kind != "stdio"]
    with Guest(ram=opts.ram, tracker=opts.tracker, machine=opts.machine) as guest:
        if opts.incoming is not None or opts.start_stopped:
            guest.stop()  # nothing may run before the migrated state (or 'cont') arrives
        if opts.workload and opts.workload != "idle":
            guest.start_workload(opts.workload, rate=opts.rate)
        manager = MigrationManager(guest)
        for spec in opts.objects:
            manager.objects.add(spec)
        if opts.xbzrle:
            manager.set_capability("xbzrle", True)
        control = VmControl(guest, manager, autostart=not opts.start_stopped,
                            incoming=opts.incoming)
        server = MonitorServer(control, PACKAGE)
        try:
            for endpoint, protocol in endpoints:
                option = "--monitor" if protocol == "hmp" else "--qmp"
                try:
                    actual = server.listen(endpoint, protocol)
                except OSError as exc:  # port taken, directory missing, no permission
                    raise TransportError(
                        f"{option} {endpoint}: cannot listen: {exc.strerror or exc}") from None
                _note(f"{'monitor' if protocol == 'hmp' else 'qmp'} on {actual}")
            _announce_incoming(control, opts)
            if opts.exit_after_migration:
                return _await_one_migration(control, opts)
            if terminal:
                from ..monitor.console import TerminalConsole
                from .progress import MigrationDisplay, live_allowed

                bar = live_allowed(sys.stdout)  # NO_COLOR: the plain progress lines
                TerminalConsole(control, f"{PACKAGE} monitor - type 'help' for more "
                                         "information",
                                display=(lambda: MigrationDisplay("migrate", sys.stdout))
                                if bar else None).run()
                return 0
            _run_until_quit(control, show_rates=not any(e.kind == "stdio" for e, _ in endpoints))
            return 0
        finally:
            server.settle()  # the reply to 'quit' goes out before SHUTDOWN, as in QEMU
            control.emit("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
            server.close()
            control.cancel()
            mig = control.migration
            if mig is not None and mig.wait(SHUTDOWN_WAIT).is_running:
                _note("migration did not stop in time; exiting without releasing guest RAM")
                sys.stdout.flush()
                os._exit(1)  # never unmap RAM under a migration thread


def _announce_incoming(control: VmControl, opts: VmOptions) -> None:
    mig = control.migration
    # with --incoming the one migration is the incoming one
    if not isinstance(mig, IncomingMigration) or opts.incoming in (None, "defer"):
        return
    if opts.exit_after_migration:  # the demo's handshake, on stdout and nothing else
        # tcp: the port bound (the demo asks for port 0); otherwise the URI read from
        print(f"LISTENING {mig.port if mig.uri.scheme == 'tcp' else mig.uri}", flush=True)
        return
    where = f"tcp:{mig.uri.host}:{mig.port}" if mig.uri.scheme == "tcp" else str(mig.uri)
    _note(f"incoming migration on {where}")


def _await_one_migration(control: VmControl, opts: VmOptions) -> int:
    while not control.quit_requested.is_set():
        mig = control.migration
        if mig is not None and mig.finished:
            break
        time.sleep(0.05)
    mig = control.migration
    if mig is None:
        return 1
    status = mig.status
    report: dict[str, object] = {
        "status": str(status), "query": mig.query(),
        "peak-rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    completed = status == MigrationStatus.COMPLETED
    digests = mig.digests if isinstance(mig, IncomingMigration) else {}
    if digests:  # the evidence: what the source sent and what this guest holds
        report["digests"] = digests
    report["digest-verified"] = (completed and bool(digests.get("source"))
                                 and digests.get("source") == digests.get("destination"))
    if completed and opts.incoming is not None and control.running:
        report["workload-resumed"] = (guest_progresses(control.guest)
                                      if opts.workload else None)
    elif not completed:
        report["error"] = mig.error
    if opts.report_json:
        print(json.dumps(report), flush=True)
    else:
        print(f"migration {status}" + (f": {mig.error}" if mig.error else ""), flush=True)
    return 0 if completed else 1


def guest_progresses(guest: Guest, timeout: float = 5.0) -> bool:
    """True once the guest's workload writes a page (within ``timeout`` seconds)."""
    before = guest.pages_written
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if guest.running and guest.pages_written > before:
            return True
        time.sleep(0.02)
    return False


def _run_until_quit(control: VmControl, show_rates: bool) -> None:
    """Wait for ``quit``; without a console on stdio, print the write rate each second.

    The dirty log belongs to the migration here, so only the workload's own
    page-write counter is read (syncing the log would steal a round's pages).
    """
    guest = control.guest
    last, last_time = guest.pages_written, time.monotonic()
    while not control.quit_requested.wait(1.0):
        if not show_rates or not guest.workloads:
            continue
        now, pages = time.monotonic(), guest.pages_written
        writes = (pages - last) / (now - last_time)
        last, last_time = pages, now
        print(f"{control.runstate:>8}  {format_writes(writes)}", flush=True)


def format_writes(per_s: float) -> str:
    """``"page writes 123456/s"``: workload operations, never a byte rate.

    A workload may write one page a million times a second; calling that
    MiB/s would claim more bandwidth than the guest has RAM.
    """
    return f"page writes {per_s:10.0f}/s"


def format_dirty(pages_per_s: float) -> str:
    """``"dirty 4096 pages/s (16.0 MiB/s)"``: distinct pages a migration must resend."""
    return f"dirty {pages_per_s:8.0f} pages/s ({pages_per_s * PAGE_SIZE / (1 << 20):7.1f} MiB/s)"


def run_dirty_rate(
    ram: str = "1G",
    workload: str = "loadgen",
    rate: float = 0,
    tracker: str = "auto",
    seconds: float | None = None,
    out: TextIO = sys.stdout,
    interval: float = 1.0,
    machine: str = "xbzrle-vm",
) -> int:
    """``xbzrle vm`` without monitors: run until Ctrl-C (or ``seconds``), print rates.

    "page writes" counts the workload's operations (each writes one page);
    "dirty" counts distinct pages the dirty log reports: what a migration
    would have to resend.  Returns the exit status (0, also on Ctrl-C).
    """
    with Guest(ram, tracker=tracker, machine=machine) as guest:
        log = guest.dirty_log
        print(
            f"guest: {guest.ram_size >> 20} MiB, workload {workload}, "
            f"rate {'flat out' if not rate else f'{rate:g} pages/s'}, tracker {log.tracker}",
            file=out,
            flush=True,
        )
        guest.start_workload(workload, rate=rate)
        log.sync()
        written = guest.pages_written
        started = last = time.monotonic()
        try:
            while seconds is None or last - started < seconds:
                time.sleep(max(0.0, last + interval - time.monotonic()))
                dirty = sum(b.count() for b in log.sync().values())
                now, pages = time.monotonic(), guest.pages_written
                span = now - last
                print(
                    f"{now - started:7.1f}s  {format_writes((pages - written) / span)}"
                    f"  {format_dirty(dirty / span)}",
                    file=out,
                    flush=True,
                )
                last, written = now, pages
        except KeyboardInterrupt:
            print("interrupted", file=out, flush=True)
        guest.stop()
    return 0
