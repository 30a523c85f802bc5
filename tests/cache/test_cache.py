"""PageCache behaviour, run against the compiled type and the Python twin."""

from __future__ import annotations

import array
import mmap

import numpy as np
import pytest

import xbzrle
from xbzrle import ParameterError
from xbzrle._core import PageCache as CPageCache
from xbzrle.cache import PythonPageCache

PAGE = 4096


@pytest.fixture(params=["c", "python"])
def PageCache(request):  # noqa: N802 - stands in for the class
    return {"c": CPageCache, "python": PythonPageCache}[request.param]


def page(fill: int, page_size: int = PAGE) -> bytes:
    return bytes([fill]) * page_size


def test_public_name_is_the_live_backend():
    assert xbzrle.PageCache in (CPageCache, PythonPageCache)
    assert "PageCache" in xbzrle.__all__


# -- sizing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("size_bytes", "slots"),
    [(PAGE, 1), (3 * PAGE, 2), (4 * PAGE, 4), (5 * PAGE + 100, 4), (64 << 20, 16384),
     ((64 << 20) - 1, 8192)],
)
def test_slot_count_is_whole_pages_rounded_down_to_a_power_of_two(PageCache, size_bytes, slots):
    cache = PageCache(size_bytes)
    assert cache.slots == slots
    assert cache.size == slots * PAGE
    assert cache.page_size == PAGE
    assert len(cache) == cache.items == 0


@pytest.mark.parametrize("page_size", [512, 1024, 16384])
def test_page_size_sets_slot_arithmetic(PageCache, page_size):
    cache = PageCache(6 * page_size, page_size)
    assert (cache.slots, cache.page_size, cache.size) == (4, page_size, 4 * page_size)
    assert cache.insert(5 * page_size, page(7, page_size))
    assert cache.lookup(5 * page_size) == page(7, page_size)


def test_defaults(PageCache):
    cache = PageCache(PAGE)
    assert (cache.page_size, cache.lifetime, cache.generation) == (4096, 2, 0)
    assert PageCache(PAGE, lifetime=0).lifetime == 0
    assert PageCache(size_bytes=PAGE, page_size=512, lifetime=5).lifetime == 5


# -- slots, lookup, insert, update -------------------------------------------


def test_pages_slots_times_page_size_apart_share_a_slot(PageCache):
    cache = PageCache(4 * PAGE, lifetime=0)
    assert cache.insert(PAGE, page(1))
    assert cache.insert(2 * PAGE, page(2))  # neighbour: its own slot
    assert cache.insert(5 * PAGE, page(5))  # 5 mod 4 == 1: evicts page 1
    assert PAGE not in cache
    assert 5 * PAGE in cache and 2 * PAGE in cache
    assert len(cache) == 2
    assert cache.lookup(PAGE) is None
    assert cache.lookup(5 * PAGE) == page(5)


def test_lookup_counts_hits_and_misses_and_returns_a_copy(PageCache):
    cache = PageCache(4 * PAGE)
    source = bytearray(page(3))
    assert cache.lookup(0) is None
    assert cache.insert(0, source)
    source[:] = page(9)  # the cache copied the page in
    got = cache.lookup(0)
    assert isinstance(got, bytes) and got == page(3)
    cache.update(0, page(4))
    assert got == page(3)  # and copied it out
    assert (cache.hits, cache.misses, cache.inserts) == (1, 1, 1)


def test_contains_touches_no_counter(PageCache):
    cache = PageCache(4 * PAGE)
    cache.insert(0, page(1))
    assert 0 in cache and PAGE not in cache and 4 * PAGE not in cache
    assert (cache.hits, cache.misses, cache.inserts, cache.refused) == (0, 0, 1, 0)


def test_reinserting_the_same_address_replaces_data_without_a_new_item(PageCache):
    cache = PageCache(4 * PAGE)
    assert cache.insert(PAGE, page(1))
    assert cache.insert(PAGE, page(2))
    assert cache.lookup(PAGE) == page(2)
    assert (len(cache), cache.inserts, cache.refused) == (1, 2, 0)


def test_update_overwrites_in_place_and_needs_the_page_cached(PageCache):
    cache = PageCache(4 * PAGE, lifetime=0)
    cache.insert(PAGE, page(1))
    cache.update(PAGE, page(2))
    assert cache.lookup(PAGE) == page(2)
    assert (cache.inserts, len(cache)) == (1, 1)
    with pytest.raises(KeyError):
        cache.update(2 * PAGE, page(3))  # empty slot
    with pytest.raises(KeyError):
        cache.update(5 * PAGE, page(3))  # slot held by another page
    assert cache.lookup(PAGE) == page(2)


def test_every_buffer_type_is_accepted(PageCache, tmp_path):
    cache = PageCache(16 * PAGE)
    with mmap.mmap(-1, PAGE) as mapped:
        mapped[:] = page(6)
        sources = [
            page(1), bytearray(page(2)), memoryview(page(3)), mapped,
            np.full(PAGE, 4, dtype=np.uint8), np.full(PAGE // 4, 0x05050505, dtype=np.uint32),
            array.array("B", page(7)), memoryview(page(8) * 2)[PAGE:],
        ]
        for number, source in enumerate(sources):
            assert cache.insert(number * PAGE, source)
        assert [cache.lookup(n * PAGE)[0] for n in range(len(sources))] == [1, 2, 3, 6, 4, 5, 7, 8]


# -- aging ---------------------------------------------------------------------


def test_lifetime_two_protects_an_occupant_for_two_generations(PageCache):
    cache = PageCache(4 * PAGE)  # lifetime 2
    cache.generation = 10
    assert cache.insert(0, page(1))
    assert not cache.insert(4 * PAGE, page(2))  # same generation
    cache.generation = 11
    assert not cache.insert(4 * PAGE, page(2))  # next generation
    assert cache.lookup(0) == page(1) and 4 * PAGE not in cache
    cache.generation = 12
    assert cache.lookup(0) == page(1)  # refreshes age to 12 ...
    cache.generation = 13
    assert not cache.insert(4 * PAGE, page(2))  # ... so still protected
    cache.generation = 14
    assert cache.insert(4 * PAGE, page(2))
    assert 0 not in cache and cache.lookup(4 * PAGE) == page(2)
    assert (cache.refused, cache.inserts, len(cache)) == (3, 2, 1)


def test_lifetime_zero_always_overwrites(PageCache):
    cache = PageCache(4 * PAGE, lifetime=0)
    for fill, addr in enumerate([0, 4 * PAGE, 8 * PAGE, 0]):
        assert cache.insert(addr, page(fill))
        assert cache.lookup(addr) == page(fill)
    cache.generation = 5
    cache.insert(4 * PAGE, page(9))
    cache.generation = 1  # even when the generation goes backwards
    assert cache.insert(0, page(8))
    assert cache.refused == 0


def test_lifetime_one_protects_only_within_the_generation(PageCache):
    cache = PageCache(4 * PAGE, lifetime=1)
    assert cache.insert(0, page(1))
    assert not cache.insert(4 * PAGE, page(2))
    cache.generation += 1
    assert cache.insert(4 * PAGE, page(2))


def test_an_occupant_from_a_later_generation_is_protected(PageCache):
    cache = PageCache(4 * PAGE)
    cache.generation = 7
    cache.insert(0, page(1))
    cache.generation = 3  # set back, e.g. a restarted migration that kept the cache
    assert not cache.insert(4 * PAGE, page(2))


def test_contains_does_not_refresh_age(PageCache):
    cache = PageCache(4 * PAGE)
    cache.insert(0, page(1))
    cache.generation = 2
    assert 0 in cache
    assert cache.insert(4 * PAGE, page(2))


def test_update_refreshes_age(PageCache):
    cache = PageCache(4 * PAGE)
    cache.insert(0, page(1))
    cache.generation = 2
    cache.update(0, page(3))
    assert not cache.insert(4 * PAGE, page(2))


def test_huge_generations_do_not_overflow(PageCache):
    cache = PageCache(4 * PAGE, lifetime=2**64 - 1)
    cache.generation = 2**64 - 1
    cache.insert(0, page(1))
    assert not cache.insert(4 * PAGE, page(2))
    cache.generation = 0
    assert not cache.insert(4 * PAGE, page(2))
    short = PageCache(4 * PAGE, lifetime=2)
    short.insert(0, page(1))
    short.generation = 2**64 - 1
    assert short.insert(4 * PAGE, page(2))


# -- resize ----------------------------------------------------------------------


def test_growing_keeps_every_entry_and_counters(PageCache):
    cache = PageCache(4 * PAGE)
    for number in range(4):
        cache.insert(number * PAGE, page(number))
    cache.lookup(0)
    cache.lookup(9 * PAGE)
    assert cache.resize(16 * PAGE + 1) == 16
    assert (cache.slots, cache.size, len(cache)) == (16, 16 * PAGE, 4)
    assert (cache.hits, cache.misses, cache.inserts) == (1, 1, 4)
    assert all(cache.lookup(n * PAGE) == page(n) for n in range(4))
    assert cache.insert(12 * PAGE, page(12))  # now a slot of its own


def test_shrinking_keeps_the_most_recently_used_of_colliding_pages(PageCache):
    cache = PageCache(8 * PAGE, lifetime=0)
    for number in range(8):  # generation n for page n
        cache.generation = number
        cache.insert(number * PAGE, page(number))
    cache.generation = 9
    cache.lookup(1 * PAGE)  # page 1 now newer than page 3 (same new slot)
    assert cache.resize(2 * PAGE) == 2
    assert len(cache) == 2
    assert sorted(n for n in range(8) if n * PAGE in cache) == [1, 6]
    assert cache.lookup(PAGE) == page(1) and cache.lookup(6 * PAGE) == page(6)


def test_shrinking_with_equal_ages_keeps_the_page_from_the_earlier_old_slot(PageCache):
    cache = PageCache(4 * PAGE)
    for number in (3, 2, 1, 0):
        cache.insert(number * PAGE, page(number))
    assert cache.resize(PAGE) == 1
    assert 0 in cache and len(cache) == 1


def test_resize_keeps_ages(PageCache):
    cache = PageCache(4 * PAGE)
    cache.insert(PAGE, page(1))
    cache.resize(2 * PAGE)
    cache.generation = 1
    assert not cache.insert(3 * PAGE, page(3))  # page 1 still young after the move
    cache.generation = 2
    assert cache.insert(3 * PAGE, page(3))


def test_resize_to_the_same_slot_count_changes_nothing(PageCache):
    cache = PageCache(4 * PAGE)
    cache.insert(0, page(1))
    assert cache.resize(7 * PAGE) == 4
    assert cache.lookup(0) == page(1)


def test_resize_rejects_what_the_constructor_rejects(PageCache):
    cache = PageCache(4 * PAGE)
    cache.insert(0, page(1))
    for bad in (0, PAGE - 1, -PAGE, True, 4.0 * PAGE, "16384", None):
        with pytest.raises(ParameterError):
            cache.resize(bad)
    assert cache.slots == 4 and cache.lookup(0) == page(1)


# -- clear, counters, memory -------------------------------------------------------


def test_clear_forgets_pages_but_keeps_counters(PageCache):
    cache = PageCache(4 * PAGE)
    cache.insert(0, page(1))
    cache.lookup(0)
    cache.clear()
    assert len(cache) == 0 and 0 not in cache
    assert (cache.hits, cache.inserts) == (1, 1)
    assert cache.insert(4 * PAGE, page(2))  # nothing left to protect
    assert cache.lookup(4 * PAGE) == page(2)


def test_stats_mirror_the_properties(PageCache):
    cache = PageCache(8 * PAGE)
    cache.generation = 3
    cache.insert(0, page(1))
    cache.insert(8 * PAGE, page(2))
    cache.lookup(0)
    cache.lookup(PAGE)
    stats = cache.stats()
    assert stats == {name: getattr(cache, name) for name in stats}
    assert stats == {
        "size": 8 * PAGE, "slots": 8, "page_size": PAGE, "lifetime": 2, "generation": 3,
        "items": 1, "hits": 1, "misses": 1, "inserts": 1, "refused": 1,
        "memory_used": cache.memory_used,
    }


def test_memory_used_counts_slab_and_metadata(PageCache):
    cache = PageCache(1 << 20)
    assert cache.memory_used == 256 * (PAGE + 16)
    cache.resize(1 << 21)
    assert cache.memory_used == 512 * (PAGE + 16)


def test_repr_names_the_shape(PageCache):
    assert repr(PageCache(4 * PAGE)).startswith("<PageCache 4 slots x 4096 bytes")


def test_read_only_properties(PageCache):
    cache = PageCache(4 * PAGE)
    for name in ("size", "slots", "page_size", "lifetime", "items", "hits", "misses",
                 "inserts", "refused", "memory_used"):
        with pytest.raises(AttributeError):
            setattr(cache, name, 1)


# -- errors --------------------------------------------------------------------------


@pytest.mark.parametrize("size_bytes", [0, 1, PAGE - 1, -1, -(2**70)])
def test_sizes_below_one_page_name_the_limit(PageCache, size_bytes):
    with pytest.raises(ParameterError, match="at least one page \\(4096 bytes\\)"):
        PageCache(size_bytes)


@pytest.mark.parametrize("size_bytes", [True, 4096.0, "4096", None, b"x"])
def test_non_int_sizes_are_parameter_errors(PageCache, size_bytes):
    with pytest.raises(ParameterError, match="must be an int"):
        PageCache(size_bytes)


def test_parameter_error_is_a_value_error():
    assert issubclass(ParameterError, ValueError)


@pytest.mark.parametrize("page_size", [0, 256, 1000, 4095, 32768, -4096, True, 4096.0])
def test_bad_page_sizes(PageCache, page_size):
    with pytest.raises(ParameterError, match="page_size"):
        PageCache(1 << 20, page_size)


@pytest.mark.parametrize("lifetime", [-1, True, 2.0, 2**64])
def test_bad_lifetimes(PageCache, lifetime):
    with pytest.raises(ParameterError, match="lifetime"):
        PageCache(1 << 20, lifetime=lifetime)


def test_oversized_cache_is_a_memory_error(PageCache):
    with pytest.raises(MemoryError):
        PageCache(2**63)


@pytest.mark.parametrize("generation", [-1, 2**64, "1", 1.0, None])
def test_bad_generations(PageCache, generation):
    cache = PageCache(4 * PAGE)
    with pytest.raises(ParameterError, match="generation"):
        cache.generation = generation
    assert cache.generation == 0


@pytest.mark.parametrize(
    ("addr", "message"),
    [(1, "not aligned"), (PAGE + 512, "not aligned"), (2**64 - 1, "not aligned"),
     (-PAGE, "between 0"), (2**64, "between 0"), ("0", "must be an int"),
     (0.0, "must be an int")],
)
def test_bad_addresses(PageCache, addr, message):
    cache = PageCache(4 * PAGE)
    for call in (cache.lookup, lambda a: cache.insert(a, page(1)),
                 lambda a: cache.update(a, page(1)), cache.__contains__):
        with pytest.raises(ParameterError, match=message):
            call(addr)
    assert (cache.misses, cache.inserts, len(cache)) == (0, 0, 0)


def test_highest_aligned_address_works(PageCache):
    cache = PageCache(4 * PAGE)
    top = 2**64 - PAGE
    assert cache.insert(top, page(1))
    assert cache.lookup(top) == page(1)


@pytest.mark.parametrize("length", [0, 1, PAGE - 1, PAGE + 1, 2 * PAGE])
def test_data_must_be_exactly_one_page(PageCache, length):
    cache = PageCache(4 * PAGE)
    cache.insert(0, page(1))
    with pytest.raises(ParameterError, match="exactly one page \\(4096 bytes\\)"):
        cache.insert(PAGE, bytes(length))
    with pytest.raises(ParameterError, match="exactly one page"):
        cache.update(0, bytes(length))
    assert (cache.inserts, cache.lookup(0)) == (1, page(1))


def test_non_buffer_data_is_a_type_error(PageCache):
    with pytest.raises(TypeError):
        PageCache(4 * PAGE).insert(0, "x" * PAGE)


def test_c_resize_runs_without_the_gil_and_fences_other_threads():
    """Other threads get RuntimeError during a resize, never a torn cache."""
    import threading

    cache = CPageCache(4 << 20)
    for number in range(cache.slots):
        cache.insert(number * PAGE, page(number % 251))
    done = threading.Event()
    fenced = []

    def reader():
        while not done.is_set():
            try:
                got = cache.lookup(7 * PAGE)
            except RuntimeError:
                fenced.append(True)
                continue
            assert got == page(7)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(8):
            cache.resize(8 << 20)
            cache.resize(4 << 20)
    finally:
        done.set()
        thread.join()
    assert len(cache) == cache.slots == 1024
    assert all(cache.lookup(n * PAGE) == page(n % 251) for n in range(cache.slots))
