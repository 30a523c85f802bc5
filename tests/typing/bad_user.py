"""Mistakes ``mypy --strict`` must catch: proof the package's types are real, not Any."""

from __future__ import annotations

import xbzrle
from xbzrle.migration import MigrationManager

delta: bytes = xbzrle.encode(b"a", b"b")  # error: may be None (overflow)
cache = xbzrle.PageCache("64M")  # error: a size in bytes
hit: bytes = cache.lookup(0)  # error: None on a miss
xbzrle.decode_pages(b"", [0], b"readonly")  # error: bytes are not writable
status: int = MigrationManager.query  # error: a method, not an int
