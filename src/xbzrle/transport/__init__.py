"""Transports for the migration stream: URIs, channels and the listener.

Shared by the migration source and destination and by ``xbzrle receive``;
it knows nothing above it (no stream, no guest).  ``uri`` is pure parsing
and imports without the compiled core.
"""

from __future__ import annotations

from .channels import Channel, FileChannel, SocketChannel
from .connect import Admission, Listener, Refused, connect
from .uri import SCHEMES, MigrationURI, parse_uri

__all__ = [
    "SCHEMES",
    "Admission",
    "Channel",
    "FileChannel",
    "Listener",
    "MigrationURI",
    "Refused",
    "SocketChannel",
    "connect",
    "parse_uri",
]
