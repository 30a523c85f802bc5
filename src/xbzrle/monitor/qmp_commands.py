"""The QMP commands: argument checking as QEMU's QAPI does it, then a call
into :class:`~.control.VmControl` (and nothing below it).

Every error a user can cause comes back as an :class:`~xbzrle.errors.XbzrleError`
(a :class:`~xbzrle.errors.CommandError` for the protocol's own refusals);
:func:`xbzrle.errors.qmp_class` gives its QMP class: ``CommandNotFound`` for
unknown commands, otherwise ``GenericError`` with a message that says what
was wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from ..errors import CommandError, XbzrleError
from ..migration.params import CONVERGE_PARAMETERS

if TYPE_CHECKING:
    from .control import VmControl

log = logging.getLogger(__name__)

_TYPE_NAMES = {"str": "string", "int": "integer", "bool": "boolean", "number": "number",
               "array": "array", "object": "object"}


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # one of _TYPE_NAMES
    required: bool = True


@dataclass(frozen=True)
class Command:
    name: str
    handler: Callable[[dict[str, object]], object]
    params: tuple[Param, ...] = field(default=())


def _type_ok(kind: str, value: object) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list)
    return isinstance(value, dict)


def check_arguments(params: tuple[Param, ...], arguments: Mapping[str, object]) -> None:
    """QAPI's checks, in its order: unexpected members, types, then missing ones."""
    known = {p.name: p for p in params}
    for key, value in arguments.items():
        param = known.get(key)
        if param is None:
            raise CommandError(f"Parameter '{key}' is unexpected")
        if not _type_ok(param.type, value):
            raise CommandError(
                f"Invalid parameter type for '{key}', expected: {_TYPE_NAMES[param.type]}")
    for param in params:
        if param.required and param.name not in arguments:
            raise CommandError(f"Parameter '{param.name}' is missing")


class QmpCommands:
    """Command table over one VM; ``hmp`` runs ``human-monitor-command`` lines."""

    def __init__(self, control: VmControl, hmp: Callable[[str], str] | None = None) -> None:
        self.control = control
        self.hmp = hmp
        self.table: dict[str, Command] = {}
        P = Param
        for name, handler, params in [
            ("qmp_capabilities", None, (P("enable", "array", False),)),
            ("query-commands", self._query_commands, ()),
            ("query-version", self._query_version, ()),
            ("query-status", lambda a: self.control.query_status(), ()),
            ("query-migrate", lambda a: self.control.query_migrate(), ()),
            ("query-migrate-capabilities", lambda a: self.control.query_capabilities(), ()),
            ("migrate-set-capabilities", self._set_capabilities,
             (P("capabilities", "array"),)),
            ("query-migrate-parameters", lambda a: self.control.query_parameters(), ()),
            ("migrate-set-parameters", self._set_parameters,
             (P("xbzrle-cache-size", "int", False), P("max-bandwidth", "int", False),
              P("downtime-limit", "int", False),
              *(P(name.replace("_", "-"), "bool" if kind is bool else "int", False)
                for name, (kind, _) in CONVERGE_PARAMETERS.items()),
              P("tls-creds", "str", False), P("tls-hostname", "str", False),
              P("tls-authz", "str", False), P("x-handshake-timeout", "int", False),
              P("x-stall-timeout", "int", False))),
            ("migrate-set-cache-size", self._set_cache_size, (P("value", "int"),)),
            ("query-migrate-cache-size", lambda a: self.control.cache_size(), ()),
            ("migrate_set_speed", self._set_speed, (P("value", "int"),)),
            ("migrate_set_downtime", self._set_downtime, (P("value", "number"),)),
            ("migrate", self._migrate,
             (P("uri", "str"), P("blk", "bool", False), P("inc", "bool", False),
              P("detach", "bool", False), P("resume", "bool", False))),
            ("migrate-incoming", self._migrate_incoming, (P("uri", "str"),)),
            ("migrate_cancel", self._migrate_cancel, ()),
            ("stop", self._stop, ()),
            ("cont", self._cont, ()),
            ("quit", self._quit, ()),
            ("pmemsave", self._pmemsave,
             (P("val", "int"), P("size", "int"), P("filename", "str"),
              P("cpu-index", "int", False))),
            ("human-monitor-command", self._human_monitor_command,
             (P("command-line", "str"), P("cpu-index", "int", False))),
        ]:
            self.table[name] = Command(name, handler or (lambda a: {}), params)

    def lookup(self, name: str) -> Command:
        command = self.table.get(name)
        if command is None:
            raise CommandError(f"The command {name} has not been found", "CommandNotFound")
        return command

    def execute(self, name: str, arguments: Mapping[str, object]) -> object:
        command = self.lookup(name)
        check_arguments(command.params, arguments)
        try:
            return command.handler(dict(arguments))
        except XbzrleError:
            raise  # the session reports it with errors.qmp_class()
        except OSError as exc:
            raise CommandError(str(exc)) from None
        except Exception as exc:  # a bug: tell the client instead of dropping it
            log.exception("QMP command %s failed", name)
            raise CommandError(f"internal error in {name}: {exc!r}") from None

    # -- handlers -------------------------------------------------------------------
    def _query_commands(self, args: dict[str, object]) -> list[dict[str, str]]:
        return [{"name": name} for name in self.table]

    def _query_version(self, args: dict[str, object]) -> dict[str, object]:
        return self.control.query_version()

    def _set_capabilities(self, args: dict[str, object]) -> dict[str, object]:
        wanted: list[tuple[str, bool]] = []
        # check_arguments has made it a list (the parameter's type is "array")
        for item in cast(list[object], args["capabilities"]):
            if not isinstance(item, dict):
                raise CommandError(
                    "Invalid parameter type for 'capabilities[0]', expected: object")
            check_arguments((Param("capability", "str"), Param("state", "bool")), item)
            wanted.append((item["capability"], item["state"]))
        self.control.set_capabilities(wanted)
        return {}

    def _set_parameters(self, args: dict[str, object]) -> dict[str, object]:
        self.control.set_parameters(**args)
        return {}

    def _set_cache_size(self, args: dict[str, object]) -> dict[str, object]:
        self.control.set_cache_size(args["value"])
        return {}

    def _set_speed(self, args: dict[str, object]) -> dict[str, object]:
        self.control.set_speed(args["value"])
        return {}

    def _set_downtime(self, args: dict[str, object]) -> dict[str, object]:
        self.control.set_downtime(args["value"])
        return {}

    def _migrate(self, args: dict[str, object]) -> dict[str, object]:
        if args.get("blk") or args.get("inc"):
            raise CommandError("Block migration is not supported: this VM has no disks")
        if args.get("resume"):
            raise CommandError("Postcopy recovery is not supported")
        self.control.migrate(cast(str, args["uri"]))  # check_arguments: a str
        return {}

    def _migrate_incoming(self, args: dict[str, object]) -> dict[str, object]:
        self.control.migrate_incoming(cast(str, args["uri"]))  # check_arguments: a str
        return {}

    def _migrate_cancel(self, args: dict[str, object]) -> dict[str, object]:
        self.control.cancel()
        return {}

    def _stop(self, args: dict[str, object]) -> dict[str, object]:
        self.control.stop()
        return {}

    def _cont(self, args: dict[str, object]) -> dict[str, object]:
        self.control.cont()
        return {}

    def _quit(self, args: dict[str, object]) -> dict[str, object]:
        self.control.request_quit()
        return {}

    def _pmemsave(self, args: dict[str, object]) -> dict[str, object]:
        # check_arguments has checked the types: int, int, str
        self.control.pmemsave(cast(int, args["val"]), cast(int, args["size"]),
                              cast(str, args["filename"]))
        return {}

    def _human_monitor_command(self, args: dict[str, object]) -> str:
        if self.hmp is None:
            raise CommandError("The human monitor is not available here")
        return self.hmp(args["command-line"])  # type: ignore[arg-type]
