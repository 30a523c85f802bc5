"""The ``analyze``, ``extract`` and ``receive`` subcommands (argument wiring only)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ParameterError, StreamError
from . import options
from .options import CliParser
from .progress import ReadDisplay

if TYPE_CHECKING:  # imported where used: a command loads only what it runs
    from ..qemu.compressed import OpenedStream


def add_commands(subparsers: argparse._SubParsersAction[CliParser]) -> None:
    """Register the QEMU stream commands on the main parser's subparsers."""
    analyze = subparsers.add_parser(
        "analyze", help="show what a migration stream holds (QEMU's or ours)")
    analyze.add_argument("stream", help="stream file (raw, gzip, xz or zstd), "
                                        "or - for standard input")
    analyze.add_argument("--json", action="store_true", help="print the report as JSON")
    analyze.add_argument("--plot", metavar="FILE.png",
                         help="draw the stream round by round (needs matplotlib: "
                              "pip install 'xbzrle[plot]')")
    analyze.set_defaults(run=_run_analyze)

    extract = subparsers.add_parser(
        "extract", help="rebuild every RAM block of a stream as a file, plus a manifest")
    extract.add_argument("stream", help="stream file (raw, gzip, xz or zstd), "
                                        "or - for standard input")
    _output_options(extract)
    extract.set_defaults(run=_run_extract)

    receive = subparsers.add_parser(
        "receive", help="be the destination of a live QEMU migration and keep its RAM")
    receive.add_argument("uri", help="where to listen: tcp:HOST:PORT (port 0 picks one), "
                                     "unix:PATH or exec:COMMAND")
    receive.add_argument("--object", action="append", default=[], dest="objects",
                         metavar="SPEC", help="tls-creds-x509 or authz-* object, QEMU's "
                         "syntax (repeatable)")
    receive.add_argument("--tls-creds", default="", metavar="ID",
                         help="accept only TLS with this tls-creds-x509 object (endpoint=server)")
    receive.add_argument("--tls-authz", default="", metavar="ID",
                         help="allow only client certificates this authz object allows")
    receive.add_argument("--handshake-timeout", type=float, default=10.0, metavar="S",
                         help="seconds a connection has for its TLS handshake and stream "
                              "header before it is dropped (default 10, 0 = no limit)")
    _output_options(receive)
    receive.set_defaults(run=_run_receive)


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", required=True, help="output directory")
    parser.add_argument("--max-ram", type=options.size, default="64G",
                        help="refuse streams announcing more RAM than this (default 64G)")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON")
    parser.add_argument("--checksum", choices=("ram-digest", "sha256", "none"),
                        default="ram-digest",
                        help="per block in the manifest: xbzrle's RAM digest (default, reads "
                             "only the data), SHA-256 (reads the holes too) or none")


def prepare_output(path: str) -> None:
    """Create the ``-o`` directory up front, so a bad one fails before any work."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ParameterError(f"-o {path}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create the output directory ({exc.strerror})",
                      f"-o {path}") from None


def _run_analyze(args: argparse.Namespace) -> int:
    from ..qemu.analyze import analyze_chunks, analyze_file
    from ..qemu.compressed import open_stream, read_chunks
    from ..qemu.render import render_report
    from ..qemu.savings import render_savings, xbzrle_savings

    if args.plot:
        from .plot import require_matplotlib

        require_matplotlib()  # fail before reading a large stream
    with open_stream(args.stream) as opened:
        if opened.compression is None:  # a seekable file: mapped-ram regions are jumped
            report = analyze_file(args.stream)
        else:
            report = analyze_chunks(read_chunks(opened), str(args.stream))
    data = report.to_dict()
    data["xbzrle_savings"] = xbzrle_savings(data["rounds"])
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        sys.stdout.write(render_report(report))
        sys.stdout.write(render_savings(data["xbzrle_savings"]))
    if args.plot and report.rounds:
        from .plot import plot_stream

        plot_stream(data, args.plot)
        if not args.json:
            print(f"plot: {args.plot}")
    if report.error is not None:
        raise StreamError(report.error)
    if not report.complete:
        raise StreamError("the stream is incomplete: its RAM section never ended")
    return 0


def _run_extract(args: argparse.Namespace) -> int:
    from ..qemu.compressed import open_stream, read_chunks
    from ..qemu.extract import extract_chunks, extract_file

    with open_stream(args.stream) as opened:
        prepare_output(args.output)
        with ReadDisplay(f"extract {args.stream}", opened.size) as display:
            if opened.compression is None:  # seekable: mapped-ram regions are read at offsets
                return _print_manifest(args, lambda: extract_file(
                    args.stream, args.output, max_ram=args.max_ram,
                    on_progress=display.update, checksum=args.checksum), display)
            return _print_manifest(args, lambda: extract_chunks(
                _showing(read_chunks(opened), opened, display), args.output,
                max_ram=args.max_ram, source=str(args.stream), checksum=args.checksum), display)


def _showing(chunks: Iterator[bytes], opened: OpenedStream,
             display: ReadDisplay) -> Iterator[bytes]:
    """Pass the chunks on, showing how far into the input (compressed bytes) we are."""
    done = 0
    for chunk in chunks:
        done += len(chunk)
        try:
            position = opened.raw.tell() if opened.size else done
        except OSError:
            position = done
        display.update(position)
        yield chunk


def _run_receive(args: argparse.Namespace) -> int:
    from ..qemu.receive import receive

    def announce(address: str) -> None:
        print(f"listening on {address}", file=sys.stderr, flush=True)

    def refused(reason: str) -> None:
        print(f"xbzrle receive: {reason}", file=sys.stderr, flush=True)

    prepare_output(args.output)
    with ReadDisplay(f"receive {args.uri}", None) as display:
        return _print_manifest(args, lambda: receive(
            args.uri, args.output, max_ram=args.max_ram, on_listening=announce,
            on_progress=display.update, objects=args.objects, tls_creds=args.tls_creds,
            tls_authz=args.tls_authz, handshake_timeout=args.handshake_timeout,
            on_refused=refused, checksum=args.checksum), display)


def _print_manifest(args: argparse.Namespace, run: Any,
                    display: ReadDisplay | None = None) -> int:
    from ..qemu.extract import IncompleteStreamError

    try:
        try:
            manifest = run()
        finally:
            if display is not None:
                display.close()  # the bar goes before the summary is printed
    except IncompleteStreamError as exc:
        _summary(exc.manifest, args)
        raise
    _summary(manifest, args)
    return 0


def _summary(manifest: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(manifest, indent=2))
        return
    pages = manifest["pages"]
    for block in manifest["blocks"]:
        if block.get("sha256") is not None:
            digest = block["sha256"]
        elif "present_sha256" in block:  # mapped-ram: only the present pages are hashed
            digest = f"{block['present_sha256']} ({block['pages_present']} pages present)"
        else:  # --checksum ram-digest or none
            digest = f"ram-digest {block['ram_digest']}" if "ram_digest" in block else "-"
        print(f"{block['file']:<32} {block['size']:>14}  {digest}  ({block['name']})")
    if manifest["device_state"] is not None:
        print(f"{manifest['device_state']['file']:<32} {manifest['device_state']['size']:>14}  "
              "raw device state")
    print(f"{pages['total']} pages: {pages['zero']} zero, {pages['normal']} normal, "
          f"{pages['xbzrle']} XBZRLE; manifest in {args.output}/manifest.json")
