"""QEMU Machine Protocol, sans I/O: bytes in, reply lines and event lines out.

A :class:`QmpSession` is one client connection's protocol state: the
greeting, capabilities negotiation (nothing but ``qmp_capabilities`` is
accepted before it, and no event is sent), then ``execute`` requests whose
replies echo the request's ``id``.  Which commands exist and what they do is
:mod:`.qmp_commands`' business; the server does the reading and writing.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Mapping

from ..errors import CommandError, XbzrleError, qmp_class
from .jsonstream import Invalid, JsonSplitter
from .qmp_commands import QmpCommands
from .version import QEMU_VERSION

_REQUEST_MEMBERS = frozenset({"execute", "exec-oob", "arguments", "id"})
_INT_DIGITS = 20  # an int64/uint64 has at most 20 digits; longer ones become doubles


class _BadJson(XbzrleError, ValueError):
    """Valid to Python's json module, but not to QEMU's parser: a duplicate key, NaN..."""


def _object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise _BadJson(f"duplicate key '{duplicate}'")
    return obj


def _number(text: str) -> int | float:
    """QEMU's rule: an integer that fits 64 bits stays one, anything else is a double."""
    if len(text.lstrip("-")) <= _INT_DIGITS:
        value = int(text)
        if -(1 << 63) <= value < (1 << 64):
            return value
    return _double(text)


def _double(text: str) -> float:
    value = float(text)  # no digit limit for floats, unlike int()
    if not math.isfinite(value):
        raise _BadJson(f"number '{text[:20]}{'...' if len(text) > 20 else ''}' out of range")
    return value


def _constant(text: str) -> object:
    raise _BadJson(f"invalid token '{text}'")


def decode(text: str) -> object:
    """JSON as QEMU's parser reads it: duplicate keys, NaN and Infinity are errors.

    ValueError (JSONDecodeError or a subclass saying what QEMU refuses) or
    RecursionError on bad input, never anything else.
    """
    return json.loads(text, object_pairs_hook=_object, parse_int=_number,
                      parse_float=_double, parse_constant=_constant)


def _finite(value: object) -> object:
    """Replies are JSON: a non-finite float (a rate over zero time) is sent as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def encode(message: Mapping[str, object]) -> bytes:
    """One message per line, ``\\r\\n``-terminated as QEMU's monitor writes it."""
    try:
        text = json.dumps(message, separators=(", ", ": "), allow_nan=False)
    except ValueError:  # NaN or Infinity somewhere: never on the wire
        text = json.dumps(_finite(message), separators=(", ", ": "), allow_nan=False)
    return text.encode() + b"\r\n"


def error_reply(cls: str, desc: str, msg_id: object = None,
                has_id: bool = False) -> dict[str, object]:
    reply: dict[str, object] = {"error": {"class": cls, "desc": desc}}
    if has_id:
        reply["id"] = msg_id
    return reply


def event_message(name: str, data: Mapping[str, object] | None,
                  now: float | None = None) -> dict[str, object]:
    """An event as QEMU sends it; ``data`` is left out for events that carry none."""
    now = time.time() if now is None else now
    seconds = int(now)
    message: dict[str, object] = {
        "timestamp": {"seconds": seconds, "microseconds": int((now - seconds) * 1_000_000)},
        "event": name,
    }
    if data is not None:
        message["data"] = dict(data)
    return message


class QmpSession:
    """Protocol state of one QMP connection."""

    def __init__(self, commands: QmpCommands, package: str) -> None:
        self.commands = commands
        self.package = package
        self.negotiated = False
        self.oob = False
        self._splitter = JsonSplitter()

    def greeting(self) -> bytes:
        return encode({"QMP": {"version": {"qemu": dict(QEMU_VERSION), "package": self.package},
                               "capabilities": ["oob"]}})

    def receive(self, data: bytes) -> list[bytes]:
        """Feed bytes from the client; returns the replies to send, in order."""
        return list(self.replies(data))

    def replies(self, data: bytes) -> Iterator[bytes]:
        """Like :meth:`receive`, but yields each reply as soon as it is ready."""
        for item in self._splitter.feed(data):
            yield encode(self.handle(item))

    def event(self, name: str, data: Mapping[str, object] | None) -> bytes | None:
        """The bytes to send for an event, or None while still negotiating."""
        if not self.negotiated:
            return None
        return encode(event_message(name, data))

    # -- one request ---------------------------------------------------------------
    def handle(self, text: str | Invalid) -> dict[str, object]:
        if isinstance(text, Invalid):
            return error_reply("GenericError", f"JSON parse error, {text.reason}")
        try:
            request = decode(text)
        except (ValueError, RecursionError) as exc:
            if isinstance(exc, json.JSONDecodeError):
                reason = exc.msg.lower()
            elif isinstance(exc, RecursionError):
                reason = "nesting too deep"
            else:
                reason = str(exc)
            return error_reply("GenericError", f"JSON parse error, {reason}")
        if not isinstance(request, dict):
            return error_reply("GenericError", "QMP input must be a JSON object")
        has_id = "id" in request
        msg_id = request.get("id")

        def fail(cls: str, desc: str) -> dict[str, object]:
            return error_reply(cls, desc, msg_id, has_id)

        for member in request:
            if member not in _REQUEST_MEMBERS:
                return fail("GenericError", f"QMP input member '{member}' is unexpected")
        if "execute" in request and "exec-oob" in request:
            return fail("GenericError",
                        "QMP input must have either 'execute' or 'exec-oob', not both")
        oob = "exec-oob" in request
        name = request.get("exec-oob" if oob else "execute")
        if name is None:
            return fail("GenericError", "QMP input lacks member 'execute'")
        if not isinstance(name, str):
            return fail("GenericError",
                        f"QMP input member '{'exec-oob' if oob else 'execute'}' must be a string")
        arguments = request.get("arguments", {})
        if not isinstance(arguments, dict):
            return fail("GenericError", "QMP input member 'arguments' must be an object")

        try:
            result = self._dispatch(name, arguments, oob)
        except XbzrleError as exc:
            return fail(qmp_class(exc), str(exc))
        reply: dict[str, object] = {"return": result}
        if has_id:
            reply["id"] = msg_id
        return reply

    def _dispatch(self, name: str, arguments: dict[str, object], oob: bool) -> object:
        if not self.negotiated:
            if name != "qmp_capabilities":
                raise CommandError(
                    "Expecting capabilities negotiation with 'qmp_capabilities'",
                    "CommandNotFound")
            self._negotiate(arguments)
            return {}
        if name == "qmp_capabilities":
            raise CommandError(
                "Capabilities negotiation is already complete, command ignored",
                "CommandNotFound")
        if oob:
            if not self.oob:
                raise CommandError("Please enable out-of-band first for the session "
                                      "during capabilities negotiation")
            self.commands.lookup(name)  # unknown beats "no OOB"
            raise CommandError(f"The command {name} does not support OOB")
        return self.commands.execute(name, arguments)

    def _negotiate(self, arguments: dict[str, object]) -> None:
        for key in arguments:
            if key != "enable":
                raise CommandError(f"Parameter '{key}' is unexpected")
        enable = arguments.get("enable", [])
        if not isinstance(enable, list) or not all(isinstance(c, str) for c in enable):
            raise CommandError("Invalid parameter type for 'enable', expected: array")
        for capability in enable:
            if capability != "oob":
                raise CommandError(
                    f"Parameter 'enable' does not accept value '{capability}'")
        self.oob = "oob" in enable
        self.negotiated = True
