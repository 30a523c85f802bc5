"""Command line: argument parsing and wiring only."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import XbzrleError, exit_code
from . import qemu as qemu_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xbzrle", description="Live migration with XBZRLE delta compression."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="measure the codec against memcmp on this machine")
    bench.add_argument("--quick", action="store_true", help="fewer pages and repeats")
    bench.set_defaults(run=_run_bench)

    demo = sub.add_parser(
        "demo", help="live-migrate a running guest to a second process, without and with XBZRLE")
    demo.add_argument("--ram", default="256M", help="guest RAM size (default 256M)")
    demo.add_argument("--workload", default="loadgen",
                      help="loadgen, sparse, dense, hotcold or idle (default loadgen)")
    demo.add_argument("--bandwidth", default="32M",
                      help="max-bandwidth in bytes/s, k/m/g suffixes (default 32M)")
    demo.add_argument("--cache-size", default="64M", help="xbzrle-cache-size (default 64M)")
    demo.add_argument("--downtime-limit", type=int, default=300, help="ms (default 300)")
    demo.add_argument("--time-cap", type=float, default=20.0,
                      help="seconds before a migration that does not converge is cancelled")
    demo.add_argument("--json", action="store_true",
                      help="print both final query-migrate results as one JSON object")
    demo.set_defaults(run=_run_demo)
    qemu_commands.add_commands(sub)
    _add_vm_parser(sub)
    return parser


def _add_vm_parser(sub) -> None:
    vm = sub.add_parser(
        "vm", help="run a guest with a workload; with monitors (HMP, QMP) it is a migration "
                   "source or destination, without them it prints its dirty rate")
    vm.add_argument("--ram", default="1G", help="guest RAM size, e.g. 256M or 1G (default 1G)")
    vm.add_argument("--workload", default="loadgen",
                    choices=("loadgen", "sparse", "dense", "hotcold", "idle"))
    vm.add_argument("--rate", type=float, default=0, help="pages per second, 0 = flat out")
    vm.add_argument("--tracker", default="auto", choices=("auto", "uffd", "bitmap", "scan"))
    vm.add_argument("--seconds", type=float, default=None,
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


def _run_vm(args: argparse.Namespace) -> int:
    plain = not (args.monitor or args.qmp or args.incoming or args.start_stopped
                 or args.exit_after_migration)
    if plain:  # the guest issue's dirty-rate printer, unchanged
        from .vm import run_dirty_rate

        return run_dirty_rate(args.ram, args.workload, args.rate, args.tracker, args.seconds)
    from .vm import VmOptions, run_vm

    return run_vm(VmOptions(
        ram=args.ram, workload=args.workload, rate=args.rate, tracker=args.tracker,
        monitors=list(args.monitor), qmp=list(args.qmp), incoming=args.incoming,
        start_stopped=args.start_stopped, xbzrle=args.xbzrle, objects=list(args.objects),
        exit_after_migration=args.exit_after_migration, report_json=args.report_json))


def _run_demo(args: argparse.Namespace) -> int:
    from ..sizes import parse_size
    from .demo import DemoOptions, run_demo

    return run_demo(DemoOptions(
        ram=parse_size(args.ram), workload=args.workload, bandwidth=parse_size(args.bandwidth),
        cache_size=parse_size(args.cache_size), time_cap=args.time_cap,
        downtime_limit=args.downtime_limit, as_json=args.json))


def _run_bench(args: argparse.Namespace) -> int:
    from ..benchmark import main as bench_main

    return bench_main(["--quick"] if args.quick else [])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except XbzrleError as exc:  # expected failures: one line, never a traceback
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"xbzrle: error: {message}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
