"""The XBZRLE page cache: the previous copy of each page, to delta against.

A page's slot is its page number modulo the slot count (a power of two), so
pages ``slots * page_size`` bytes apart compete for one slot.  Every entry
remembers the dirty-sync *generation* it was last used in; an insert refuses
to evict an occupant used within the last ``lifetime`` generations, because a
page that keeps getting dirtied is worth more than the newcomer (QEMU's
measured miss rate on the seed's load generator fell from 98.7% to 48.6%).

``PageCache`` is the compiled type (``xbzrle._core.PageCache``) unless
``XBZRLE_BACKEND=python`` picks ``PythonPageCache``, the readable twin
(``cache/reference.py``) that the tests hold the compiled one to.  See ``docs/cache.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import _backend
from .reference import EMPTY, MAX_PAGE_SIZE, MIN_PAGE_SIZE, PythonPageCache, slots_for_size

__all__ = [
    "EMPTY", "MAX_PAGE_SIZE", "MIN_PAGE_SIZE", "PageCache", "PythonPageCache", "slots_for_size",
]

if TYPE_CHECKING:  # type checkers see the compiled type's stub (_core.pyi)
    from .._core import PageCache
elif _backend.NAME == "c":
    PageCache = _backend.load_core().PageCache
else:
    PageCache = PythonPageCache
