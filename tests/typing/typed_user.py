"""A user's script, type-checked with ``mypy --strict`` by test_typing.py (never imported)."""

from __future__ import annotations

import xbzrle
from xbzrle import DecodeError, XbzrleError
from xbzrle.migration import MigrationManager


def roundtrip(old: bytes, new: bytes) -> bytes:
    delta: bytes | None = xbzrle.encode(old, new)
    if delta is None:  # overflow: send the page whole
        return new
    page: bytes = xbzrle.decode(delta, old)
    target = bytearray(old)
    xbzrle.decode_into(delta, target)
    assert bytes(target) == page
    return page


def many_pages(old: bytes, new: bytes) -> bytearray:
    deltas, lengths = xbzrle.encode_pages(old, new)
    out = bytearray(old)
    xbzrle.decode_pages(deltas, lengths, out)
    return out


def cache_hit_ratio(size: int) -> float:
    cache = xbzrle.PageCache(size)
    cache.generation = 1
    inserted: bool = cache.insert(0, bytes(4096))
    cached: bytes | None = cache.lookup(0)
    total = cache.hits + cache.misses
    return (cache.hits / total if total else 0.0) if inserted and cached else 0.0


def migrate(uri: str) -> dict[str, object]:
    with xbzrle.Guest(ram="16M") as guest:
        manager = MigrationManager(guest)
        manager.set_capability("xbzrle", True)
        manager.set_parameters(max_bandwidth=32 << 20)
        size: int = manager.set_cache_size(8 << 20)
        assert size == 8 << 20
        manager.migrate(uri).wait(10.0)
        return manager.query()


def main() -> None:
    try:
        roundtrip(bytes(4096), bytes(4096))
    except DecodeError as exc:
        print(exc.offset)
    except XbzrleError:
        raise
    print(many_pages(bytes(8192), bytes(8192)), cache_hit_ratio(1 << 20), xbzrle.backend)
    print(migrate("file:/dev/null"))
