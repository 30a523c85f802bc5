"""RAM digests that prove two guests hold the same memory, at memory speed.

A digest is BLAKE2b over the (page index, 64-bit page hash) pairs of every
non-zero page, computed by the compiled core (two threads, never-touched
pages skipped without reading them).  Zero pages contribute nothing, so a
page that is zero because it was never written and one that was written with
zeros digest alike, as they must: both read as zero.  The page hash is not
cryptographic; the digest exists to catch a migration that lost a dirty page
or garbled one, not to resist an adversary.

The same digest comes two ways.  :func:`ram_digest` reads all of the RAM.
:func:`table_digest` reads only a *digest table*, one 64-bit entry per page
(0 for a zero page, else the page's hash, never 0) that the save and load
loops keep as they send or write each page: 8 bytes per page instead of
4096, so the digest after the last round costs what the table costs.  The
pairs taken from a table are, by construction, those a full read of the
RAM it describes gives, so either side may use either way.
"""

from __future__ import annotations

import hashlib
import mmap
from typing import TYPE_CHECKING, Any

from .._backend import load_core
from ..sizes import PAGE_SIZE

if TYPE_CHECKING:  # type checkers see the compiled core's stub (_core.pyi)
    from .. import _core
else:
    _core = load_core()

#: One native uint64 per page (see digest_table).
DigestTable = mmap.mmap | bytearray


def _finish(size: int, pairs: bytes) -> str:
    hasher = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=32)
    hasher.update(pairs)  # not concatenated: 16 bytes a page would be copied once more
    return hasher.hexdigest()


def ram_digest(ram: Any) -> str:
    """Hex digest of a buffer of whole 4 KiB pages (reads all of it)."""
    with memoryview(ram) as view:
        size = view.nbytes
        pairs = _core.page_hashes(view)
    return _finish(size, pairs)


def digest_table(size: int) -> DigestTable:
    """A digest table for a block of ``size`` bytes, every page zero (2 MiB per GiB).

    Anonymous memory, so its pages cost memory only once an entry on them is
    written: a stream that announces a huge block and carries a few pages
    costs what it carries.
    """
    length = 8 * -(-size // PAGE_SIZE)
    return mmap.mmap(-1, length) if length else bytearray()


def table_digest(size: int, table: Any) -> str:
    """Hex digest of a block of ``size`` bytes described by its digest table.

    Equal to :func:`ram_digest` of the RAM whose pages the table's entries
    hash; costs the table's 8 bytes per page, not a read of the RAM.
    """
    return _finish(size, _core.table_pairs(table))
