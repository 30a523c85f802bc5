"""xbzrle: live migration of guest memory with XBZRLE delta compression.

Byte-compatible with QEMU's XBZRLE format and migration stream; a compiled
core does the per-byte and per-page work, Python orchestrates.
"""

from __future__ import annotations

from .errors import (
    DecodeError,
    MigrationStateError,
    ParameterError,
    StreamError,
    TransportError,
    XbzrleError,
)
from .guest import Guest

__version__ = "0.1.0"

__all__ = [
    "DecodeError",
    "Guest",
    "MigrationStateError",
    "ParameterError",
    "StreamError",
    "TransportError",
    "XbzrleError",
    "__version__",
]
