"""Which implementation of each component is live.

``XBZRLE_BACKEND`` picks the codec's and the page cache's: ``c`` (default,
the compiled core) or ``python`` (their pure-Python twins, about a hundred
times slower).  Everything else that touches guest RAM (the guest, its dirty
logs and workloads, the save and load loops, the RAM digest) is compiled
only: threads writing RAM and kernel dirty logs need C, and a Python page
loop would be a silent thousandfold slowdown.  :func:`components` says which
is which; a missing compiled core is an import error on first use, never a
silent slowdown.
"""

from __future__ import annotations

import os
from types import ModuleType

NAMES = ("c", "python")
NAME = os.environ.get("XBZRLE_BACKEND", "c").strip().lower() or "c"
if NAME not in NAMES:
    raise ImportError(f"XBZRLE_BACKEND={NAME!r}: expected one of {', '.join(NAMES)}")


def load_core() -> ModuleType:
    """Import the compiled core or fail with a message saying what to do."""
    try:
        from . import _core
    except ImportError as exc:  # pragma: no cover - only on a broken install
        raise ImportError(
            "xbzrle's compiled core (xbzrle._core) is missing or broken: reinstall with "
            "'pip install .' (needs gcc), or set XBZRLE_BACKEND=python to use the slow "
            "pure-Python reference on purpose"
        ) from exc
    return _core


SWITCHABLE = ("codec", "cache")
"""The components ``XBZRLE_BACKEND`` switches; the rest are always compiled."""
COMPILED_ONLY = ("guest", "save-loop", "load-loop", "digest")


def components() -> dict[str, str]:
    """Each component's live implementation, e.g. ``{"codec": "c/avx2", ...}``.

    ``codec`` names the SIMD path the compiled encoder took.  Loads the core
    for every compiled-only component (they have no twin).
    """
    codec = describe()
    live = {"codec": codec, "cache": NAME}
    live.update({name: "c" for name in COMPILED_ONLY})
    return live


def describe() -> str:
    """The codec's live implementation: ``"c/avx2"`` (with its SIMD path) or ``"python"``."""
    if NAME == "python":
        return "python"
    return f"c/{load_core().simd_path()}"
