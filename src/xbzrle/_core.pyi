"""Types of the compiled core (``xbzrle._core``), for type checkers and IDEs.

The public names (the codec functions, ``PageCache``, ``GuestRam``) are
described in full; the save/load loops and trackers the package uses
internally are left to ``__getattr__`` (an incomplete stub, PEP 484).
"""

import mmap
from array import array
from collections.abc import Iterable
from typing import Any, TypeAlias

Buffer: TypeAlias = bytes | bytearray | memoryview | mmap.mmap | array[Any] | GuestRam
WritableBuffer: TypeAlias = bytearray | memoryview | mmap.mmap | array[Any] | GuestRam

MAX_PAGE_SIZE: int
GUEST_PAGE_SIZE: int

def encode(old: Buffer, new: Buffer, limit: int | None = None) -> bytes | None:
    """XBZRLE delta turning ``old`` into ``new``: b"" if equal, None if over ``limit``."""

def decode(delta: Buffer, old: Buffer) -> bytes:
    """The page ``delta`` makes of ``old``; DecodeError names the offset of a bad delta."""

def decode_into(delta: Buffer, page: WritableBuffer) -> None:
    """Apply ``delta`` to ``page`` in place (nothing written if the delta is refused)."""

def encode_pages(old: Buffer, new: Buffer, page_size: int = 4096) -> tuple[bytes, array[int]]:
    """Deltas of every page of two equal buffers, and each length (-1: overflow)."""

def decode_pages(deltas: Buffer, lengths: Iterable[int], pages: WritableBuffer,
                 page_size: int = 4096) -> None:
    """Apply ``encode_pages``' output in place; refuse everything before writing."""

def uleb128_encode(n: int) -> bytes: ...
def uleb128_decode(buf: Buffer, pos: int = 0) -> tuple[int, int]: ...
def is_zero(buf: Buffer) -> bool: ...
def simd_paths() -> tuple[str, ...]: ...
def simd_path() -> str: ...
def select_simd(name: str) -> None: ...

class PageCache:
    """The XBZRLE page cache: one slot per page number modulo the slot count."""

    def __init__(self, size_bytes: int, page_size: int = 4096, lifetime: int = 2) -> None: ...
    @property
    def size(self) -> int: ...
    @property
    def slots(self) -> int: ...
    @property
    def page_size(self) -> int: ...
    @property
    def lifetime(self) -> int: ...
    @property
    def generation(self) -> int: ...
    @generation.setter
    def generation(self, value: int) -> None: ...
    @property
    def items(self) -> int: ...
    @property
    def hits(self) -> int: ...
    @property
    def misses(self) -> int: ...
    @property
    def inserts(self) -> int: ...
    @property
    def refused(self) -> int: ...
    @property
    def memory_used(self) -> int: ...
    def lookup(self, addr: int) -> bytes | None:
        """The cached copy of the page at ``addr``, or None (a miss)."""
    def insert(self, addr: int, data: Buffer) -> bool:
        """Cache ``data`` for ``addr``; False if a younger page keeps the slot."""
    def update(self, addr: int, data: Buffer) -> None:
        """Replace the cached copy of a page already in the cache."""
    def resize(self, size_bytes: int) -> int:
        """Change the size (a power of two), keeping the most recent pages; the new size."""
    def clear(self) -> None: ...
    def stats(self) -> dict[str, int]: ...

class GuestRam:
    """Zero-filled anonymous memory, page aligned, lazily populated; a writable buffer."""

    def __init__(self, size: int) -> None: ...
    @property
    def size(self) -> int: ...
    @property
    def npages(self) -> int: ...
    @property
    def address(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def advise_huge_pages(self) -> None:
        """Ask for transparent huge pages (MADV_HUGEPAGE); OSError if the kernel refuses."""
    def close(self) -> None:
        """Unmap the memory now, or when the last view, tracker or workload lets go."""
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __release_buffer__(self, view: memoryview, /) -> None: ...

def __getattr__(name: str) -> Any: ...
