"""A sans-IO parser of QEMU migration streams: feed bytes, pull typed events.

No sockets, no files, no threads: the caller moves bytes, the parser keeps
the protocol state (which section is open, the RAM block table, the block of
the previous page record, whether EOF was seen) and rejects anything out of
order with a :class:`~xbzrle.errors.StreamError` that names the byte offset.

Every record is parsed atomically: if the buffer ends inside one, nothing is
consumed and ``next_event()`` returns ``NEED_DATA``.  Each record we wait for
whole is bounded (a page, a 4 KiB delta, a capped JSON description), so a
hostile length field never makes the parser allocate or buffer more than
those bounds; device state of unknown layout is streamed out in chunks.
"""

from __future__ import annotations

import enum
import json
import re
import struct
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from ..errors import StreamError, XbzrleError
from . import constants as c
from .records import (
    Command,
    Configuration,
    DeviceState,
    Digest,
    EmptyParts,
    EndOfSection,
    Eof,
    Event,
    Header,
    MappedRamBlock,
    NormalPage,
    PagesLoaded,
    RamBlocks,
    SectionEnd,
    SectionFooter,
    SectionFull,
    SectionPart,
    SectionStart,
    VmDescription,
    XbzrlePage,
    ZeroPage,
)

__all__ = [
    "HEADER_SIZE",
    "NEED_DATA",
    "StreamParser",
    "find_vmdescription",
    "header_problem",
    "parse_bytes",
]


PageSink = Callable[[bytearray | memoryview, int, int, str | None],
                    tuple[int, str | None, tuple[int, ...]]]
"""``sink(buf, pos, base, last_block) -> (new_pos, last_block, counts)``: a fast path
that applies whole page records from ``buf[pos:]`` itself (the destination's
compiled load loop).  It stops before anything that is not a complete page
record and raises StreamError on a malformed one; the parser then carries on
with the records it left."""


class _Sentinel(enum.Enum):
    """A one-member enum, so that ``event is not NEED_DATA`` narrows the type (PEP 484)."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return self.name

    __str__ = __repr__  # printed as before it was an enum: NEED_DATA


NEED_DATA: Final = _Sentinel.NEED_DATA
"""Returned by ``next_event()`` when the buffered input holds no whole record."""

MAX_MACHINE_NAME = 1024
MAX_CAPABILITIES = 256
DEFAULT_MAX_VMDESC = 16 * 1024 * 1024
DEFAULT_MAX_BLOCKS = 4096
"""RAM blocks a MEM_SIZE record may list: QEMU machines have a few dozen."""
MAX_VMDESC_NESTING = 128
"""JSON nesting a VMDESCRIPTION may use (QEMU's own are about a dozen levels deep)."""
DEFAULT_DEVICE_CHUNK = 64 * 1024
_COMPACT_AT = 64 * 1024
# The longest page record: be64 word, a 255-byte block name with its length,
# and a whole page (an XBZRLE record's 3 bytes + delta are no longer).
_MAX_PAGE_RECORD = 8 + 1 + 255 + 3 + c.MAX_XBZRLE_LEN
# What feed_some takes after the page sink stopped at another record: a
# round's end (EOS, footer) and the next section header fit many times.
_ROUND_PIECE = 512

_SECTION_TYPE_NAMES = {
    c.VM_EOF: "EOF",
    c.VM_SECTION_START: "SECTION_START",
    c.VM_SECTION_PART: "SECTION_PART",
    c.VM_SECTION_END: "SECTION_END",
    c.VM_SECTION_FULL: "SECTION_FULL",
    c.VM_CONFIGURATION: "CONFIGURATION",
    c.VM_COMMAND: "COMMAND",
}
_EXPECTED_SECTION_TYPES = ", ".join(
    f"{name} (0x{code:02x})" for code, name in sorted(_SECTION_TYPE_NAMES.items())
)
_PAGE_KINDS = (c.RAM_SAVE_FLAG_ZERO, c.RAM_SAVE_FLAG_PAGE, c.RAM_SAVE_FLAG_XBZRLE)
_EXPECTED_FLAGS = "one of ZERO (0x02), MEM_SIZE (0x04), PAGE (0x08), EOS (0x10), XBZRLE (0x40)"


class _State(enum.Enum):
    HEADER = "the file header"
    TOP = "a section type byte"
    CONFIG = "a configuration subsection or the next section type"
    RAM = "a RAM record word"
    MEM_BLOCKS = "the RAM block list of the MEM_SIZE record"
    SKIP = "a mapped-ram block's bitmap and pages region"
    FOOTER = "a section footer or the next section type"
    DIGEST_COUNT = "the block count of the xbzrle-digest section"
    DIGEST_ENTRY = "an entry of the xbzrle-digest section"
    RAW = "raw device state"
    AFTER_EOF = "a VMDESCRIPTION or the end of the stream"
    DONE = "the end of the stream"


_TERMINAL = (_State.RAW, _State.AFTER_EOF, _State.DONE)


class _Incomplete(Exception):
    """The buffer ends inside the record being read; ``what`` names the missing part."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


_BE16 = struct.Struct(">H")
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")
_MAPPED_RAM_HEADER = struct.Struct(">IQQQ")
_MAX_FILE_OFFSET = (1 << 63) - 1


class _Cursor:
    """Tentative reads from the buffer; the parser commits ``pos`` only on success."""

    __slots__ = ("buf", "pos", "base")

    def __init__(self, buf: bytearray, pos: int, base: int) -> None:
        self.buf = buf
        self.pos = pos
        self.base = base

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def _need(self, n: int, what: str) -> None:
        if len(self.buf) - self.pos < n:
            raise _Incomplete(what)

    def peek(self, what: str) -> int:
        self._need(1, what)
        return self.buf[self.pos]

    def u8(self, what: str) -> int:
        self._need(1, what)
        value = self.buf[self.pos]
        self.pos += 1
        return value

    def be16(self, what: str) -> int:
        self._need(2, what)
        value: int = _BE16.unpack_from(self.buf, self.pos)[0]
        self.pos += 2
        return value

    def be32(self, what: str) -> int:
        self._need(4, what)
        value: int = _BE32.unpack_from(self.buf, self.pos)[0]
        self.pos += 4
        return value

    def be64(self, what: str) -> int:
        self._need(8, what)
        value: int = _BE64.unpack_from(self.buf, self.pos)[0]
        self.pos += 8
        return value

    def take(self, n: int, what: str) -> bytes:
        self._need(n, what)
        data = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return data

    def name(self, what: str) -> str:
        """A byte length followed by that many bytes of UTF-8 text (QEMU's idstr form)."""
        at = self.offset
        length = self.u8(f"the length byte of {what}")
        raw = self.take(length, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _fail(at, f"{what} {raw!r} is not valid UTF-8") from None


def _fail(offset: int, message: str) -> StreamError:
    return StreamError(f"stream offset {offset}: {message}", offset)


class StreamParser:
    """Incremental parser of one migration stream (``feed`` / ``next_event`` / ``close``).

    Unknown FULL sections (real QEMU's device state: "timer", "cpu", ...) have
    no length field, so from the first one on every remaining byte is passed
    through as :class:`DeviceState` chunks of at most ``device_chunk`` bytes.
    """

    def __init__(
        self,
        max_vmdesc: int = DEFAULT_MAX_VMDESC,
        *,
        max_blocks: int = DEFAULT_MAX_BLOCKS,
        device_chunk: int = DEFAULT_DEVICE_CHUNK,
    ) -> None:
        if max_vmdesc < 0 or max_blocks < 1 or device_chunk < 1:
            raise ValueError("max_vmdesc >= 0, max_blocks >= 1 and device_chunk >= 1 required")
        self._max_vmdesc = max_vmdesc
        self._max_blocks = max_blocks
        self._device_chunk = device_chunk
        self.page_sink: PageSink | None = None
        self._buf = bytearray()
        self._pos = 0
        self._base = 0
        self._state = _State.HEADER
        self._closed = False
        self._error: StreamError | None = None
        self._pending: deque[Event] = deque()
        # Top level.
        self._config_allowed = False
        self._open: dict[int, str] = {}
        self._section: int | None = None
        self._footers: bool | None = None
        self._eof_seen = False
        # Configuration being collected until its subsections end.
        self._config_offset = 0
        self._machine = ""
        self._capabilities: tuple[str, ...] = ()
        self._uuid: bytes | None = None
        # RAM.
        self._ram_section_id: int | None = None
        self._mem_size_allowed = False
        self._blocks: dict[str, int] = {}
        self._last_block: str | None = None
        self._mem_offset = 0
        self._mem_total = 0
        self._mem_remaining = 0
        self._mem_list: list[tuple[str, int]] = []
        self._mem_names: set[str] = set()
        self._empty_run: re.Pattern[bytes] | None = None
        self._empty_unit = 0
        # mapped-ram: the regions between block headers are skipped (or jumped over).
        self._mapped_ram = False
        self._skip_to = 0
        self._skip_block = ""
        self._skip_record = 0
        self._after_skip = _State.RAM
        # Digest.
        self._digest_seen = False
        self._digest_offset = 0
        self._digest_remaining = 0
        self._digest: dict[str, tuple[int, bytes]] = {}

    # -- public API -------------------------------------------------------

    @property
    def offset(self) -> int:
        """Bytes of the stream consumed into events so far."""
        return self._base + self._pos

    @property
    def blocks(self) -> Mapping[str, int]:
        """The RAM block table announced by MEM_SIZE: ``{name: size}``."""
        return dict(self._blocks)

    @property
    def last_block(self) -> str | None:
        """The block a CONTINUE page record refers to."""
        return self._last_block

    @property
    def eof_seen(self) -> bool:
        return self._eof_seen

    @property
    def mapped_ram(self) -> bool:
        """True when the configuration lists the mapped-ram capability (QEMU 9.0+ files)."""
        return self._mapped_ram

    @property
    def skip_target(self) -> int | None:
        """While inside a mapped-ram block's bitmap and pages: the offset the stream goes on at.

        A reader holding a seekable file checks this when ``next_event()``
        returns ``NEED_DATA``, seeks there and calls :meth:`jump`; any other
        reader just keeps feeding, and the parser drops the bytes in between.
        """
        return self._skip_to if self._state is _State.SKIP else None

    def jump(self, offset: int) -> None:
        """The input goes on at ``offset`` (the :attr:`skip_target`): the bytes before it
        are not fed.  Only allowed once every buffered byte has been consumed."""
        if self.skip_target != offset or self._pos != len(self._buf):
            raise ValueError(f"jump({offset}): the parser is not waiting for offset {offset}")
        self._buf.clear()
        self._pos = 0
        self._base = offset
        self._state = self._after_skip

    @property
    def in_device_state(self) -> bool:
        """True once an uninterpreted FULL section switched to raw pass-through."""
        return self._state is _State.RAW

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append input; any bytes-like object.

        Page records that a ``page_sink`` can apply where they lie in ``data``
        are applied at once (the bytes of RAM are not copied into the parser's
        buffer); the rest is copied into the buffer and parsed by
        :meth:`events`.  The caller may reuse ``data`` once this returns.
        """
        self._feed(data, whole=True)

    def feed_some(self, data: bytes | bytearray | memoryview) -> int:
        """Take the head of ``data``; returns how many bytes were taken.

        As :meth:`feed`, except where the page sink applied pages in place
        and then stopped early in ``data`` at a record that is not a page
        (the EOS that ends a round): only a few hundred bytes after it are
        taken.  The caller
        pulls the events (the parser handles those records) and feeds the
        rest, which the sink then applies in place too, instead of the rest
        being copied into the parser's buffer.  Feeding a stream in any
        pieces gives the same events, so this is :meth:`feed` of a shorter
        piece.
        """
        return self._feed(data, whole=False)

    def feed_in_pieces(self, data: bytes | bytearray | memoryview) -> Iterator[None]:
        """Feed all of ``data`` in :meth:`feed_some`'s pieces, pausing after each.

        The caller pulls :meth:`events` at every pause (``for _ in
        parser.feed_in_pieces(data): handle(parser.events())``), so the
        pages after a round's end are applied in place too.
        """
        view = memoryview(data).cast("B")
        while view:
            view = view[self.feed_some(view):]
            yield

    def _feed(self, data: bytes | bytearray | memoryview, whole: bool) -> int:
        if self._closed:
            raise RuntimeError("feed() after close()")
        taken = memoryview(data).nbytes
        if (self.page_sink is not None and self._state is _State.RAM and self._blocks
                and self._error is None and len(self._buf) - self._pos < _MAX_PAGE_RECORD):
            data = memoryview(data).cast("B")
            if self._pos < len(self._buf):
                data = self._finish_split_record(data)
            if self._pos == len(self._buf) and self.page_sink is not None:
                before = len(data)
                data = self._sink_in_place(data)
                # Pages applied, then more than a record left: the sink stopped
                # at something else, likely with pages after it.  (Where it
                # applied nothing, as in a run of empty sections, pieces would
                # only add trips.)
                if not whole and before > len(data) > _MAX_PAGE_RECORD:
                    taken -= len(data) - _ROUND_PIECE
                    data = data[:_ROUND_PIECE]
        if self._pos >= _COMPACT_AT and self._pos * 2 >= len(self._buf):
            del self._buf[: self._pos]
            self._base += self._pos
            self._pos = 0
        self._buf += data
        return taken

    def _finish_split_record(self, view: memoryview) -> memoryview:
        """Complete the record that the last feed cut, from the head of ``view``.

        A read rarely ends on a record boundary: the buffer then holds the
        first part of a record.  Only up to one record's bytes of ``view`` are
        copied behind it and handed to the sink; when the sink gets past the
        old buffer, the buffer is emptied and the rest of ``view`` can go
        through :meth:`_sink_in_place`.  Otherwise (not a page record, a bad
        one) nothing is consumed from ``view`` here.
        """
        assert self.page_sink is not None
        kept = len(self._buf)
        self._buf += view[:_MAX_PAGE_RECORD]
        start = self._base + self._pos
        try:
            pos, last, counts = self.page_sink(self._buf, self._pos, self._base,
                                               self._last_block)
        except StreamError:
            del self._buf[kept:]
            return view
        if pos != self._pos:
            self._last_block = last
            self._pending.append(PagesLoaded(counts[0], tuple(counts), stream_offset=start))
        if pos <= kept:
            self._pos = pos
            del self._buf[kept:]
            return view
        self._base += pos
        self._pos = 0
        del self._buf[:]
        return view[pos - kept:]

    def _sink_in_place(self, data: bytes | bytearray | memoryview) -> memoryview:
        """Run the page sink on ``data`` itself; return what it left for the buffer.

        Only called with every buffered byte consumed, so ``data`` starts at
        the stream offset where parsing stands.  A sink that raises is not
        trusted here: the bytes go to the buffer and the sink runs again from
        :meth:`events`, which reports the error at its place in the event order
        (applying a page record twice writes the same bytes).
        """
        view = memoryview(data).cast("B")
        start = self._base + self._pos
        assert self.page_sink is not None
        try:
            pos, last, counts = self.page_sink(view, 0, start, self._last_block)
        except StreamError:
            return view
        if pos == 0:
            return view
        self._last_block = last
        self._pending.append(PagesLoaded(counts[0], tuple(counts), stream_offset=start))
        del self._buf[:]
        self._base = start + pos
        self._pos = 0
        return view[pos:]

    def next_event(self) -> Event | _Sentinel:
        """The next event, or ``NEED_DATA`` (after ``close()``: no more events)."""
        if self._pending:
            return self._pending.popleft()
        return self._parse_next()

    def _parse_next(self) -> Event | _Sentinel:
        if self._error is not None:
            raise self._error
        while True:
            try:
                event = self._step()
            except _Incomplete:
                return NEED_DATA
            except StreamError as exc:
                self._error = exc
                raise
            if event is not None:
                return event

    def events(self) -> Iterator[Event]:
        """Yield events until the buffered input is used up."""
        while (event := self.next_event()) is not NEED_DATA:
            assert isinstance(event, Event)
            yield event

    def close(self) -> None:
        """Declare the end of input; raise StreamError if it ended inside a record.

        Events not yet pulled stay available from ``next_event()``.  Ending
        inside raw device state or after EOF is a clean end.
        """
        if self._closed:
            if self._error is not None:
                raise self._error
            return
        self._closed = True
        while (event := self._parse_next()) is not NEED_DATA:
            assert isinstance(event, Event)
            self._pending.append(event)
        if self._state in _TERMINAL and self._pos == len(self._buf):
            return
        start = self._record_start()
        try:
            self._step()
        except _Incomplete as exc:
            what = exc.what
        else:  # pragma: no cover - events() stopped, so a step cannot succeed
            what = self._state.value
        end = self._base + len(self._buf)
        if start == end:
            message = f"the stream ended before {what}"
        else:
            message = f"the stream ended inside the record at offset {start}: expected {what}"
        self._error = _fail(end, message)
        raise self._error

    # -- the state machine -------------------------------------------------

    def _record_start(self) -> int:
        if self._state is _State.MEM_BLOCKS:
            return self._mem_offset
        if self._state is _State.DIGEST_ENTRY:
            return self._digest_offset
        if self._state is _State.SKIP:
            return self._skip_record
        return self.offset

    def _cursor(self) -> _Cursor:
        return _Cursor(self._buf, self._pos, self._base)

    def _commit(self, cur: _Cursor) -> None:
        self._pos = cur.pos

    def _step(self) -> Event | None:
        state = self._state
        if state is _State.RAM:
            return self._step_ram()
        if state is _State.TOP:
            return self._step_top()
        if state is _State.FOOTER:
            return self._step_footer()
        if state is _State.RAW:
            return self._step_raw()
        if state is _State.HEADER:
            return self._step_header()
        if state is _State.CONFIG:
            return self._step_config()
        if state is _State.MEM_BLOCKS:
            return self._step_mem_blocks()
        if state is _State.SKIP:
            self._step_skip()
            return None
        if state is _State.DIGEST_COUNT:
            return self._step_digest_count()
        if state is _State.DIGEST_ENTRY:
            return self._step_digest_entry()
        if state is _State.AFTER_EOF:
            return self._step_after_eof()
        return self._step_done()

    def _step_header(self) -> Event:
        cur = self._cursor()
        magic = cur.be32("the file magic 'QEVM'")
        if magic != c.MAGIC:
            raise _fail(
                0,
                f"not a QEMU migration stream: magic 0x{magic:08x}, "
                f"expected 0x{c.MAGIC:08x} ('QEVM')",
            )
        version = cur.be32("the stream version")
        if version == c.VERSION_COMPAT:
            raise _fail(
                4,
                f"stream version {version} (QEMU's old compat format) is not supported: "
                f"expected version {c.VERSION}",
            )
        if version != c.VERSION:
            raise _fail(4, f"unsupported stream version {version}: expected {c.VERSION}")
        self._commit(cur)
        self._state = _State.TOP
        self._config_allowed = True
        return Header(version, stream_offset=0)

    def _step_top(self) -> Event | None:
        cur = self._cursor()
        start = cur.offset
        kind = cur.u8("a section type byte")
        if kind == c.VM_SECTION_PART and (run := self._empty_parts(start)) is not None:
            return run
        if kind == c.VM_CONFIGURATION:
            self._read_configuration(cur, start)
            return None
        event = self._read_top_record(cur, start, kind)
        self._config_allowed = False
        return event

    def _empty_parts(self, start: int) -> Event | None:
        """Fold a run of empty PART sections of the 'ram' section into one event.

        Matched by one compiled pattern over the buffer (no Python work per
        section), once the stream has shown whether its sections carry footers.
        """
        section_id = self._ram_section_id
        if section_id is None or section_id not in self._open or self._footers is None:
            return None
        if self._empty_run is None:
            unit = bytes([c.VM_SECTION_PART]) + _BE32.pack(section_id)
            unit += _BE64.pack(c.RAM_SAVE_FLAG_EOS)
            if self._footers:
                unit += bytes([c.VM_SECTION_FOOTER]) + _BE32.pack(section_id)
            self._empty_run = re.compile(b"(?:" + re.escape(unit) + b")+")
            self._empty_unit = len(unit)
        match = self._empty_run.match(self._buf, self._pos)
        if match is None:
            return None
        count = (match.end() - self._pos) // self._empty_unit
        if count < 2:
            return None
        self._pos = match.end()
        self._section = section_id
        return EmptyParts(section_id, count, stream_offset=start)

    def _read_top_record(self, cur: _Cursor, start: int, kind: int) -> Event:
        if kind in (c.VM_SECTION_START, c.VM_SECTION_FULL):
            return self._read_section_header(cur, start, kind)
        if kind in (c.VM_SECTION_PART, c.VM_SECTION_END):
            section_id = cur.be32("the section id")
            return self._enter_part_or_end(cur, start, kind, section_id)
        if kind == c.VM_EOF:
            if self._open:
                names = ", ".join(f"'{n}' (id {i})" for i, n in self._open.items())
                raise _fail(start, f"EOF while section {names} is still open: expected its END")
            self._commit(cur)
            self._eof_seen = True
            self._state = _State.AFTER_EOF
            return Eof(stream_offset=start)
        if kind == c.VM_COMMAND:
            cmd = cur.be16("the command number")
            length = cur.be16("the command length")
            data = cur.take(length, f"{length} bytes of command data")
            if cmd in c.REFUSED_COMMANDS:
                raise _fail(
                    start,
                    f"MIG_CMD_{c.command_name(cmd)} ({cmd}): the stream switched to postcopy "
                    "or COLO, which is not supported (only precopy streams can be read)",
                )
            self._commit(cur)
            return Command(cmd, data, stream_offset=start)
        if kind == c.VM_SECTION_FOOTER:
            raise _fail(start, "section footer (0x7e) where no section payload just ended")
        if kind == c.VM_VMDESCRIPTION:
            raise _fail(start, "VMDESCRIPTION (0x06) before EOF")
        if kind == c.VM_SUBSECTION:
            raise _fail(start, "subsection (0x05) outside the configuration section")
        raise _fail(start, f"unknown section type 0x{kind:02x}: expected {_EXPECTED_SECTION_TYPES}")

    def _read_configuration(self, cur: _Cursor, start: int) -> None:
        if not self._config_allowed:
            raise _fail(start, "CONFIGURATION (0x07) is only allowed right after the header")
        length = cur.be32("the length of the machine type name")
        if length > MAX_MACHINE_NAME:
            raise _fail(
                start + 1,
                f"machine type name of {length} bytes: expected at most {MAX_MACHINE_NAME}",
            )
        raw = cur.take(length, "the machine type name")
        self._commit(cur)
        self._config_allowed = False
        self._config_offset = start
        self._machine = raw.decode("utf-8", errors="replace")
        self._state = _State.CONFIG
        return None

    def _step_config(self) -> Event | None:
        cur = self._cursor()
        start = cur.offset
        if cur.peek(_State.CONFIG.value) != c.VM_SUBSECTION:
            self._state = _State.TOP
            self._mapped_ram = c.CAPABILITY_MAPPED_RAM in self._capabilities
            return Configuration(
                self._machine, self._capabilities, self._uuid, stream_offset=self._config_offset
            )
        cur.u8("a subsection marker")
        name = cur.name("the configuration subsection name")
        cur.be32(f"the version of subsection '{name}'")
        if name == c.SUBSECTION_CAPABILITIES:
            count = cur.be32("the capability count")
            if count > MAX_CAPABILITIES:
                raise _fail(start, f"{count} capabilities: expected at most {MAX_CAPABILITIES}")
            caps = tuple(cur.name("a capability name") for _ in range(count))
            self._capabilities = self._capabilities + caps
        elif name == c.SUBSECTION_TARGET_PAGE_BITS:
            bits = cur.be32("the target page bits")
            if bits != c.PAGE_BITS:
                raise _fail(
                    start,
                    f"target pages of 2**{bits} bytes: only {c.PAGE_SIZE}-byte pages are supported",
                )
        elif name == c.SUBSECTION_UUID:
            self._uuid = cur.take(c.UUID_SIZE, "the 16-byte VM UUID")
        else:
            known = (c.SUBSECTION_CAPABILITIES, c.SUBSECTION_TARGET_PAGE_BITS, c.SUBSECTION_UUID)
            raise _fail(
                start,
                f"unknown configuration subsection '{name}': expected one of "
                + ", ".join(f"'{k}'" for k in known),
            )
        self._commit(cur)
        return None

    def _read_section_header(self, cur: _Cursor, start: int, kind: int) -> Event:
        section_id = cur.be32("the section id")
        idstr = cur.name("the section name")
        instance_id = cur.be32("the instance id")
        version_id = cur.be32("the section version")
        if kind == c.VM_SECTION_START:
            if section_id in self._open:
                raise _fail(start, f"section id {section_id} started twice")
            if idstr != c.RAM_IDSTR:
                raise _fail(
                    start,
                    f"unsupported iterable section '{idstr}': only '{c.RAM_IDSTR}' is understood",
                )
            if self._ram_section_id is not None:
                raise _fail(start, "a second 'ram' section: expected one per stream")
            if version_id != c.RAM_SECTION_VERSION:
                raise _fail(
                    start, f"'ram' section version {version_id}: expected {c.RAM_SECTION_VERSION}"
                )
            self._commit(cur)
            self._open[section_id] = idstr
            self._ram_section_id = section_id
            self._enter_ram(section_id, setup=True)
            return SectionStart(section_id, idstr, instance_id, version_id, stream_offset=start)
        if idstr == c.DIGEST_IDSTR:
            if version_id != c.DIGEST_VERSION:
                raise _fail(
                    start, f"'{idstr}' section version {version_id}: expected {c.DIGEST_VERSION}"
                )
            if self._digest_seen:
                raise _fail(start, f"a second '{idstr}' section")
            if self._open:
                raise _fail(start, f"'{idstr}' section while the RAM is still being sent")
            self._commit(cur)
            self._digest_seen = True
            self._section = section_id
            self._state = _State.DIGEST_COUNT
        elif idstr == c.RAM_IDSTR:
            raise _fail(start, "'ram' as a FULL section: expected START, PART and END")
        else:
            self._commit(cur)
            self._state = _State.RAW
        return SectionFull(section_id, idstr, instance_id, version_id, stream_offset=start)

    def _enter_part_or_end(self, cur: _Cursor, start: int, kind: int, section_id: int) -> Event:
        label = "SECTION_PART" if kind == c.VM_SECTION_PART else "SECTION_END"
        if section_id not in self._open:
            open_ids = ", ".join(str(i) for i in self._open) or "none"
            raise _fail(
                start,
                f"{label} for section id {section_id} that is not open (open ids: {open_ids})",
            )
        self._commit(cur)
        self._enter_ram(section_id, setup=False)
        if kind == c.VM_SECTION_END:
            del self._open[section_id]
            return SectionEnd(section_id, stream_offset=start)
        return SectionPart(section_id, stream_offset=start)

    def _enter_ram(self, section_id: int, *, setup: bool) -> None:
        self._section = section_id
        self._mem_size_allowed = setup
        self._state = _State.RAM

    def _step_ram(self) -> Event | None:
        if self.page_sink is not None and self._blocks:
            start = self.offset
            pos, last, counts = self.page_sink(self._buf, self._pos, self._base, self._last_block)
            if pos != self._pos:
                self._pos = pos
                self._last_block = last
                return PagesLoaded(counts[0], tuple(counts), stream_offset=start)
        cur = self._cursor()
        start = cur.offset
        word = cur.be64(_State.RAM.value)
        flags = word & c.FLAGS_MASK
        addr = word ^ flags
        if flags & c.RAM_SAVE_FLAG_HOOK:
            raise _fail(start, "RAM_SAVE_FLAG_HOOK (0x80): RDMA not supported")
        if flags & c.RAM_SAVE_FLAG_COMPRESS_PAGE:
            raise _fail(
                start, "RAM_SAVE_FLAG_COMPRESS_PAGE (0x100): compressed pages not supported"
            )
        if flags & c.RAM_SAVE_FLAG_FULL:
            raise _fail(start, "obsolete RAM_SAVE_FLAG_FULL (0x01): expected " + _EXPECTED_FLAGS)
        kind = flags & ~c.RAM_SAVE_FLAG_CONTINUE
        if flags == c.RAM_SAVE_FLAG_MULTIFD_FLUSH:
            if not self._mapped_ram:
                raise _fail(
                    start,
                    "RAM_SAVE_FLAG_MULTIFD_FLUSH (0x200): multifd channels are not supported "
                    "(their pages travel on connections this stream does not carry)",
                )
            self._commit(cur)  # mapped-ram: the pages are in the file whichever thread wrote them
            return None
        if kind in _PAGE_KINDS:
            if self._mapped_ram:
                raise _fail(start, _mapped_ram_page_record(kind))
            return self._read_page(cur, start, flags, kind, addr)
        if flags & c.RAM_SAVE_FLAG_CONTINUE or kind not in (
            c.RAM_SAVE_FLAG_EOS,
            c.RAM_SAVE_FLAG_MEM_SIZE,
        ):
            raise _fail(
                start, f"unknown RAM record flags 0x{flags:03x}: expected {_EXPECTED_FLAGS}"
            )
        if kind == c.RAM_SAVE_FLAG_EOS:
            if addr:
                raise _fail(start, f"EOS record with offset 0x{addr:x}: expected 0")
            self._commit(cur)
            self._state = _State.FOOTER
            return EndOfSection(stream_offset=start)
        if not self._mem_size_allowed:
            where = "a second MEM_SIZE record" if self._mem_list or self._blocks else "MEM_SIZE"
            raise _fail(start, f"{where} outside the setup (START) of the 'ram' section")
        if c.CAPABILITY_X_IGNORE_SHARED in self._capabilities:
            raise _fail(
                start,
                f"capability {c.CAPABILITY_X_IGNORE_SHARED} is not supported: RAM in shared "
                "memory is left out of the stream, and its block list carries addresses",
            )
        self._commit(cur)
        self._mem_size_allowed = False
        self._mem_offset = start
        self._mem_total = addr
        self._mem_remaining = addr
        self._mem_list = []
        self._mem_names = set()
        if addr == 0:
            return RamBlocks(0, (), stream_offset=start)
        self._state = _State.MEM_BLOCKS
        return None

    def _read_page(self, cur: _Cursor, start: int, flags: int, kind: int, addr: int) -> Event:
        if flags & c.RAM_SAVE_FLAG_CONTINUE:
            block = self._last_block
            if block is None:
                raise _fail(start, "CONTINUE flag but no earlier page record named a block")
        else:
            block = cur.name("the RAM block name")
        size = self._blocks.get(block)
        if size is None:
            known = ", ".join(f"'{b}'" for b in self._blocks) or "none announced by MEM_SIZE"
            raise _fail(start, f"unknown RAM block '{block}': expected one of {known}")
        if addr + c.PAGE_SIZE > size:
            raise _fail(
                start,
                f"page offset 0x{addr:x} outside RAM block '{block}' of size 0x{size:x}",
            )
        event: Event
        if kind == c.RAM_SAVE_FLAG_ZERO:
            fill = cur.u8("the fill byte of a zero page")
            event = ZeroPage(block, addr, fill, stream_offset=start)
        elif kind == c.RAM_SAVE_FLAG_PAGE:
            data = cur.take(c.PAGE_SIZE, f"{c.PAGE_SIZE} bytes of page data")
            event = NormalPage(block, addr, data, stream_offset=start)
        else:
            encoding = cur.u8("the XBZRLE encoding byte")
            if encoding != c.ENCODING_FLAG_XBZRLE:
                raise _fail(
                    start,
                    f"XBZRLE page with wrong encoding 0x{encoding:02x}: "
                    f"expected 0x{c.ENCODING_FLAG_XBZRLE:02x}",
                )
            length = cur.be16("the XBZRLE delta length")
            if length > c.MAX_XBZRLE_LEN:
                raise _fail(
                    start,
                    f"XBZRLE delta of {length} bytes: expected at most {c.MAX_XBZRLE_LEN}",
                )
            delta = cur.take(length, f"{length} bytes of XBZRLE delta")
            event = XbzrlePage(block, addr, delta, stream_offset=start)
        self._commit(cur)
        self._last_block = block
        return event

    def _step_mem_blocks(self) -> Event | None:
        cur = self._cursor()
        start = cur.offset
        name = cur.name("a RAM block name")
        size = cur.be64(f"the size of RAM block '{name}'")
        if len(self._mem_list) >= self._max_blocks:
            raise _fail(
                start,
                f"more than {self._max_blocks} RAM blocks in the MEM_SIZE record "
                f"(this reader's limit; the announced total 0x{self._mem_total:x} "
                f"still has 0x{self._mem_remaining:x} bytes unlisted)",
            )
        if not name or name in self._mem_names:
            listed = self._mem_total - self._mem_remaining
            what = "a RAM block with an empty name" if not name else \
                f"RAM block '{name}' announced twice"
            raise _fail(
                start,
                f"{what}: the MEM_SIZE total 0x{self._mem_total:x} is more than the "
                f"0x{listed:x} bytes of the {len(self._mem_list)} blocks listed before it, "
                "so the block list ran on into whatever follows it",
            )
        if size > self._mem_remaining:
            raise _fail(
                start,
                f"RAM block '{name}' of size 0x{size:x} exceeds the 0x{self._mem_remaining:x} "
                f"bytes left of the announced total 0x{self._mem_total:x} (postcopy and "
                "x-ignore-shared block extras are not supported)",
            )
        if self._mapped_ram:
            return self._read_mapped_ram_header(cur, start, name, size)
        self._commit(cur)
        self._mem_names.add(name)
        self._mem_list.append((name, size))
        self._mem_remaining -= size
        if self._mem_remaining:
            return None
        self._blocks = dict(self._mem_list)
        self._state = _State.RAM
        return RamBlocks(self._mem_total, tuple(self._mem_list), stream_offset=self._mem_offset)

    def _read_mapped_ram_header(self, cur: _Cursor, start: int, name: str, size: int) -> Event:
        """QEMU's MappedRamHeader after a block's entry; then skip to the block's pages end."""
        at = cur.offset
        raw = cur.take(c.MAPPED_RAM_HEADER_SIZE, f"the mapped-ram header of RAM block '{name}'")
        version, page_size, bitmap_offset, pages_offset = _MAPPED_RAM_HEADER.unpack(raw)
        event = MappedRamBlock(name, size, version, page_size, bitmap_offset, pages_offset,
                               stream_offset=start)
        problem = _mapped_ram_layout_problem(event, at + c.MAPPED_RAM_HEADER_SIZE)
        if problem:
            raise _fail(at, f"mapped-ram block '{name}': {problem}")
        self._commit(cur)
        self._mem_names.add(name)
        self._mem_list.append((name, size))
        self._mem_remaining -= size
        self._skip_to = event.pages_end
        self._skip_block = name
        self._skip_record = start
        self._state = _State.SKIP
        if self._mem_remaining:
            self._after_skip = _State.MEM_BLOCKS
        else:
            self._blocks = dict(self._mem_list)
            self._after_skip = _State.RAM
            self._pending.append(RamBlocks(self._mem_total, tuple(self._mem_list),
                                           stream_offset=self._mem_offset))
        return event

    def _step_skip(self) -> None:
        have = len(self._buf) - self._pos
        need = self._skip_to - self.offset
        if need <= have:
            self._pos += need
            self._state = self._after_skip
            return None
        self._pos += have  # not needed from a stream: dropped
        raise _Incomplete(
            f"the bitmap and pages of mapped-ram block '{self._skip_block}' "
            f"up to offset {self._skip_to}"
        )

    def _step_footer(self) -> Event | None:
        cur = self._cursor()
        start = cur.offset
        kind = cur.peek(_State.FOOTER.value)
        if kind != c.VM_SECTION_FOOTER:
            if self._footers:
                raise _fail(
                    start,
                    f"found 0x{kind:02x}: expected the section footer (0x7e) of section id "
                    f"{self._section}, as earlier sections had one",
                )
            self._footers = False
            self._state = _State.TOP
            return None
        if self._footers is False:
            raise _fail(start, "section footer (0x7e) in a stream whose earlier sections had none")
        cur.u8("the section footer marker")
        section_id = cur.be32("the section id of the footer")
        if section_id != self._section:
            raise _fail(
                start,
                f"section footer for id {section_id}: expected id {self._section}",
            )
        self._commit(cur)
        self._footers = True
        self._state = _State.TOP
        return SectionFooter(section_id, stream_offset=start)

    def _step_digest_count(self) -> Event | None:
        cur = self._cursor()
        start = cur.offset
        count = cur.be32("the block count of the xbzrle-digest section")
        if count > self._max_blocks:
            raise _fail(start, f"digest of {count} blocks: expected at most {self._max_blocks}")
        self._commit(cur)
        self._digest_offset = start
        self._digest_remaining = count
        self._digest = {}
        if count:
            self._state = _State.DIGEST_ENTRY
            return None
        self._state = _State.FOOTER
        return Digest({}, stream_offset=start)

    def _step_digest_entry(self) -> Event | None:
        cur = self._cursor()
        start = cur.offset
        name = cur.name("a digest block name")
        size = cur.be64(f"the size of digest block '{name}'")
        length = cur.u8(f"the digest length of block '{name}'")
        digest = cur.take(length, f"the digest of block '{name}'")
        if name in self._digest:
            raise _fail(start, f"digest block '{name}' listed twice")
        self._commit(cur)
        self._digest[name] = (size, digest)
        self._digest_remaining -= 1
        if self._digest_remaining:
            return None
        self._state = _State.FOOTER
        return Digest(self._digest, stream_offset=self._digest_offset)

    def _step_raw(self) -> Event:
        available = len(self._buf) - self._pos
        if not available:
            raise _Incomplete(_State.RAW.value)
        start = self.offset
        size = min(available, self._device_chunk)
        data = bytes(self._buf[self._pos : self._pos + size])
        self._pos += size
        return DeviceState(start, data, stream_offset=start)

    def _step_after_eof(self) -> Event:
        cur = self._cursor()
        start = cur.offset
        kind = cur.u8(_State.AFTER_EOF.value)
        if kind != c.VM_VMDESCRIPTION:
            raise _fail(
                start,
                f"unexpected byte 0x{kind:02x} after EOF: expected VMDESCRIPTION (0x06) "
                "or the end of the stream",
            )
        length = cur.be32("the VMDESCRIPTION length")
        if length > self._max_vmdesc:
            raise _fail(
                start,
                f"VMDESCRIPTION of {length} bytes: expected at most {self._max_vmdesc}",
            )
        raw = cur.take(length, f"{length} bytes of VMDESCRIPTION JSON")
        self._commit(cur)
        try:
            value = _decode_json(raw)
        except _TooDeep:
            raise _fail(
                start, f"VMDESCRIPTION JSON nested deeper than {MAX_VMDESC_NESTING} levels"
            ) from None
        self._state = _State.DONE
        return VmDescription(value, stream_offset=start)

    def _step_done(self) -> Event:
        cur = self._cursor()
        start = cur.offset
        cur.u8(_State.DONE.value)
        raise _fail(start, "trailing data after the VMDESCRIPTION: expected the end of the stream")


def _mapped_ram_page_record(kind: int) -> str:
    if kind == c.RAM_SAVE_FLAG_XBZRLE:
        return ("XBZRLE page in a mapped-ram stream: QEMU refuses that pair "
                "(\"Mapped-ram migration is incompatible with xbzrle\")")
    label = "ZERO" if kind == c.RAM_SAVE_FLAG_ZERO else "PAGE"
    return (f"{label} page record in a mapped-ram stream: its RAM is only at fixed file "
            "offsets after each block header")


def _mapped_ram_layout_problem(block: MappedRamBlock, header_end: int) -> str | None:
    """What is wrong with a block's header, bitmap and pages region, judged from the
    header alone (the file's size is the reader's check); None if nothing."""
    if block.version != c.MAPPED_RAM_HEADER_VERSION:
        return (f"header version {block.version}: expected {c.MAPPED_RAM_HEADER_VERSION} "
                "(QEMU 9.0 to 10.x)")
    if block.page_size != c.PAGE_SIZE:
        return f"page size {block.page_size}: only {c.PAGE_SIZE}-byte pages are supported"
    if block.size % c.PAGE_SIZE:
        return f"size 0x{block.size:x} is not a whole number of {c.PAGE_SIZE}-byte pages"
    if block.bitmap_offset < header_end:
        return (f"bitmap offset {block.bitmap_offset} overlaps its header or an earlier "
                f"region: expected at least {header_end}")
    bitmap_end = block.bitmap_offset + block.bitmap_size
    if bitmap_end > block.pages_offset:
        return (f"bitmap of {block.bitmap_size} bytes at offset {block.bitmap_offset} "
                f"overlaps the pages region at offset {block.pages_offset}")
    if block.pages_offset % c.PAGE_SIZE:
        return (f"pages offset {block.pages_offset} is not aligned to {c.PAGE_SIZE}-byte "
                "pages (QEMU: \"region has bad alignment\")")
    if block.pages_end > _MAX_FILE_OFFSET:
        return f"pages region ends at offset {block.pages_end}, beyond any file"
    return None


class _TooDeep(XbzrleError):
    """A JSON document nests deeper than MAX_VMDESC_NESTING."""


def _nesting(value: object) -> int:
    """How deeply ``value`` nests lists and dicts, level by level (no recursion)."""
    depth = 0
    level = [value] if isinstance(value, dict | list) else []
    while level and depth <= MAX_VMDESC_NESTING:
        depth += 1
        level = [
            item
            for node in level
            for item in (node.values() if isinstance(node, dict) else node)
            if isinstance(item, dict | list)
        ]
    return depth


def _decode_json(raw: bytes) -> dict[str, Any] | str:
    """The JSON object in ``raw``, or its text when it is not one; _TooDeep when too nested."""
    text = raw.decode("utf-8", errors="replace")
    try:
        value = json.loads(text)
    except RecursionError:
        raise _TooDeep from None
    except ValueError:
        return text
    if not isinstance(value, dict):
        return text
    if _nesting(value) > MAX_VMDESC_NESTING:
        raise _TooDeep
    return value


HEADER_SIZE = 8
"""The file header: magic ``QEVM`` and the stream version."""


def header_problem(data: bytes) -> str | None:
    """What is wrong with the first HEADER_SIZE bytes of a stream, or None if they are a header.

    A listener uses it to tell a migration source from any other client
    before it gives the connection the destination's RAM.
    """
    parser = StreamParser()
    parser.feed(data[:HEADER_SIZE])
    try:
        event = parser.next_event()
    except StreamError as exc:
        return str(exc)
    return None if isinstance(event, Header) else "the stream ended inside its header"


def parse_bytes(data: bytes | bytearray | memoryview, **options: int) -> list[Event]:
    """Parse a whole stream held in memory (tests, small files); raises StreamError."""
    parser = StreamParser(**options)
    parser.feed(data)
    events = list(parser.events())
    parser.close()
    events.extend(parser.events())
    return events


def find_vmdescription(tail: bytes | bytearray | memoryview) -> tuple[int, dict[str, Any]] | None:
    """Locate a trailing VMDESCRIPTION (0x06, be32 length, JSON object) ending at ``tail``'s end.

    Returns ``(position in tail of the 0x06 byte, parsed object)``, or None.
    The byte before the 0x06 must be QEMU_VM_EOF when the tail includes it:
    after raw device state, this is how a reader finds the device list.
    """
    view = bytes(tail)
    end = len(view)
    position = view.rfind(b"\x06", 0, max(end - 4, 0))
    while position >= 0:
        (length,) = _BE32.unpack_from(view, position + 1)
        if length == end - position - 5 and (position == 0 or view[position - 1] == c.VM_EOF):
            try:
                value = _decode_json(view[position + 5 :])
            except _TooDeep:
                value = None
            if isinstance(value, dict):
                return position, value
        position = view.rfind(b"\x06", 0, position)
    return None
