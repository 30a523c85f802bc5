"""What one call of the save or load loop did: page counts by record kind.

Pure data, shared by the compiled loops' callers (source, loader) and the
statistics that add them up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class BatchCounts:
    """What one call of the save or load loop did.

    The compiled loops return a ``_core.LoopCounts`` with these field names;
    :meth:`from_loop` copies them by name, and a test keeps the two lists equal.
    """

    scanned: int = 0  # dirty pages handled
    zero: int = 0  # pages sent as ZERO records
    normal: int = 0  # pages sent whole (incl. cache misses and overflows)
    xbzrle: int = 0  # pages sent as XBZRLE records
    unchanged: int = 0  # cache hits with an empty delta: nothing sent
    overflow: int = 0  # cache hits whose delta overflowed: sent whole
    cache_miss: int = 0  # pages not in the cache (inserted when allowed)
    xbzrle_bytes: int = 0  # XBZRLE records (delta + 3 header bytes) + a page per overflow
    wire_bytes: int = 0  # bytes produced for the stream
    skipped_overflow: int = 0  # cache hits sent whole, encoder skipped (overflow back-off)
    encode_ns: int = 0  # nanoseconds inside the XBZRLE encoder, in the runs timed
    encode_timed: int = 0  # encoder runs timed (on every 32nd page): see encode_time_ns

    FIELDS = ("scanned", "zero", "normal", "xbzrle", "unchanged", "overflow", "cache_miss",
              "xbzrle_bytes", "wire_bytes", "skipped_overflow", "encode_ns",
              "encode_timed")

    @classmethod
    def from_loop(cls, counts: Any) -> BatchCounts:
        """Copy a loop's ``LoopCounts`` (or any object with these attributes) by name."""
        return cls(**{name: getattr(counts, name) for name in cls.FIELDS})

    LOAD_FIELDS = ("scanned", "zero", "normal", "xbzrle", "wire_bytes")
    """The only counts the load loop moves."""

    def add(self, other: BatchCounts) -> None:
        self.add_loop(other)

    def add_loop(self, counts: Any, fields: tuple[str, ...] = FIELDS) -> None:
        """Add ``fields`` of a loop's ``LoopCounts`` (or of any BatchCounts) in place."""
        for name in fields:
            setattr(self, name, getattr(self, name) + getattr(counts, name))

    @property
    def cache_hits(self) -> int:
        return self.xbzrle + self.unchanged + self.overflow

    @property
    def encode_time_ns(self) -> int:
        """Estimated nanoseconds inside the encoder: the timed runs' sum, scaled to all runs.

        Every cache hit is one encoder run; the save loop times a sample of
        them (a clock read costs about as much as a small run).
        """
        if self.encode_timed <= 0:
            return 0
        return self.encode_ns * self.cache_hits // self.encode_timed
