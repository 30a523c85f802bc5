"""Split a QMP byte stream into JSON texts, the way QEMU's streamer does.

QMP clients need not end a message with a newline (``qemu.qmp`` does not),
and humans may paste a command over several lines, so messages are cut
where the top-level ``{...}`` closes, not at line ends.  Pure logic: feed
bytes, get complete texts back.
"""

from __future__ import annotations

import re

MAX_DEPTH = 64  # QEMU's nesting limit
MAX_SIZE = 64 << 20  # bytes buffered for one message before giving up

_NON_SPACE = re.compile(rb"[^ \t\r\n]")
_SCALAR_END = re.compile(rb"[ \t\r\n{\[]")
_STRUCTURE = re.compile(rb'["{}\[\]]')
_STRING_END = re.compile(rb'["\\]')


class JsonSplitter:
    """Incremental cutter: ``feed(data)`` returns every message completed by it.

    A returned item is either the text of one top-level JSON value or, for
    input that cannot be a message (too deep, too large, stray tokens), an
    :class:`Invalid` naming the problem, so the caller can reply with an
    error and carry on with the next message.

    The input is scanned with compiled patterns for the bytes that matter
    (quotes, backslashes in strings, brackets), never byte by byte in Python.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._scalar = False  # collecting a stray top-level token
        self._skip_to_newline = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[str | Invalid]:
        data = bytes(data)
        out: list[str | Invalid] = []
        pos, end = 0, len(data)
        while pos < end:
            pos = self._step(data, pos, out)
        return out

    def _emit(self, out: list[str | Invalid]) -> None:
        out.append(self._buf.decode("utf-8", errors="replace"))
        self._buf.clear()

    def _fail(self, out: list[str | Invalid], reason: str) -> None:
        out.append(Invalid(reason))
        self._buf.clear()
        self._depth = 0
        self._in_string = self._escape = self._scalar = False
        self._skip_to_newline = True

    def _take(self, data: bytes, pos: int, stop: int, out: list[str | Invalid]) -> bool:
        """Buffer ``data[pos:stop]``; False (after failing) if the message grew too large."""
        self._buf += data[pos:stop]
        if len(self._buf) > MAX_SIZE:
            self._fail(out, f"JSON message larger than {MAX_SIZE} bytes")
            return False
        return True

    def _step(self, data: bytes, pos: int, out: list[str | Invalid]) -> int:
        """Consume from ``pos`` up to the next byte that changes the state; the new pos."""
        end = len(data)
        if self._skip_to_newline:  # resynchronise after garbage at the next line
            newline = data.find(b"\n", pos)
            if newline < 0:
                return end
            self._skip_to_newline = False
            return newline + 1
        if self._scalar:
            match = _SCALAR_END.search(data, pos)
            stop = match.start() if match else end
            if self._take(data, pos, stop, out) and match:
                self._emit(out)
                self._scalar = False
            return stop
        if self._depth == 0 and not self._in_string:
            match = _NON_SPACE.search(data, pos)
            if match is None:
                return end
            pos = match.start()
            if data[pos] not in b"{[":
                self._scalar = True
                return pos
        if self._in_string:
            if self._escape:
                self._escape = False
                return pos + 1 if self._take(data, pos, pos + 1, out) else pos + 1
            match = _STRING_END.search(data, pos)
            stop = match.start() if match else end
            if not self._take(data, pos, stop + (match is not None), out) or match is None:
                return stop + (match is not None)
            if data[stop] == 0x5C:  # backslash
                self._escape = True
            else:
                self._in_string = False
            return stop + 1
        match = _STRUCTURE.search(data, pos)
        stop = match.start() if match else end
        if not self._take(data, pos, stop + (match is not None), out) or match is None:
            return stop + (match is not None)
        byte = data[stop]
        if byte == 0x22:
            self._in_string = True
        elif byte in b"{[":
            self._depth += 1
            if self._depth > MAX_DEPTH:
                self._fail(out, f"JSON nesting deeper than {MAX_DEPTH}")
        else:
            self._depth -= 1
            if self._depth == 0:
                self._emit(out)
        return stop + 1


class Invalid:
    """Input that cannot be a QMP message; ``reason`` says why."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Invalid({self.reason!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Invalid) and other.reason == self.reason
