"""Migration URIs: ``tcp:HOST:PORT``, ``unix:PATH``, ``file:PATH``, ``exec:COMMAND``.

Pure parsing, so a typo is reported before any socket is opened.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ParameterError

SCHEMES = ("tcp", "unix", "file", "exec")


@dataclass(frozen=True)
class MigrationURI:
    scheme: str
    host: str = ""
    port: int = 0
    path: str = ""  # unix socket or file path
    command: str = ""  # exec

    def __str__(self) -> str:
        if self.scheme == "tcp":
            host = f"[{self.host}]" if ":" in self.host else self.host
            return f"tcp:{host}:{self.port}"
        if self.scheme == "exec":
            return f"exec:{self.command}"
        return f"{self.scheme}:{self.path}"

    @property
    def is_socket(self) -> bool:
        return self.scheme in ("tcp", "unix")


def parse_uri(text: str) -> MigrationURI:
    scheme, sep, rest = str(text).partition(":")
    if not sep or scheme not in SCHEMES:
        raise ParameterError(
            f"unknown migration protocol in {text!r}: expected one of "
            + ", ".join(f"{s}:" for s in SCHEMES)
        )
    if not rest:
        raise ParameterError(f"migration URI {text!r} lacks its address")
    if scheme == "tcp":
        if rest.startswith("["):
            host, bracket, port_text = rest[1:].partition("]")
            if not bracket or not port_text.startswith(":"):
                raise ParameterError(f"bad tcp address {text!r}: expected tcp:[HOST]:PORT")
            port_text = port_text[1:]
        else:
            host, colon, port_text = rest.rpartition(":")
            if not colon:
                raise ParameterError(f"bad tcp address {text!r}: expected tcp:HOST:PORT")
        try:
            port = int(port_text)
        except ValueError:
            raise ParameterError(f"bad tcp port in {text!r}") from None
        if not 0 <= port <= 65535:
            raise ParameterError(f"tcp port out of range in {text!r}")
        return MigrationURI("tcp", host=host, port=port)
    if scheme == "exec":
        return MigrationURI("exec", command=rest)
    return MigrationURI(scheme, path=rest)
