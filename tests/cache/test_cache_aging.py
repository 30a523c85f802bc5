"""Aging on the seed's load generator: the reason the lifetime exists.

The seed's generator increments every 1024th byte of a 16 MiB buffer, forever,
so each dirty-sync round dirties all 4096 of its pages.  With a cache of half
that size every slot is wanted by two pages.  Always-overwrite (lifetime 0)
makes them evict each other every round, so nothing ever hits; aging keeps one
of each pair and half the lookups hit.
"""

from __future__ import annotations

import pytest

from xbzrle._core import PageCache as CPageCache
from xbzrle.cache import PythonPageCache

PAGE = 4096
LOADGEN_BYTES = 4096 * 4096
LOADGEN_STRIDE = 1024


def loadgen_dirty_pages(base: int = 0) -> list[int]:
    """Page addresses one pass of the seed's loop dirties, in write order."""
    written = range(0, LOADGEN_BYTES, LOADGEN_STRIDE)
    return list(dict.fromkeys(base + offset // PAGE * PAGE for offset in written))


def xbzrle_miss_rate(cache, rounds: int) -> float:
    """Drive the cache the way the save loop does and return misses / lookups."""
    dirty = loadgen_dirty_pages(base=1 << 30)
    data = bytes(PAGE)
    for _ in range(rounds):
        cache.generation += 1  # a dirty sync starts each round
        for addr in dirty:
            if cache.lookup(addr) is None:
                cache.insert(addr, data)
            else:
                cache.update(addr, data)
    return cache.misses / (cache.hits + cache.misses)


def test_loadgen_dirties_every_page_of_its_buffer():
    pages = loadgen_dirty_pages()
    assert len(pages) == 4096 and pages[:2] == [0, PAGE] and pages[-1] == LOADGEN_BYTES - PAGE


@pytest.mark.parametrize("cls", [CPageCache, PythonPageCache], ids=["c", "python"])
def test_aging_lowers_the_miss_rate_on_the_seed_load_generator(cls):
    half_the_working_set = LOADGEN_BYTES // 2
    rates = {
        lifetime: xbzrle_miss_rate(cls(half_the_working_set, PAGE, lifetime), rounds=10)
        for lifetime in (0, 1, 2)
    }
    print(f"\n{cls.__name__}: miss rate by lifetime over 10 rounds: "
          + ", ".join(f"{lifetime}: {rate:.1%}" for lifetime, rate in rates.items()))
    assert rates[2] < rates[0]
    assert rates[0] == 1.0  # every page evicts its partner before it comes round again
