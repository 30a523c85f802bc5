"""A memory-capture destination for a live QEMU source: listen, read to EOF, extract.

QEMU's precopy source expects nothing back unless a return path was
negotiated (postcopy and friends), so we only read until it closes the
connection, and never answer.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..errors import ParameterError, StreamError, TransportError
from ..transport import Listener
from ..transport.uri import MigrationURI, parse_uri
from .extract import StreamExtractor
from .ramfiles import DEFAULT_MAX_RAM

READ_SIZE = 1 << 20


def listening_address(listener: Listener) -> str:
    """The URI the source should use, with the real port when 0 was asked for."""
    uri = listener.uri
    if uri.scheme == "tcp":
        return str(MigrationURI("tcp", host=uri.host or "0.0.0.0", port=listener.port))
    return str(uri)


def receive(uri: str, out_dir: str | os.PathLike[str], *, max_ram: int = DEFAULT_MAX_RAM,
            on_listening: Callable[[str], None] | None = None,
            on_progress: Callable[[int], None] | None = None,
            checksum: str = "sha256") -> dict[str, Any]:
    """Accept one incoming migration on ``uri`` and extract it into ``out_dir``.

    ``on_listening`` gets the address once bound (before the source may connect);
    ``on_progress`` gets the number of bytes received so far, after each read.
    Returns the manifest; raises IncompleteStreamError if the RAM is partial.
    """
    parsed = parse_uri(uri)
    if parsed.scheme == "file":
        raise ParameterError("receive reads a live migration: use 'xbzrle extract FILE' for files")
    extractor = StreamExtractor(out_dir, max_ram=max_ram, source=uri, checksum=checksum)
    listener = Listener(parsed)
    try:
        if on_listening is not None:
            on_listening(listening_address(listener))
        channel = listener.accept()
    except BaseException:
        listener.close()
        extractor.abort()
        raise
    failure: Exception | None = None
    try:
        buf = bytearray(READ_SIZE)
        view = memoryview(buf)
        received = 0
        while (n := channel.readinto(view)) > 0:
            extractor.feed(view[:n])
            received += n
            if on_progress is not None:
                on_progress(received)
    except (StreamError, TransportError) as exc:
        failure = exc
    except BaseException:
        channel.abort()
        extractor.abort()
        raise
    finally:
        try:
            channel.close()
        except TransportError as exc:  # an exec: command that failed
            failure = failure or exc
        listener.close()
    return extractor.finish(failure)
