"""Command line: argument parsing and wiring only."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import XbzrleError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xbzrle", description="Live migration with XBZRLE delta compression."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="measure the codec against memcmp on this machine")
    bench.add_argument("--quick", action="store_true", help="fewer pages and repeats")
    bench.set_defaults(run=_run_bench)
    vm = sub.add_parser("vm", help="run a guest with a workload and print its dirty rate")
    vm.add_argument("--ram", default="1G", help="guest RAM size, e.g. 256M or 1G (default 1G)")
    vm.add_argument("--workload", default="loadgen",
                    choices=("loadgen", "sparse", "dense", "hotcold", "idle"))
    vm.add_argument("--rate", type=float, default=0, help="pages per second, 0 = flat out")
    vm.add_argument("--tracker", default="auto", choices=("auto", "uffd", "bitmap", "scan"))
    vm.add_argument("--seconds", type=float, default=None, help="stop after N seconds")
    vm.set_defaults(run=_run_vm)
    return parser


def _run_bench(args: argparse.Namespace) -> int:
    from .benchmark import main as bench_main

    return bench_main(["--quick"] if args.quick else [])


def _run_vm(args: argparse.Namespace) -> int:
    from .guest.vm import run_vm

    return run_vm(args.ram, args.workload, args.rate, args.tracker, args.seconds)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except XbzrleError as exc:
        print(f"xbzrle: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
