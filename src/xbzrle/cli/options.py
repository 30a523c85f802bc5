"""Option types and the one-line error of the command line.

argparse calls these converters while it parses, so a bad value is refused
before anything starts (no banner, no guest RAM), and the message names the
option: ``--bandwidth: 'abc' is not a size (a number with an optional K, M,
G, T, P or E suffix)``.  :class:`CliParser` prints that as one line with exit
status 2, instead of argparse's usage block.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from ..errors import EXIT_USAGE, ParameterError
from ..sizes import SIZE_HINT, parse_size


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        # argparse says "argument --bandwidth: ..."; the option name alone reads better.
        message = message.removeprefix("argument ")
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def size(text: str) -> int:
    """A size in bytes as QEMU reads it: ``64M``, ``1.5G``, ``4096``."""
    try:
        return parse_size(text)
    except ParameterError as exc:
        reason = str(exc)
        if SIZE_HINT in reason:
            reason = f"{text!r} is not a size ({SIZE_HINT})"
        raise argparse.ArgumentTypeError(reason.removeprefix("size ")) from None


def milliseconds(text: str) -> int:
    """A whole number of milliseconds, 0..2000000 (QEMU's downtime-limit range)."""
    from ..migration.params import MAX_DOWNTIME_LIMIT_MS

    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number of milliseconds (e.g. 300)") from None
    if not 0 <= value <= MAX_DOWNTIME_LIMIT_MS:
        raise argparse.ArgumentTypeError(
            f"{value} ms is outside 0..{MAX_DOWNTIME_LIMIT_MS} ms")
    return value


def seconds(text: str) -> float:
    """A duration in seconds, >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} seconds: expected a finite number >= 0")
    return value


def rate(text: str) -> float:
    """Pages per second, >= 0 (0 = flat out)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of pages per second") \
            from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} pages/s: expected a finite number >= 0")
    return value


def fail(prog: str, message: str, status: int = EXIT_USAGE) -> NoReturn:
    """Refuse an option combination the same way argparse refuses a value."""
    sys.stderr.write(f"{prog}: {message} (see '{prog} --help')\n")
    sys.exit(status)


def machine(text: str) -> str:
    """A machine type this implementation knows (``xbzrle-vm``, ``none``, ``pc``)."""
    from ..guest.machines import machine_type

    try:
        machine_type(text)
    except ParameterError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text
