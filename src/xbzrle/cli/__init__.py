"""Command line: argument parsing and wiring only.

Every expected failure ends as one line on stderr, ``PROG: what: why``, with
exit status 2 for a refused option value and 1 for a runtime failure (see
:func:`xbzrle.errors.exit_code`); a traceback means a bug.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import EXIT_FAILURE, XbzrleError, exit_code
from . import options
from . import qemu as qemu_commands
from .options import CliParser

WORKLOADS = ("loadgen", "sparse", "dense", "hotcold", "idle")


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(
        prog="xbzrle", description="Live migration with XBZRLE delta compression."
    )
    parser.add_argument("--version", action="version", version=f"xbzrle {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="show the library's log messages (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="show errors only, no warnings")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo", help="live-migrate a running guest to a second process, without and with XBZRLE")
    demo.add_argument("--ram", type=options.size, default="256M",
                      help="guest RAM size (default 256M)")
    demo.add_argument("--workload", default="loadgen", choices=WORKLOADS,
                      help="what the guest runs (default loadgen)")
    demo.add_argument("--bandwidth", type=options.size, default="32M",
                      help="max-bandwidth in bytes/s, K/M/G suffixes (default 32M)")
    demo.add_argument("--cache-size", type=options.size, default="64M",
                      help="xbzrle-cache-size (default 64M)")
    demo.add_argument("--downtime-limit", type=options.milliseconds, default=300,
                      help="ms (default 300)")
    demo.add_argument("--time-cap", type=options.seconds, default=20.0,
                      help="seconds before a migration that does not converge is cancelled")
    demo.add_argument("--rate", type=options.rate, default=0,
                      help="page writes per second of the workload (default: twice what "
                           "--bandwidth carries, so a plain migration cannot keep up)")
    demo.add_argument("--plot", metavar="FILE.png",
                      help="draw both migrations round by round (needs matplotlib: "
                           "pip install 'xbzrle[plot]')")
    demo.add_argument("--json", action="store_true",
                      help="print both final query-migrate results as one JSON object")
    demo.set_defaults(run=_run_demo)
    qemu_commands.add_commands(sub)
    _add_vm_parser(sub)
    return parser


def _add_vm_parser(sub: argparse._SubParsersAction[CliParser]) -> None:
    vm = sub.add_parser(
        "vm", help="run a guest with a workload; with monitors (HMP, QMP) it is a migration "
                   "source or destination, without them it prints its dirty rate")
    vm.add_argument("--ram", type=options.size, default="1G",
                    help="guest RAM size, e.g. 256M or 1G (default 1G)")
    vm.add_argument("--machine", type=options.machine, default="xbzrle-vm",
                    help="machine type shaping the RAM blocks and named in the stream: "
                         "xbzrle-vm (default, one block pc.ram), none (QEMU's -machine none: "
                         "one block ram), pc (QEMU 7.2's pc with -nodefaults)")
    vm.add_argument("--workload", default="loadgen", choices=WORKLOADS)
    vm.add_argument("--rate", type=options.rate, default=0,
                    help="page writes per second, 0 = flat out")
    vm.add_argument("--tracker", default="auto", choices=("auto", "uffd", "bitmap", "scan"))
    vm.add_argument("--seconds", type=options.seconds, default=None,
                    help="without monitors: stop printing the dirty rate after N seconds")
    vm.add_argument("--monitor", action="append", default=[], metavar="ENDPOINT",
                    help="human monitor on stdio, unix:PATH or tcp:HOST:PORT (repeatable)")
    vm.add_argument("--qmp", action="append", default=[], metavar="ENDPOINT",
                    help="QMP monitor on stdio, unix:PATH or tcp:HOST:PORT (repeatable)")
    vm.add_argument("--incoming", metavar="URI",
                    help="wait for a migration on URI (tcp:HOST:PORT, unix:PATH, ...), "
                         "or 'defer' to be given one later with migrate_incoming")
    vm.add_argument("--object", action="append", default=[], dest="objects", metavar="SPEC",
                    help="a QEMU object for the migration channel: tls-creds-x509,id=ID,"
                         "endpoint=server|client,dir=DIR[,verify-peer=on|off], "
                         "authz-simple,id=ID,identity=DN or authz-list,id=ID,rules.0.match=DN,"
                         "rules.0.policy=allow (repeatable; use with 'migrate_set_parameter "
                         "tls-creds ID' and, for a destination, --incoming defer)")
    vm.add_argument("-S", dest="start_stopped", action="store_true",
                    help="start with the guest paused (resume with 'cont')")
    vm.add_argument("--xbzrle", action="store_true",
                    help="enable the xbzrle capability from the start")
    vm.add_argument("--exit-after-migration", action="store_true",
                    help="exit once one migration ends (status 0 if it completed)")
    vm.add_argument("--report-json", action="store_true",
                    help="with --exit-after-migration: print the outcome as one JSON line")
    vm.set_defaults(run=_run_vm)


def check_vm_options(args: argparse.Namespace) -> str | None:
    """Why this ``vm`` command line could never do anything useful, or None."""
    monitors = bool(args.monitor or args.qmp)
    if args.incoming == "defer" and not monitors:
        return ("--incoming defer: nothing could give the URI later; add a --monitor or "
                "--qmp for migrate_incoming")
    if args.exit_after_migration and not (args.incoming or monitors):
        return ("--exit-after-migration: no migration can happen without --incoming "
                "or a monitor to type migrate in")
    if args.report_json and not args.exit_after_migration:
        return "--report-json only applies with --exit-after-migration"
    if args.start_stopped and not (monitors or args.incoming):
        return "-S: nothing could resume the guest; add a --monitor or --qmp for 'cont'"
    if args.seconds is not None and (monitors or args.incoming or args.exit_after_migration):
        return "--seconds only applies to the dirty-rate printer (no monitors, no --incoming)"
    return None


def _run_vm(args: argparse.Namespace) -> int:
    refused = check_vm_options(args)
    if refused is not None:
        options.fail("xbzrle vm", refused)
    plain = not (args.monitor or args.qmp or args.incoming or args.start_stopped
                 or args.exit_after_migration)
    if plain:  # the guest issue's dirty-rate printer, unchanged
        from .vm import run_dirty_rate

        return run_dirty_rate(args.ram, args.workload, args.rate, args.tracker, args.seconds,
                              machine=args.machine)
    from .vm import VmOptions, run_vm

    return run_vm(VmOptions(
        ram=args.ram, workload=args.workload, rate=args.rate, tracker=args.tracker,
        machine=args.machine, monitors=list(args.monitor), qmp=list(args.qmp),
        incoming=args.incoming,
        start_stopped=args.start_stopped, xbzrle=args.xbzrle, objects=list(args.objects),
        exit_after_migration=args.exit_after_migration, report_json=args.report_json))


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import DemoOptions, run_demo

    return run_demo(DemoOptions(
        ram=args.ram, workload=args.workload, bandwidth=args.bandwidth,
        cache_size=args.cache_size, time_cap=args.time_cap,
        downtime_limit=args.downtime_limit, as_json=args.json, rate=args.rate,
        plot=args.plot))


def setup_logging(verbose: int, quiet: bool) -> None:
    """Show the library's log records on stderr: warnings by default, more with -v."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[
        min(verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root = logging.getLogger("xbzrle")
    root.addHandler(handler)
    root.setLevel(level)


def one_line(exc: BaseException) -> str:
    """An expected failure as one line: an OSError names its file and says why."""
    if isinstance(exc, OSError) and not isinstance(exc, XbzrleError) and exc.strerror:
        names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
        text = f"{' -> '.join(names)}: {exc.strerror}" if names else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    prog = f"xbzrle {args.command}"
    try:
        return int(args.run(args) or 0)
    except (XbzrleError, OSError) as exc:
        print(f"{prog}: {one_line(exc)}", file=sys.stderr)
        return exit_code(exc) if isinstance(exc, XbzrleError) else EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
