"""Where a monitor listens: ``stdio``, ``unix:PATH`` or ``tcp:HOST:PORT``.

QEMU's chardev options (``server``, ``nowait``, ``server=on``, ``wait=off``)
are accepted and ignored: our monitors always listen and never wait.  A TCP
monitor without a host listens on loopback, since anyone who reaches it
controls the VM.  Pure parsing.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ParameterError

_IGNORED_OPTIONS = {"server", "nowait", "server=on", "wait=off", "server=yes", "wait=no",
                    "telnet=off"}


@dataclass(frozen=True)
class Endpoint:
    kind: str  # "stdio", "unix" or "tcp"
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.kind == "tcp":
            host = f"[{self.host}]" if ":" in self.host else self.host
            return f"tcp:{host}:{self.port}"
        if self.kind == "unix":
            return f"unix:{self.path}"
        return self.kind


def parse_endpoint(text: str) -> Endpoint:
    spec, *options = str(text).split(",")
    for option in options:
        if option not in _IGNORED_OPTIONS:
            raise ParameterError(f"monitor {text!r}: unsupported option {option!r}")
    if spec == "stdio":
        return Endpoint("stdio")
    kind, sep, rest = spec.partition(":")
    if kind == "unix" and sep and rest:
        return Endpoint("unix", path=rest)
    if kind == "tcp" and sep:
        if rest.startswith("["):
            host, bracket, tail = rest[1:].partition("]")
            port_text = tail[1:] if bracket and tail.startswith(":") else ""
        else:
            host, _, port_text = rest.rpartition(":")
        try:
            port = int(port_text)
        except ValueError:
            raise ParameterError(f"monitor {text!r}: expected tcp:HOST:PORT") from None
        if not 0 <= port <= 65535:
            raise ParameterError(f"monitor {text!r}: port out of range")
        return Endpoint("tcp", host=host or "127.0.0.1", port=port)
    raise ParameterError(
        f"monitor {text!r}: expected stdio, unix:PATH or tcp:HOST:PORT")
