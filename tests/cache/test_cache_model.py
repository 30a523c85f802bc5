"""The compiled cache, the Python twin and a dict model agree on random runs."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from xbzrle._core import PageCache as CPageCache
from xbzrle.cache import PythonPageCache

PAGE = 512
ADDRESSES = st.integers(0, 23).map(lambda number: number * PAGE)
SIZES = st.integers(PAGE, 12 * PAGE)
PAGES = st.one_of(
    st.integers(0, 255).map(lambda fill: bytes([fill]) * PAGE),
    st.binary(min_size=PAGE, max_size=PAGE),
)


class DictCache:
    """The cache's rules stated as plainly as possible: addr -> (data, age)."""

    def __init__(self, size_bytes: int, lifetime: int) -> None:
        self.slots = 1 << ((size_bytes // PAGE).bit_length() - 1)
        self.lifetime = lifetime
        self.generation = 0
        self.entries: dict[int, tuple[bytes, int]] = {}
        self.counters = dict.fromkeys(("hits", "misses", "inserts", "refused"), 0)

    def slot(self, addr: int, slots: int | None = None) -> int:
        return addr // PAGE % (slots or self.slots)

    def occupant(self, addr: int) -> int | None:
        return next((a for a in self.entries if self.slot(a) == self.slot(addr)), None)

    def lookup(self, addr: int) -> bytes | None:
        if addr not in self.entries:
            self.counters["misses"] += 1
            return None
        self.counters["hits"] += 1
        data, _ = self.entries[addr]
        self.entries[addr] = (data, self.generation)
        return data

    def insert(self, addr: int, data: bytes) -> bool:
        occupant = self.occupant(addr)
        if occupant not in (None, addr):
            age = self.entries[occupant][1]
            if self.lifetime and age + self.lifetime > self.generation:
                self.counters["refused"] += 1
                return False
            del self.entries[occupant]
        self.entries[addr] = (data, self.generation)
        self.counters["inserts"] += 1
        return True

    def update(self, addr: int, data: bytes) -> None:
        if addr not in self.entries:
            raise KeyError(addr)
        self.entries[addr] = (data, self.generation)

    def resize(self, size_bytes: int) -> int:
        slots = 1 << ((size_bytes // PAGE).bit_length() - 1)
        if slots != self.slots:
            # Winner per new slot: highest age, then lowest old slot.
            ranked = sorted(self.entries.items(), key=lambda e: (-e[1][1], self.slot(e[0])))
            kept: dict[int, tuple[bytes, int]] = {}
            for addr, entry in ranked:
                if all(self.slot(a, slots) != self.slot(addr, slots) for a in kept):
                    kept[addr] = entry
            self.entries, self.slots = kept, slots
        return slots


class CacheComparison(RuleBasedStateMachine):
    @initialize(size_bytes=SIZES, lifetime=st.sampled_from([0, 1, 2, 2, 3]))
    def create(self, size_bytes, lifetime):
        self.model = DictCache(size_bytes, lifetime)
        self.caches = [cls(size_bytes, PAGE, lifetime) for cls in (CPageCache, PythonPageCache)]

    @rule(addr=ADDRESSES)
    def lookup(self, addr):
        expected = self.model.lookup(addr)
        assert [cache.lookup(addr) for cache in self.caches] == [expected] * 2

    @rule(addr=ADDRESSES, data=PAGES)
    def insert(self, addr, data):
        expected = self.model.insert(addr, data)
        assert [cache.insert(addr, data) for cache in self.caches] == [expected] * 2

    @precondition(lambda self: self.model.entries)
    @rule(data=st.data())
    def lookup_cached(self, data):
        self.lookup(data.draw(st.sampled_from(sorted(self.model.entries))))

    @precondition(lambda self: self.model.entries)
    @rule(data=st.data(), fill=st.integers(0, 255))
    def insert_colliding(self, data, fill):
        """Aim at an occupied slot: where aging decides."""
        occupant = data.draw(st.sampled_from(sorted(self.model.entries)))
        laps = data.draw(st.integers(1, 3))
        self.insert(occupant + laps * self.model.slots * PAGE, bytes([fill]) * PAGE)

    @rule(addr=ADDRESSES, data=PAGES)
    def update(self, addr, data):
        present = addr in self.model.entries
        if present:
            self.model.update(addr, data)
        for cache in self.caches:
            if present:
                cache.update(addr, data)
            else:
                with pytest.raises(KeyError):
                    cache.update(addr, data)

    @rule(step=st.integers(0, 2))
    def next_generation(self, step):
        self.model.generation += step
        for cache in self.caches:
            cache.generation += step

    @precondition(lambda self: self.model.generation > 0)
    @rule(data=st.data())
    def rewind_generation(self, data):
        generation = data.draw(st.integers(0, self.model.generation))
        self.model.generation = generation
        for cache in self.caches:
            cache.generation = generation

    @rule(size_bytes=SIZES)
    def resize(self, size_bytes):
        expected = self.model.resize(size_bytes)
        assert [cache.resize(size_bytes) for cache in self.caches] == [expected] * 2

    @rule()
    def clear(self):
        self.model.entries.clear()
        for cache in self.caches:
            cache.clear()

    @invariant()
    def same_contents_and_counters(self):
        model = self.model
        for cache in self.caches:
            assert cache.slots == model.slots and cache.generation == model.generation
            assert {name: getattr(cache, name) for name in model.counters} == model.counters
            assert len(cache) == cache.items == len(model.entries)
            # Colliding inserts walk ever higher addresses: probe every address the
            # model holds as well as the low range the other rules draw from.
            probe = set(range(0, 80 * PAGE, PAGE)) | set(model.entries)
            cached = {addr for addr in probe if addr in cache}
            assert cached == set(model.entries)


CacheComparison.TestCase.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None
)
TestCacheComparison = CacheComparison.TestCase
