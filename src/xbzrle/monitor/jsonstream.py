"""Split a QMP byte stream into JSON texts, the way QEMU's streamer does.

QMP clients need not end a message with a newline (``qemu.qmp`` does not),
and humans may paste a command over several lines, so messages are cut
where the top-level ``{...}`` closes, not at line ends.  Pure logic: feed
bytes, get complete texts back.
"""

from __future__ import annotations

MAX_DEPTH = 64  # QEMU's nesting limit
MAX_SIZE = 64 << 20  # bytes buffered for one message before giving up

_WHITESPACE = b" \t\r\n"


class JsonSplitter:
    """Incremental cutter: ``feed(data)`` returns every message completed by it.

    A returned item is either the text of one top-level JSON value or, for
    input that cannot be a message (too deep, too large, stray tokens), an
    :class:`Invalid` naming the problem, so the caller can reply with an
    error and carry on with the next message.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._scalar = False  # collecting a stray top-level token
        self._skip_to_newline = False

    def feed(self, data: bytes) -> list[str | Invalid]:
        out: list[str | Invalid] = []
        for byte in data:
            self._step(byte, out)
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

    def _step(self, byte: int, out: list[str | Invalid]) -> None:
        if self._skip_to_newline:  # resynchronise after garbage at the next line
            if byte == 0x0A:
                self._skip_to_newline = False
            return
        if self._scalar:
            if byte in _WHITESPACE or byte in b"{[":
                self._emit(out)
                self._scalar = False
            else:
                self._buf.append(byte)
                return
        if self._depth == 0 and not self._in_string:
            if byte in _WHITESPACE:
                return
            if byte not in b"{[":
                self._scalar = True
                self._buf.append(byte)
                return
        self._buf.append(byte)
        if len(self._buf) > MAX_SIZE:
            self._fail(out, f"JSON message larger than {MAX_SIZE} bytes")
            return
        if self._in_string:
            if self._escape:
                self._escape = False
            elif byte == 0x5C:  # backslash
                self._escape = True
            elif byte == 0x22:
                self._in_string = False
            return
        if byte == 0x22:
            self._in_string = True
        elif byte in b"{[":
            self._depth += 1
            if self._depth > MAX_DEPTH:
                self._fail(out, f"JSON nesting deeper than {MAX_DEPTH}")
        elif byte in b"}]":
            self._depth -= 1
            if self._depth == 0:
                self._emit(out)


class Invalid:
    """Input that cannot be a QMP message; ``reason`` says why."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Invalid({self.reason!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Invalid) and other.reason == self.reason
