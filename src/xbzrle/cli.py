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
    return parser


def _run_bench(args: argparse.Namespace) -> int:
    from .benchmark import main as bench_main

    return bench_main(["--quick"] if args.quick else [])


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
