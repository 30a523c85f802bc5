"""What a migration stream holds: sections, RAM blocks, pages per round, devices.

``StreamAnalyzer`` is pure logic: it consumes the stream parser's events
and builds a :class:`StreamReport`.  ``analyze_file`` does the reading.

A stream carries no round marker: QEMU's PART sections are rate-limit
slices, not dirty-bitmap passes.  What a reader can see is the scan order:
within one pass pages go forward through the blocks in MEM_SIZE order, so a
page at or before the previous one starts a new round.  The END section
(sent with the guest stopped) always starts the final round.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from .._backend import load_core
from ..errors import StreamError
from ..stream import find_vmdescription
from ..stream import records as ev
from ..stream.constants import command_name
from ..stream.parser import DEFAULT_MAX_VMDESC, NEED_DATA, StreamParser
from .compressed import stdin_file
from .mappedram import MappedRamInfo, RandomAccessFile, file_chunks, read_presence, stream_size

if TYPE_CHECKING:  # type checkers see the compiled core's stub (_core.pyi)
    from .. import _core
else:
    _core = load_core()

READ_SIZE = 1 << 20
PAGE_KINDS = ("zero", "normal", "xbzrle")
_KIND_OF = {ev.ZeroPage: "zero", ev.NormalPage: "normal", ev.XbzrlePage: "xbzrle"}


@dataclass
class PageTally:
    """Count and wire bytes (whole records) of one kind of page record."""

    pages: int = 0
    bytes: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"pages": self.pages, "bytes": self.bytes}


@dataclass
class RoundStats:
    index: int
    stream_offset: int
    final: bool = False
    kinds: dict[str, PageTally] = field(
        default_factory=lambda: {kind: PageTally() for kind in PAGE_KINDS})

    @property
    def pages(self) -> int:
        return sum(t.pages for t in self.kinds.values())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"round": self.index, "final": self.final,
                               "stream_offset": self.stream_offset}
        out.update({kind: tally.to_dict() for kind, tally in self.kinds.items()})
        return out


@dataclass
class SectionInfo:
    section_id: int
    idstr: str
    instance_id: int
    version_id: int
    kind: str  # "iterable" (START/PART/END) or "full"
    stream_offset: int
    parts: int = 0
    ended: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class CommandInfo:
    """A QEMU_VM_COMMAND record, by QEMU's name (``SWITCHOVER_START`` in QEMU 10 streams)."""

    cmd: int
    length: int
    stream_offset: int

    @property
    def name(self) -> str:
        return command_name(self.cmd)

    def to_dict(self) -> dict[str, Any]:
        return {"cmd": self.cmd, "name": self.name, "length": self.length,
                "stream_offset": self.stream_offset}


MAX_ROUNDS = 10_000
"""Rounds a report keeps apart; later ones are counted into the last (``rounds_capped``).

Real migrations have tens of rounds (QEMU's own tests a few hundred); the cap
bounds the report of a hostile stream that goes back in RAM at every record.
"""


@dataclass
class StreamReport:
    """Everything ``xbzrle analyze`` prints; ``to_dict()`` is its JSON form."""

    source: str = ""
    size: int = 0
    version: int | None = None
    machine: str | None = None
    capabilities: tuple[str, ...] = ()
    uuid: str | None = None
    sections: list[SectionInfo] = field(default_factory=list)
    ram_total: int | None = None
    blocks: tuple[tuple[str, int], ...] = ()
    rounds: list[RoundStats] = field(default_factory=list)
    commands: list[CommandInfo] = field(default_factory=list)
    mapped_ram: list[MappedRamInfo] | None = None
    digest: dict[str, tuple[int, str]] | None = None
    eof: bool = False
    device_state_offset: int | None = None
    device_state_bytes: int = 0
    devices: list[dict[str, Any]] | None = None
    end_offset: int = 0
    error: str | None = None
    rounds_capped: bool = False
    """``MAX_ROUNDS`` reached: later rounds are counted into the last one."""

    @property
    def complete(self) -> bool:
        """The RAM section ended and nothing broke (device state cannot be checked)."""
        ram = [s for s in self.sections if s.idstr == "ram" and s.kind == "iterable"]
        return self.error is None and bool(ram) and all(s.ended for s in ram)

    def totals(self) -> dict[str, PageTally]:
        out = {kind: PageTally() for kind in PAGE_KINDS}
        for rnd in self.rounds:
            for kind, tally in rnd.kinds.items():
                out[kind].pages += tally.pages
                out[kind].bytes += tally.bytes
        return out

    def mapped_ram_pages_present(self) -> int | None:
        """Pages present over all mapped-ram blocks; None if a bitmap was not read."""
        if self.mapped_ram is None or any(i.pages_present is None for i in self.mapped_ram):
            return None
        return sum(i.pages_present or 0 for i in self.mapped_ram)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "size": self.size,
            "complete": self.complete,
            "error": self.error,
            "end_offset": self.end_offset,
            "version": self.version,
            "configuration": None if self.machine is None else {
                "machine": self.machine, "capabilities": list(self.capabilities),
                "uuid": self.uuid},
            "sections": [s.to_dict() for s in self.sections],
            "ram": None if self.ram_total is None else {
                "total": self.ram_total,
                "blocks": [{"name": n, "size": s} for n, s in self.blocks]},
            "rounds": [r.to_dict() for r in self.rounds],
            "rounds_capped": self.rounds_capped,
            "totals": {kind: t.to_dict() for kind, t in self.totals().items()},
            "commands": [cmd.to_dict() for cmd in self.commands],
            "mapped_ram": None if self.mapped_ram is None else {
                "blocks": [info.to_dict() for info in self.mapped_ram],
                "pages_present": self.mapped_ram_pages_present()},
            "digest": None if self.digest is None else {
                name: {"size": size, "digest": hexd} for name, (size, hexd) in
                self.digest.items()},
            "eof": self.eof,
            "device_state": None if self.device_state_offset is None else {
                "stream_offset": self.device_state_offset, "bytes": self.device_state_bytes},
            "devices": self.devices,
        }


class TailKeeper:
    """Keeps the last ``limit`` bytes of device state, to find the trailing JSON."""

    def __init__(self, limit: int = DEFAULT_MAX_VMDESC + 6) -> None:
        self.limit = limit
        self._buf = bytearray()

    def add(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) > 2 * self.limit:
            del self._buf[: len(self._buf) - self.limit]

    def devices(self) -> list[dict[str, Any]] | None:
        found = find_vmdescription(self._buf[-self.limit:])
        return None if found is None else device_list(found[1])


def device_list(description: dict[str, Any]) -> list[dict[str, Any]]:
    """The devices of QEMU's VMDESCRIPTION JSON: name, instance and version of each."""
    devices = description.get("devices")
    if not isinstance(devices, list):
        return []
    out = []
    for dev in devices:
        if isinstance(dev, dict):
            out.append({"name": dev.get("name"), "instance_id": dev.get("instance_id"),
                        "version": dev.get("version")})
    return out


class StreamAnalyzer:
    """Consumes parser events into a :class:`StreamReport` (no I/O)."""

    def __init__(self, report: StreamReport | None = None) -> None:
        self.report = report or StreamReport()
        self._sections: dict[int, SectionInfo] = {}
        self._block_order: dict[str, int] = {}
        self._scan_table: list[tuple[bytes, int]] = []
        self._last_position: tuple[int, int] | None = None
        self._open_record: tuple[PageTally, int] | None = None
        self._tail = TailKeeper()

    def consume(self, event: ev.Event) -> None:
        self._close_record(event.stream_offset)
        if isinstance(event, (ev.ZeroPage, ev.NormalPage, ev.XbzrlePage)):
            self._page(event, _KIND_OF[type(event)])
            return
        r = self.report
        if isinstance(event, ev.Header):
            r.version = event.version
        elif isinstance(event, ev.Configuration):
            r.machine, r.capabilities = event.machine, event.capabilities
            r.uuid = event.uuid.hex() if event.uuid is not None else None
        elif isinstance(event, ev.SectionStart | ev.SectionFull):
            self._section(event)
        elif isinstance(event, ev.SectionPart):
            self._sections[event.section_id].parts += 1
        elif isinstance(event, ev.EmptyParts):
            self._sections[event.section_id].parts += event.count
        elif isinstance(event, ev.SectionEnd):
            self._sections[event.section_id].ended = True
            if r.mapped_ram is None:  # mapped-ram sends no page records, hence no rounds
                self._new_round(event.stream_offset, final=True)
        elif isinstance(event, ev.RamBlocks):
            r.ram_total, r.blocks = event.total, event.blocks
            self._block_order = {name: i for i, (name, _) in enumerate(event.blocks)}
            self._scan_table = [(name.encode(), size) for name, size in event.blocks]
        elif isinstance(event, ev.DeviceState):
            r.device_state_bytes += len(event.data)
            self._tail.add(event.data)
        elif isinstance(event, ev.Digest):
            r.digest = {name: (size, d.hex()) for name, (size, d) in event.blocks.items()}
        elif isinstance(event, ev.Command):
            r.commands.append(CommandInfo(event.cmd, len(event.data), event.stream_offset))
        elif isinstance(event, ev.MappedRamBlock):
            if r.mapped_ram is None:
                r.mapped_ram = []
            r.mapped_ram.append(MappedRamInfo(event))
        elif isinstance(event, ev.Eof):
            r.eof = True
        elif isinstance(event, ev.VmDescription) and isinstance(event.json, dict):
            r.devices = device_list(event.json)

    def finish(self, end_offset: int, error: str | None = None) -> StreamReport:
        """Close the last record at ``end_offset`` and look for the device list."""
        self._close_record(end_offset)
        r = self.report
        r.end_offset = end_offset
        r.error = error
        if r.devices is None and r.device_state_offset is not None:
            r.devices = self._tail.devices()
        return r

    def _section(self, event: ev.SectionStart | ev.SectionFull) -> None:
        kind = "iterable" if isinstance(event, ev.SectionStart) else "full"
        info = SectionInfo(event.section_id, event.idstr, event.instance_id, event.version_id,
                           kind, event.stream_offset, ended=kind == "full")
        self._sections[event.section_id] = info
        self.report.sections.append(info)
        if kind == "full" and event.idstr != "xbzrle-digest":
            self.report.device_state_offset = event.stream_offset
            # The parser passes everything after this section header through raw.
            self.report.device_state_bytes = _full_header_size(event)

    def _may_open_round(self, current: RoundStats) -> bool:
        """Whether a page going back in RAM starts a new round.

        Not inside the final stage, and not past ``MAX_ROUNDS``: a hostile
        stream that repeats one page would otherwise make a round of every
        record, and the report (and the time to build it) grow with the input.
        """
        return not current.final and not self.report.rounds_capped

    def _new_round(self, offset: int, final: bool = False) -> RoundStats:
        rnd = RoundStats(len(self.report.rounds) + 1, offset, final)
        self.report.rounds.append(rnd)
        self.report.rounds_capped = len(self.report.rounds) >= MAX_ROUNDS
        self._last_position = None
        return rnd

    def _page(self, event: ev.ZeroPage | ev.NormalPage | ev.XbzrlePage, kind: str) -> None:
        position = (self._block_order.get(event.block, -1), event.offset)
        rounds = self.report.rounds
        if not rounds or (self._last_position is not None and position <= self._last_position
                          and self._may_open_round(rounds[-1])):
            rnd = self._new_round(event.stream_offset)
        else:
            rnd = rounds[-1]
        self._last_position = position
        tally = rnd.kinds[kind]
        tally.pages += 1
        self._open_record = (tally, event.stream_offset)

    def page_sink(self, buf: bytearray | memoryview, pos: int, base: int,
                  last: str | None) -> tuple[int, str | None, tuple[int, ...]]:
        """The parser's ``page_sink``: the compiled scan counts a run of page records.

        One Python event per 9-byte ZERO record would hold ``analyze`` to a
        few MB/s.  The scan adds whole runs to the current round's tallies
        and stops where :meth:`_page` has work to do (the first page of a
        round, a position not after the previous one) or where the parser
        must report an error: those records go through the parser's events,
        so the report is the one the record-by-record path gives.
        """
        rounds = self.report.rounds
        if not rounds or not self._scan_table:
            return pos, last, ()
        rnd = rounds[-1]
        last_index = self._block_order.get(last, -1) if last is not None else -1
        prev_block, prev_offset = (self._last_position if self._last_position is not None
                                   else (-2, 0))
        new_pos, last_index, prev_block, prev_offset, pages, wire = _core.scan_pages(
            buf, pos, self._scan_table, last_index, self._may_open_round(rnd), prev_block,
            prev_offset)
        if new_pos == pos:
            return pos, last, ()
        for kind, count, nbytes in zip(PAGE_KINDS, pages, wire, strict=True):
            tally = rnd.kinds[kind]
            tally.pages += count
            tally.bytes += nbytes
        self._last_position = (prev_block, prev_offset)
        return new_pos, self._scan_table[last_index][0].decode(), (sum(pages), *pages)

    def _close_record(self, next_offset: int) -> None:
        # A page record's wire size: up to where the next record begins.
        if self._open_record is not None and next_offset >= 0:
            tally, start = self._open_record
            tally.bytes += next_offset - start
            self._open_record = None


def _full_header_size(event: ev.SectionStart | ev.SectionFull) -> int:
    return 1 + 4 + 1 + len(event.idstr.encode()) + 4 + 4


def analyze_chunks(chunks: Iterable[bytes | memoryview], source: str = "",
                   parser: StreamParser | None = None, *, fast: bool = True) -> StreamReport:
    """Analyse a stream given as byte chunks; a broken stream yields ``report.error``.

    ``parser`` is the one ``chunks`` reads for (:func:`~.mappedram.file_chunks`
    jumps over mapped-ram regions); mapped-ram page counts need the file itself
    (:func:`analyze_file`).  ``fast=False`` counts every page record through a
    parser event (the reference the compiled scan is tested against).
    """
    parser = parser or StreamParser()
    analyzer = StreamAnalyzer(StreamReport(source=source))
    size = 0
    error: str | None = None

    def consume(event: ev.Event) -> None:
        analyzer.consume(event)
        # mapped-ram streams carry no page records: the parser reports any as an error.
        if fast and isinstance(event, ev.RamBlocks) and not parser.mapped_ram:
            parser.page_sink = analyzer.page_sink

    try:
        for chunk in chunks:
            size += len(chunk)
            parser.feed(chunk)
            while (event := parser.next_event()) is not NEED_DATA:
                consume(event)
        try:
            parser.close()
        finally:
            while (event := parser.next_event()) is not NEED_DATA:
                consume(event)
    except StreamError as exc:
        error = str(exc)
    analyzer.report.size = size
    return analyzer.finish(parser.offset, error)


def read_chunks(stream: BinaryIO, size: int = READ_SIZE) -> Iterable[bytes]:
    while chunk := stream.read(size):
        yield chunk


def analyze_file(path: str | os.PathLike[str]) -> StreamReport:
    """Analyse the stream in ``path`` ("-" reads standard input).

    A mapped-ram file is read with jumps over its page regions, and its
    bitmaps give the pages present; from a pipe they are skipped unread.
    """
    if str(path) == "-":
        return _analyze_open_file(stdin_file(), "-")
    with open(path, "rb") as f:
        return _analyze_open_file(f, str(path))


def _analyze_open_file(f: io.BufferedIOBase, source: str) -> StreamReport:
    parser = StreamParser()
    report = analyze_chunks(file_chunks(f, parser, READ_SIZE), source, parser)
    size = stream_size(f)
    if size is not None:
        report.size = size
        if report.mapped_ram:
            try:
                read_presence(report.mapped_ram, RandomAccessFile(f, source))
            except StreamError as exc:
                report.error = report.error or str(exc)
    return report
