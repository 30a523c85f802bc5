"""The human monitor (HMP): QEMU's console commands over one VM.

A :class:`HmpSession` turns one typed line into text written through
``out``; the server owns the terminal or socket and prints the prompt.
Commands are looked up in one table that also feeds ``help``, so the
listing can never drift from what the console accepts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

from ..errors import CommandError, ParameterError, XbzrleError
from ..migration.params import CONVERGE_PARAMETERS
from ..migration.stats import PassProgress
from ..migration.status import MigrationStatus
from ..sizes import format_size, parse_size
from .info import format_info_migrate

if TYPE_CHECKING:
    from .control import VmControl

log = logging.getLogger(__name__)

PROMPT = "(xbzrle) "
MAX_LINE = 4096
"""Bytes of one command line, as QEMU's console buffer (READLINE_CMD_BUF_SIZE)."""
PROGRESS_INTERVAL = 1.0  # seconds between the lines of a foreground ``migrate``
LIVE_INTERVAL = 0.2  # seconds between two redraws of a progress bar

Output = Callable[[str], None]


@dataclass(frozen=True)
class HmpCommand:
    name: str
    params: str  # as shown by help, e.g. "[-d] uri"
    help: str
    handler: Callable[[list[str]], None]
    nargs: tuple[int, int]  # min, max positional arguments


def parse_bool(text: str) -> bool:
    if text == "on":
        return True
    if text == "off":
        return False
    raise CommandError(f"Expected 'on' or 'off', got '{text}'")


def parse_number(text: str) -> int:
    """Addresses and sizes as typed: ``4096``, ``0x1000``, ``16M``."""
    try:
        return int(text, 0)
    except ValueError:
        return parse_size(text)


def format_migrate_parameters(params: dict[str, int | bool | str]) -> str:
    """``info migrate_parameters`` lines, in QEMU's units."""
    lines = [
        f"downtime-limit: {params['downtime-limit']} ms",
        f"max-bandwidth: {params['max-bandwidth']} bytes/second",
        f"xbzrle-cache-size: {params['xbzrle-cache-size']} bytes",
    ]
    for name in CONVERGE_HMP_NAMES:  # QEMU prints percentages bare and bools on/off
        value = params[name]
        lines.append(f"{name}: {('on' if value else 'off') if isinstance(value, bool) else value}")
    lines += [f"tls-creds: '{params['tls-creds']}'", f"tls-hostname: '{params['tls-hostname']}'",
              f"tls-authz: '{params['tls-authz']}'",
              f"x-handshake-timeout: {params['x-handshake-timeout']} ms",
              f"x-stall-timeout: {params['x-stall-timeout']} ms"]
    return "\n".join(lines)


#: auto-converge parameters as HMP spells them (migrate_set_parameter, info).
CONVERGE_HMP_NAMES = tuple(name.replace("_", "-") for name in CONVERGE_PARAMETERS)


def parse_converge_parameter(name: str, text: str) -> int | bool:
    """A typed auto-converge value: ``on``/``off`` for switches, a decimal otherwise."""
    if CONVERGE_PARAMETERS[name.replace("-", "_")][0] is bool:
        return parse_bool(text)
    try:
        return int(text, 10)
    except ValueError:
        raise ParameterError(f"Parameter '{name}' expects an integer, got '{text}'") from None


# A word: unquoted characters and quoted parts, side by side ("a"'b'c is one word).
# Each alternative starts with a different character, so matching is linear.
_WORD = re.compile(r"""(?:[^\s"'\\]|\\.|"(?:[^"\\]|\\.)*"|'[^']*')+""", re.DOTALL)
_PIECE = re.compile(r"""\\(.)|"((?:[^"\\]|\\.)*)"|'([^']*)'|([^"'\\]+)""", re.DOTALL)
_DANGLING_ESCAPE = re.compile(r'(?:[^"\\]|\\.)*\\', re.DOTALL)  # "... ends in a lone backslash
_ESCAPE = re.compile(r'\\([\\"])')  # inside "...", as in a POSIX shell


def split_words(line: str) -> list[str]:
    """Split a command line into words as a shell would, in linear time.

    Whitespace separates words; ``"..."`` (with backslash escapes) and
    ``'...'`` quote; a backslash outside quotes escapes one character.
    ValueError for an unclosed quote or a trailing backslash.
    """
    words = []
    end = 0
    for match in _WORD.finditer(line):
        if line[end:match.start()].strip():
            break  # a quote that never closes: the pattern stepped over it
        word = match.group()
        if '"' in word or "'" in word or "\\" in word:
            word = "".join(_unquote(piece) for piece in _PIECE.finditer(word))
        words.append(word)
        end = match.end()
    rest = line[end:].lstrip()
    if rest:
        if rest[0] == "'" or (rest[0] == '"' and not _DANGLING_ESCAPE.fullmatch(rest, 1)):
            raise ValueError("No closing quotation")
        raise ValueError("No escaped character")
    return words


def _unquote(piece: re.Match[str]) -> str:
    escaped, double, single, plain = piece.groups()
    if escaped is not None:
        return escaped
    if double is not None:
        return _ESCAPE.sub(r"\1", double)
    return single if single is not None else plain


class TooLong:
    """A line longer than MAX_LINE, dropped up to its end."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


class LineReader:
    """Cuts console input into lines of at most MAX_LINE bytes (bytes.find: no per-byte work).

    A longer line is dropped as it arrives, up to its newline, and reported
    once as :class:`TooLong`: one client can make the monitor neither buffer
    without bound nor spend more than linear time.
    """

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._dropping = 0  # bytes of an over-long line dropped so far

    def feed(self, data: bytes) -> list[str | TooLong]:
        out: list[str | TooLong] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                rest = data[start:]
                if self._dropping:
                    self._dropping += len(rest)
                elif len(self._buf) + len(rest) > self.limit:
                    self._dropping = len(self._buf) + len(rest)
                    self._buf.clear()
                else:
                    self._buf += rest
                return out
            piece = data[start:nl]
            if self._dropping or len(self._buf) + len(piece) > self.limit:
                out.append(TooLong(self._dropping + len(self._buf) + len(piece)))
                self._dropping = 0
            else:
                self._buf += piece
                out.append(self._buf.decode("utf-8", errors="replace").rstrip("\r"))
            self._buf.clear()
            start = nl + 1


#: The seed's commands, kept working; QEMU 6.0 removed them for the parameters.
LEGACY_COMMANDS = frozenset({"migrate_set_cache_size", "migrate_set_speed",
                             "migrate_set_downtime"})
LEGACY_INFO = frozenset({"migrate_cache_size"})
LEGACY_NOTE = "(legacy, QEMU < 6.0)"


class ProgressDisplay(Protocol):
    """What a console draws a foreground ``migrate`` with (a rich bar, on a terminal)."""

    live: bool

    def update(self, progress: PassProgress, status: str) -> None: ...
    def close(self) -> None: ...


def format_progress(status: str, progress: PassProgress | None) -> str:
    """One plain progress line of a foreground ``migrate``."""
    if progress is None:
        return f"migration {status}"
    return f"migration {status}: {progress.describe()}"


class HmpSession:
    """One console: ``execute(line)`` runs a command, writing through ``out``."""

    def __init__(self, control: VmControl, out: Output,
                 display: Callable[[], ProgressDisplay] | None = None) -> None:
        self.control = control
        self.out = out
        self.display = display  # draws a foreground migrate; plain lines without it
        self.legacy = LEGACY_COMMANDS
        self.legacy_info = LEGACY_INFO
        self.commands: dict[str, HmpCommand] = {}
        self.aliases: dict[str, str] = {"?": "help", "migrate_set_cachesize":
                                        "migrate_set_cache_size", "q": "quit", "c": "cont",
                                        "s": "stop"}
        self.info: dict[str, tuple[str, Callable[[], None]]] = {
            "status": ("show the current VM status (running|paused)", self._info_status),
            "migrate": ("show migration status", self._info_migrate),
            "migrate_capabilities": ("show current migration capabilities",
                                     self._info_capabilities),
            "migrate_parameters": ("show current migration parameters",
                                   self._info_parameters),
            "migrate_cache_size": ("show current migration xbzrle cache size",
                                   self._info_cache_size),
            "version": ("show the version of QEMU this monitor speaks like", self._info_version),
        }
        self.info_aliases = {"migrate-cache-size": "migrate_cache_size"}
        for name, params, text, handler, nargs in [
            ("help", "[cmd]", "show the help", self._help, (0, 1)),
            ("info", "[subcommand]", "show various information about the system state",
             self._info, (0, 1)),
            ("stop", "", "stop emulation", lambda a: self.control.stop(), (0, 0)),
            ("cont", "", "resume emulation", lambda a: self.control.cont(), (0, 0)),
            ("quit", "", "quit the emulator", lambda a: self.control.request_quit(), (0, 0)),
            ("migrate", "[-d] uri",
             "migrate to URI (using -d to not wait for completion)", self._migrate, (1, 2)),
            ("migrate_incoming", "uri",
             "continue an incoming migration from an -incoming defer", self._incoming, (1, 1)),
            ("migrate_cancel", "", "cancel the current VM migration",
             lambda a: self.control.cancel(), (0, 0)),
            ("migrate_set_capability", "capability state",
             "enable/disable the usage of a capability for migration",
             self._set_capability, (2, 2)),
            ("migrate_set_parameter", "parameter value",
             "set a parameter for migration (xbzrle-cache-size, max-bandwidth, "
             "downtime-limit, throttle-trigger-threshold, cpu-throttle-initial, "
             "cpu-throttle-increment, cpu-throttle-tailslow, max-cpu-throttle, "
             "x-throttle-raw-bytes, x-overflow-backoff)", self._set_parameter, (2, 2)),
            ("migrate_set_cache_size", "value",
             "set cache size (in bytes, k/m/g/t suffixes) for XBZRLE migrations, rounded "
             "down to a power of 2 (alias: migrate_set_cachesize)", self._set_cache_size,
             (1, 1)),
            ("migrate_set_speed", "value",
             "set maximum speed (in bytes/s) for migrations; MB/s if no size suffix",
             self._set_speed, (1, 1)),
            ("migrate_set_downtime", "value",
             "set maximum tolerated downtime (in seconds) for migrations",
             self._set_downtime, (1, 1)),
            ("pmemsave", "addr size file",
             "save to disk physical memory dump starting at 'addr' of size 'size'",
             self._pmemsave, (3, 3)),
        ]:
            self.commands[name] = HmpCommand(name, params, text, handler, nargs)

    def write(self, text: str) -> None:
        if text:
            self.out(text if text.endswith("\n") else text + "\n")

    # -- one line -------------------------------------------------------------------
    def execute(self, line: str) -> None:
        if len(line) > MAX_LINE:
            self.write(f"Error: command line of {len(line)} characters: at most {MAX_LINE}")
            return
        try:
            words = split_words(line)
        except ValueError as exc:
            self.write(f"Error: {exc}")
            return
        if not words:
            return
        name = self.aliases.get(words[0], words[0])
        command = self.commands.get(name)
        if command is None:
            self.write(f"unknown command: '{words[0]}'")
            return
        args = words[1:]
        lo, hi = command.nargs
        if not lo <= len(args) <= hi:
            usage = f"{command.name} {command.params}".rstrip()
            self.write(f"Error: wrong number of arguments, usage: {usage}")
            return
        try:
            command.handler(args)
        except (XbzrleError, OSError) as exc:
            self.write(f"Error: {exc}")
        except Exception as exc:  # a bug: keep the console alive, tell the user
            log.exception("HMP command %r failed", line)
            self.write(f"Error: internal error: {exc!r}")

    # -- help and info --------------------------------------------------------------
    def _help(self, args: list[str]) -> None:
        if args and args[0] == "info":
            self._info([])
            return
        names = sorted(self.commands)
        if args:
            name = self.aliases.get(args[0], args[0])
            if name not in self.commands:
                self.write(f"unknown command: '{args[0]}'")
                return
            names = [name]
        modern = [n for n in names if n not in self.legacy]
        for name in modern + [n for n in names if n in self.legacy]:  # the old ones last
            c = self.commands[name]
            note = f" {LEGACY_NOTE}" if name in self.legacy else ""
            self.write(f"{c.name} {c.params} -- {c.help}{note}".replace("  ", " "))

    def _info(self, args: list[str]) -> None:
        if not args:
            for name in sorted(self.info):
                note = f" {LEGACY_NOTE}" if name in self.legacy_info else ""
                self.write(f"info {name} -- {self.info[name][0]}{note}")
            return
        name = self.info_aliases.get(args[0], args[0])
        entry = self.info.get(name)
        if entry is None:
            self.write(f"unknown info subcommand: '{args[0]}' (try 'info')")
            return
        entry[1]()

    def _info_status(self) -> None:
        state = self.control.runstate
        if self.control.running:
            self.write("VM status: running")
        elif state == "paused":
            self.write("VM status: paused")
        else:
            self.write(f"VM status: paused ({state})")

    def _info_migrate(self) -> None:
        mig = self.control.migration
        self.write(format_info_migrate(self.control.query_migrate(),
                                       incoming=mig is not None and mig.incoming))

    def _info_capabilities(self) -> None:
        for cap in self.control.query_capabilities():
            self.write(f"{cap['capability']}: {'on' if cap['state'] else 'off'}")

    def _info_parameters(self) -> None:
        self.write(format_migrate_parameters(self.control.query_parameters()))

    def _info_cache_size(self) -> None:
        self.write(f"xbzrle cache size: {self.control.cache_size() >> 10} kbytes")

    def _info_version(self) -> None:
        info = self.control.query_version()
        v = cast(Mapping[str, int], info["qemu"])  # query_version: a copy of QEMU_VERSION
        self.write(f"{v['major']}.{v['minor']}.{v['micro']} ({info['package']})")

    # -- settings -------------------------------------------------------------------
    def _set_capability(self, args: list[str]) -> None:
        self.control.set_capabilities([(args[0], parse_bool(args[1]))])

    def _set_parameter(self, args: list[str]) -> None:
        name, text = args[0].replace("_", "-"), args[1]
        value: int | str
        if name == "xbzrle-cache-size":
            value = parse_size(text)
        elif name == "max-bandwidth":
            value = parse_size(text, default_unit="m")
        elif name in ("downtime-limit", "x-handshake-timeout", "x-stall-timeout"):
            try:
                value = int(text, 10)
            except ValueError:
                raise ParameterError(
                    f"Parameter '{name}' expects an integer (ms), got '{text}'"
                ) from None
        elif name in CONVERGE_HMP_NAMES:
            value = parse_converge_parameter(name, text)
        elif name in ("tls-creds", "tls-hostname", "tls-authz"):
            value = text
        else:
            raise ParameterError(
                f"Parameter '{args[0]}' is unexpected (known: xbzrle-cache-size, "
                f"max-bandwidth, downtime-limit, {', '.join(CONVERGE_HMP_NAMES)}, tls-creds, "
                "tls-hostname, tls-authz, x-handshake-timeout, x-stall-timeout)")
        self.control.set_parameters(**{name: value})

    def _set_cache_size(self, args: list[str]) -> None:
        wanted = parse_size(args[0])
        size = self.control.set_cache_size(wanted)
        if size != wanted:  # the seed's rule; say so rather than round in silence
            self.write(f"cache size set to {format_size(size)} "
                       "(rounded down to a power of two)")

    def _set_speed(self, args: list[str]) -> None:
        self.control.set_speed(parse_size(args[0], default_unit="m"))

    def _set_downtime(self, args: list[str]) -> None:
        try:
            seconds = float(args[0])
        except ValueError:
            raise ParameterError(f"invalid downtime '{args[0]}': expected seconds") from None
        self.control.set_downtime(seconds)

    # -- migration --------------------------------------------------------------------
    def _migrate(self, args: list[str]) -> None:
        detach = False
        if args[0].startswith("-"):
            if args[0] != "-d" or len(args) != 2:
                raise CommandError("usage: migrate [-d] uri")
            detach, args = True, args[1:]
        elif len(args) != 1:
            raise CommandError("usage: migrate [-d] uri")
        self.control.migrate(args[0])
        if detach:
            return
        display = self.display() if self.display is not None else None
        interval = LIVE_INTERVAL if display is not None and display.live else PROGRESS_INTERVAL
        try:
            while (status := self.control.wait_migration(interval)).is_running:
                progress = self.control.migration_progress()
                if display is not None and progress is not None:
                    display.update(progress, str(status))
                else:
                    self.write(format_progress(str(status), progress))
        finally:
            if display is not None:
                display.close()
        info = self.control.query_migrate()
        final = info.get("status")
        if final == str(MigrationStatus.COMPLETED):
            self.write(f"migration completed: total time {info.get('total-time', 0)} ms, "
                       f"downtime {info.get('downtime', 0)} ms")
        elif final == str(MigrationStatus.FAILED):
            self.write(f"Error: migration failed: {info.get('error-desc', 'unknown error')}")
        else:
            self.write(f"migration {final}")

    def _incoming(self, args: list[str]) -> None:
        self.control.migrate_incoming(args[0])

    def _pmemsave(self, args: list[str]) -> None:
        self.control.pmemsave(parse_number(args[0]), parse_number(args[1]), args[2])


def run_captured(control: VmControl, line: str) -> str:
    """Run one line and return what it printed (QMP's ``human-monitor-command``)."""
    chunks: list[str] = []
    HmpSession(control, chunks.append).execute(line)
    return "".join(chunks)
