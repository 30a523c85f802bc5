"""The readable pure-Python twin of the compiled page cache.

Same behaviour as ``xbzrle._core.PageCache``, slot for slot and counter for
counter; the tests hold the compiled type to it (and to a dict model).
``XBZRLE_BACKEND=python`` makes it the live ``PageCache``.  See
``docs/cache.md`` for the design.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING

from ..errors import ParameterError

if TYPE_CHECKING:  # collections.abc.Buffer is 3.12+: the buffers the compiled core takes
    from .._core import Buffer

__all__ = ["EMPTY", "MAX_PAGE_SIZE", "MIN_PAGE_SIZE", "PythonPageCache", "slots_for_size"]

EMPTY = 2**64 - 1
"""Address marking a free slot (never page aligned, so never a real page)."""
MIN_PAGE_SIZE = 512
MAX_PAGE_SIZE = 16384
_METADATA_PER_SLOT = 16  # address + age, 8 bytes each


def _as_u64(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ParameterError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 <= value <= EMPTY:
        raise ParameterError(f"{what} must be between 0 and 2**64-1, got {value!r}")
    return value


def _valid_page_size(value: object) -> int:
    page_size = _as_u64(value, "page_size")
    if not MIN_PAGE_SIZE <= page_size <= MAX_PAGE_SIZE or page_size & (page_size - 1):
        raise ParameterError(
            f"page_size must be a power of two between {MIN_PAGE_SIZE} and {MAX_PAGE_SIZE}, "
            f"got {value!r}"
        )
    return page_size


def slots_for_size(size_bytes: object, page_size: int) -> int:
    """Whole pages in ``size_bytes``, rounded down to a power of two."""
    if isinstance(size_bytes, int) and not isinstance(size_bytes, bool):
        if size_bytes < page_size:
            raise ParameterError(
                f"size_bytes must be at least one page ({page_size} bytes), got {size_bytes!r}"
            )
    pages = _as_u64(size_bytes, "size_bytes") // page_size
    return 1 << (pages.bit_length() - 1)


class PythonPageCache:
    """Pure-Python page cache with the compiled type's exact behaviour.

    Page data lives in one ``bytearray`` slab; addresses and ages in two
    ``array('Q')``, so a cache costs three objects however many pages it holds.
    """

    def __init__(self, size_bytes: int, page_size: int = 4096, lifetime: int = 2) -> None:
        self._page_size = _valid_page_size(page_size)
        self._lifetime = _as_u64(lifetime, "lifetime")
        self._page_shift = self._page_size.bit_length() - 1
        self.generation = 0
        self._hits = self._misses = self._inserts = self._refused = 0
        self._allocate(slots_for_size(size_bytes, self._page_size))

    def _allocate(self, nslots: int) -> None:
        try:
            slab = bytearray(nslots * self._page_size)
        except OverflowError:
            raise MemoryError(
                f"cannot allocate a {nslots * self._page_size}-byte page cache"
            ) from None
        addrs, ages = array("Q", [EMPTY]) * nslots, array("Q", [0]) * nslots
        self._slab, self._addrs, self._ages, self._nslots = slab, addrs, ages, nslots
        self._items = 0

    # -- properties --------------------------------------------------------

    @property
    def size(self) -> int:
        return self._nslots * self._page_size

    @property
    def slots(self) -> int:
        return self._nslots

    @property
    def page_size(self) -> int:
        return self._page_size

    @property
    def lifetime(self) -> int:
        return self._lifetime

    @property
    def generation(self) -> int:
        """Current dirty-sync round; the migration bumps it at every sync."""
        return self._generation

    @generation.setter
    def generation(self, value: int) -> None:
        self._generation = _as_u64(value, "generation")

    @property
    def items(self) -> int:
        return self._items

    @property
    def hits(self) -> int:
        return self._hits

    @property
    def misses(self) -> int:
        return self._misses

    @property
    def inserts(self) -> int:
        return self._inserts

    @property
    def refused(self) -> int:
        return self._refused

    @property
    def memory_used(self) -> int:
        return self._nslots * (self._page_size + _METADATA_PER_SLOT)

    def stats(self) -> dict[str, int]:
        return {
            name: getattr(self, name)
            for name in ("size", "slots", "page_size", "lifetime", "generation", "items",
                         "hits", "misses", "inserts", "refused", "memory_used")
        }

    def __repr__(self) -> str:
        return (
            f"<PageCache {self._nslots} slots x {self._page_size} bytes, {self._items} items, "
            f"lifetime {self._lifetime}, generation {self._generation}>"
        )

    # -- operations --------------------------------------------------------

    def _slot(self, addr: object) -> tuple[int, int]:
        """(address, slot) for a page-aligned address."""
        value = _as_u64(addr, "address")
        if value & (self._page_size - 1):
            raise ParameterError(
                f"address {value:#x} is not aligned to the {self._page_size}-byte page size"
            )
        return value, (value >> self._page_shift) & (self._nslots - 1)

    def _page(self, data: Buffer) -> memoryview:
        view = memoryview(data).cast("B")
        if view.nbytes != self._page_size:
            raise ParameterError(
                f"data must be exactly one page ({self._page_size} bytes), got {view.nbytes}"
            )
        return view

    def _still_young(self, age: int) -> bool:
        """``age + lifetime > generation``; lifetime 0 never protects."""
        return self._lifetime > 0 and age + self._lifetime > self._generation

    def __contains__(self, addr: object) -> bool:
        value, slot = self._slot(addr)
        return self._addrs[slot] == value

    def __len__(self) -> int:
        return self._items

    def lookup(self, addr: int) -> bytes | None:
        """A copy of the cached page, refreshing its age; None on a miss."""
        value, slot = self._slot(addr)
        if self._addrs[slot] != value:
            self._misses += 1
            return None
        self._hits += 1
        self._ages[slot] = self._generation
        start = slot * self._page_size
        return bytes(self._slab[start:start + self._page_size])

    def insert(self, addr: int, data: Buffer) -> bool:
        """Store a page; False when aging refuses to evict the slot's occupant."""
        value, slot = self._slot(addr)
        page = self._page(data)
        occupant = self._addrs[slot]
        if occupant == EMPTY:
            self._items += 1
        elif occupant != value and self._still_young(self._ages[slot]):
            self._refused += 1
            return False
        self._store(slot, value, self._generation, page)
        self._inserts += 1
        return True

    def update(self, addr: int, data: Buffer) -> None:
        """Overwrite a cached page in place (a use: its age is refreshed)."""
        value, slot = self._slot(addr)
        page = self._page(data)
        if self._addrs[slot] != value:
            raise KeyError(addr)
        self._store(slot, value, self._generation, page)

    def _store(self, slot: int, addr: int, age: int, page: bytearray | memoryview) -> None:
        start = slot * self._page_size
        self._slab[start:start + self._page_size] = page
        self._addrs[slot] = addr
        self._ages[slot] = age

    def resize(self, size_bytes: int) -> int:
        """Change capacity keeping entries; on a collision the most recently
        used page wins, the one from the earlier old slot on a tie."""
        nslots = slots_for_size(size_bytes, self._page_size)
        if nslots == self._nslots:
            return nslots
        old_slab, old_addrs, old_ages = self._slab, self._addrs, self._ages
        self._allocate(nslots)
        for old, addr in enumerate(old_addrs):
            if addr == EMPTY:
                continue
            slot = (addr >> self._page_shift) & (nslots - 1)
            if self._addrs[slot] == EMPTY:
                self._items += 1
            elif self._ages[slot] >= old_ages[old]:
                continue
            start = old * self._page_size
            self._store(slot, addr, old_ages[old], old_slab[start:start + self._page_size])
        return nslots

    def clear(self) -> None:
        """Forget every page; counters stay."""
        self._addrs = array("Q", [EMPTY]) * self._nslots
        self._ages = array("Q", [0]) * self._nslots
        self._items = 0
