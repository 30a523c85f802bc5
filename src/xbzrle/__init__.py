"""xbzrle: live migration of guest memory with XBZRLE delta compression.

Byte-compatible with QEMU's XBZRLE format and migration stream; a compiled
core does the per-byte and per-page work, Python orchestrates.
"""

from __future__ import annotations

from . import codec
from .cache import PageCache
from .codec import (
    decode,
    decode_into,
    decode_pages,
    encode,
    encode_pages,
    uleb128_decode,
    uleb128_encode,
)
from .errors import (
    DecodeError,
    MigrationStateError,
    ParameterError,
    StreamError,
    TransportError,
    XbzrleError,
)

__version__ = "0.1.0"

__all__ = [
    "backend",
    "decode",
    "decode_into",
    "decode_pages",
    "encode",
    "encode_pages",
    "uleb128_decode",
    "uleb128_encode",
    "DecodeError",
    "Guest",
    "MigrationStateError",
    "PageCache",
    "ParameterError",
    "StreamError",
    "TransportError",
    "XbzrleError",
    "__version__",
]


def __getattr__(name: str) -> object:
    # ``backend`` is computed on access: the SIMD path may change at run time.
    if name == "backend":
        return codec.current_backend()
    if name == "Guest":  # loads the compiled core: only when asked for
        from .guest import Guest

        return Guest
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
