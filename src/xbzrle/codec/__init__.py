"""The XBZRLE codec, from the compiled core or from the pure-Python reference.

``XBZRLE_BACKEND`` picks the implementation once, at import (see
``_backend``); both stay reachable through ``implementations()`` so tests
can hold one against the other.  The compiled core also picks a SIMD path
at import: the best this CPU runs, or the one ``XBZRLE_SIMD`` names.

Signatures and behaviour are those of ``xbzrle.reference``, the spec.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from .. import _backend
from . import reference

MAX_PAGE_SIZE = reference.MAX_PAGE_SIZE


def implementations() -> dict[str, ModuleType]:
    """Every implementation usable here, by backend name ("c", "python")."""
    found: dict[str, ModuleType] = {}
    try:
        found["c"] = _backend.load_core()
    except ImportError:
        if _backend.NAME == "c":
            raise
    found["python"] = reference
    return found


_live: ModuleType = _backend.load_core() if _backend.NAME == "c" else reference


def current_backend() -> str:
    """The live implementation and SIMD path, e.g. "c/avx512bw" or "python"."""
    return _backend.describe()


if TYPE_CHECKING:  # type checkers see the compiled core's stub (_core.pyi)
    from .._core import (
        decode,
        decode_into,
        decode_pages,
        encode,
        encode_pages,
        is_zero,
        uleb128_decode,
        uleb128_encode,
    )
else:
    encode = _live.encode
    decode = _live.decode
    decode_into = _live.decode_into
    encode_pages = _live.encode_pages
    decode_pages = _live.decode_pages
    uleb128_encode = _live.uleb128_encode
    uleb128_decode = _live.uleb128_decode
    is_zero = _live.is_zero

__all__ = [
    "MAX_PAGE_SIZE",
    "current_backend",
    "decode",
    "decode_into",
    "decode_pages",
    "encode",
    "encode_pages",
    "implementations",
    "is_zero",
    "uleb128_decode",
    "uleb128_encode",
]
