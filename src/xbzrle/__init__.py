"""xbzrle: live migration of guest memory with XBZRLE delta compression.

Byte-compatible with QEMU's XBZRLE format and migration stream; a compiled
core does the per-byte and per-page work, Python orchestrates.

The root is lazy: ``import xbzrle`` (and ``import xbzrle.stream``,
``xbzrle.migration.params``, ``xbzrle.transport.uri``) loads no compiled
code.  The codec names below, ``PageCache`` and ``Guest`` load the core on
first use, and fail then if it is missing (unless ``XBZRLE_BACKEND=python``
picks the pure-Python twins of the codec and the cache).
"""

from __future__ import annotations

import logging
from importlib import import_module
from typing import TYPE_CHECKING

from . import _backend  # noqa: F401  (refuses a bad XBZRLE_BACKEND at import)
from .errors import (
    DecodeError,
    MigrationStateError,
    ParameterError,
    StreamError,
    TransportError,
    UsageError,
    XbzrleError,
)

__version__ = "0.1.0"

# A library never prints on its own: without a handler of the application's, the
# records of the "xbzrle" loggers go nowhere (the CLI adds one; see -v/-q).
logging.getLogger(__name__).addHandler(logging.NullHandler())

# name -> module that defines it; imported on first access (PEP 562).
_LAZY = {
    "codec": "xbzrle.codec",
    "decode": "xbzrle.codec",
    "decode_into": "xbzrle.codec",
    "decode_pages": "xbzrle.codec",
    "encode": "xbzrle.codec",
    "encode_pages": "xbzrle.codec",
    "uleb128_decode": "xbzrle.codec",
    "uleb128_encode": "xbzrle.codec",
    "PageCache": "xbzrle.cache",
    "Guest": "xbzrle.guest",
}

__all__ = [
    "backend",
    "backends",
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
    "UsageError",
    "XbzrleError",
    "__version__",
]

if TYPE_CHECKING:
    from . import codec  # noqa: F401
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
    from .guest import Guest


def __getattr__(name: str) -> object:
    if name == "backend":  # computed on access: the SIMD path may change at run time
        return _backend.describe()
    if name == "backends":  # every component's implementation, not just the codec's
        return _backend.components()
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    loaded = import_module(module)
    value = loaded if name == "codec" else getattr(loaded, name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
