"""RAM digests that prove two guests hold the same memory, at memory speed.

A digest is BLAKE2b over the (page index, 64-bit page hash) pairs of every
non-zero page, computed by the compiled core (two threads, never-touched
pages skipped without reading them).  Zero pages contribute nothing, so a
page that is zero because it was never written and one that was written with
zeros digest alike, as they must: both read as zero.  The page hash is not
cryptographic; the digest exists to catch a migration that lost a dirty page
or garbled one, not to resist an adversary.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .._backend import load_core

_core = load_core()


def ram_digest(ram: Any) -> str:
    """Hex digest of a buffer of whole 4 KiB pages."""
    with memoryview(ram) as view:
        size = view.nbytes
        pairs = _core.page_hashes(view)
    return hashlib.blake2b(size.to_bytes(8, "little") + pairs, digest_size=32).hexdigest()
