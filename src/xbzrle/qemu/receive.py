"""A memory-capture destination for a live QEMU source: listen, read to EOF, extract.

QEMU's precopy source expects nothing back unless a return path was
negotiated (postcopy and friends), so we only read until it closes the
connection, and never answer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..errors import ParameterError, StreamError, TransportError
from ..stream.parser import HEADER_SIZE, header_problem
from .extract import StreamExtractor
from .ramfiles import DEFAULT_MAX_RAM

if TYPE_CHECKING:
    from ..transport import Admission, Listener
    from ..transport.tls import TlsObject

# The transport (sockets, TLS) is imported when receive runs: `xbzrle extract`,
# which shares this package, starts without it.


def listening_address(listener: Listener) -> str:
    """The URI the source should use, with the real port when 0 was asked for."""
    from ..transport.uri import MigrationURI

    uri = listener.uri
    if uri.scheme == "tcp":
        return str(MigrationURI("tcp", host=uri.host or "0.0.0.0", port=listener.port))
    return str(uri)


def admission_for(objects: Iterable[str | TlsObject] = (), tls_creds: str = "",
                  tls_authz: str = "", handshake_timeout: float = 10.0,
                  on_refused: Callable[[str], None] | None = None) -> Admission:
    """What ``receive`` demands of a connection: QEMU's TLS objects picked by id, a timeout."""
    from ..transport import Admission
    from ..transport.tls import AuthzList, TlsCredsX509, object_from_options

    by_id: dict[str, TlsObject] = {}
    for spec in objects:
        obj = object_from_options(spec) if isinstance(spec, str) else spec
        if obj.id in by_id:
            raise ParameterError(f"an object with id '{obj.id}' already exists")
        by_id[obj.id] = obj
    creds = by_id.get(tls_creds) if tls_creds else None
    if tls_creds and not (isinstance(creds, TlsCredsX509) and creds.endpoint == "server"):
        raise ParameterError(f"No TLS credentials with id '{tls_creds}' and endpoint=server")
    authz = by_id.get(tls_authz) if tls_authz else None
    if tls_authz and not isinstance(authz, AuthzList):
        raise ParameterError(f"No authorization object with id '{tls_authz}'")
    if authz is not None and creds is None:
        raise ParameterError("tls-authz needs tls-creds: only a TLS client has an identity")
    return Admission(timeout=handshake_timeout or None,
                     # after the checks above creds is None or server X.509 credentials,
                     # authz None or an AuthzList: the isinstance tests only say so
                     tls=creds.context() if isinstance(creds, TlsCredsX509) else None,
                     authz=authz if isinstance(authz, AuthzList) else None,
                     prefix_size=HEADER_SIZE, check=header_problem, on_refused=on_refused)


def receive(uri: str, out_dir: str | os.PathLike[str], *, max_ram: int = DEFAULT_MAX_RAM,
            on_listening: Callable[[str], None] | None = None,
            on_progress: Callable[[int], None] | None = None,
            objects: Iterable[str | TlsObject] = (), tls_creds: str = "",
            tls_authz: str = "", handshake_timeout: float = 10.0,
            on_refused: Callable[[str], None] | None = None,
            checksum: str = "ram-digest") -> dict[str, Any]:
    """Accept one incoming migration on ``uri`` and extract it into ``out_dir``.

    ``on_listening`` gets the address once bound (before the source may connect);
    ``on_progress`` gets the number of bytes received so far, after each read.
    ``objects`` are QEMU ``--object`` specs; ``tls_creds``/``tls_authz`` pick
    from them as the migration parameters do.  A connection that fails the
    TLS handshake or authorization, or sends no stream header within
    ``handshake_timeout`` seconds, is refused (``on_refused`` hears why) and
    the listener waits on.  Returns the manifest; raises
    IncompleteStreamError if the RAM is partial.
    """
    from ..transport import Listener
    from ..transport.readahead import stream_reader
    from ..transport.uri import parse_uri

    parsed = parse_uri(uri)
    if parsed.scheme == "file":
        raise ParameterError("receive reads a live migration: use 'xbzrle extract FILE' for files")
    admission = admission_for(objects, tls_creds, tls_authz, handshake_timeout, on_refused)
    if admission.tls is not None and not parsed.is_socket:
        raise ParameterError(f"TLS needs a socket migration (tcp: or unix:), not {parsed.scheme}:")
    extractor = StreamExtractor(out_dir, max_ram=max_ram, source=uri, checksum=checksum)
    listener = Listener(parsed)
    try:
        if on_listening is not None:
            on_listening(listening_address(listener))
        channel = listener.accept(admission)
    except BaseException:
        listener.close()
        extractor.abort()
        raise
    failure: Exception | None = None
    try:
        received = 0
        with stream_reader(channel) as reader:
            while view := reader.read():
                extractor.feed(view)
                received += len(view)
                if on_progress is not None:
                    on_progress(received)
        if not extractor.ram_ended:  # why: the source vanished, or the exec: command failed
            failure = TransportError(f"the migration stream ended at offset {received} before "
                                     f"its RAM was complete: {channel.input_ended_early()}")
    except (StreamError, TransportError) as exc:
        failure = exc
    except BaseException:
        channel.abort()
        extractor.abort()
        raise
    finally:
        channel.close()  # an incoming channel's close decides nothing (see FileChannel)
        listener.close()
    return extractor.finish(failure)
