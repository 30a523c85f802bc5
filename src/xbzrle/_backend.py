"""Which implementation of the codec and cache is live.

``XBZRLE_BACKEND`` picks it: ``c`` (default, the compiled core) or
``python`` (the pure-Python reference, about a hundred times slower).  A
missing compiled core is an import error, never a silent slowdown.
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
