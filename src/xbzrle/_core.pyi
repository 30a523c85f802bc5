"""Types of the compiled core (``xbzrle._core``), for type checkers and IDEs.

Every name the module defines is here, checked against the C sources: the
argument formats of ``src/xbzrle/_core/*.c`` (a ``METH_O``, ``METH_FASTCALL``
or ``PyArg_ParseTuple`` function takes its arguments by position only) and
what each function builds as its result.  Each C function, method and type
publishes its signature (the ``name($module, ..., /)`` line and ``--`` that open
its docstring), so stubtest compares the parameters here with the module's
own.  The public names (the codec functions, ``PageCache``, ``GuestRam``) are
documented here; the loops, trackers and workload threads the package uses
internally carry a line each.
"""

import mmap
from array import array
from collections.abc import Iterable, Sequence
from typing import Any, Final, Literal, Self, TypeAlias, final, overload

from _typeshed import structseq
from typing_extensions import disjoint_base

# Stub-only aliases.  The C code takes any object with the buffer protocol
# ("y*"/"w*" or PyObject_GetBuffer); these are the types the package passes.  An array of
# any item type is a buffer, so array[Any] is exact, not a loose type.
Buffer: TypeAlias = (bytes | bytearray | memoryview | mmap.mmap | array[Any] | GuestRam
                     | DirtyBitmap)
WritableBuffer: TypeAlias = (bytearray | memoryview | mmap.mmap | array[Any] | GuestRam
                             | DirtyBitmap)

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

def uleb128_encode(n: int, /) -> bytes: ...
def uleb128_decode(buf: Buffer, pos: int = 0, /) -> tuple[int, int]: ...
def is_zero(buf: Buffer, /) -> bool: ...
def simd_paths() -> list[str]:
    """The SIMD paths this CPU supports, best first (a new list each call)."""
def simd_path() -> str: ...
def select_simd(name: str, /) -> None: ...

@final
class PageCache:
    """The XBZRLE page cache: one slot per page number modulo the slot count."""

    def __new__(cls, size_bytes: int, page_size: int = 4096, lifetime: int = 2) -> Self: ...
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
    def lookup(self, addr: int, /) -> bytes | None:
        """The cached copy of the page at ``addr``, or None (a miss)."""
    def insert(self, addr: int, data: Buffer, /) -> bool:
        """Cache ``data`` for ``addr``; False if a younger page keeps the slot."""
    def update(self, addr: int, data: Buffer, /) -> None:
        """Replace the cached copy of a page already in the cache (KeyError if absent)."""
    def resize(self, size_bytes: int, /) -> int:
        """Change the size (a power of two), keeping the most recent pages; the new slot count."""
    def clear(self) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def __len__(self) -> int: ...
    def __contains__(self, addr: object, /) -> bool: ...

@disjoint_base  # a C layout: no class can derive from it and another such type
class GuestRam:
    """Zero-filled anonymous memory, page aligned, lazily populated; a writable buffer."""

    def __new__(cls, size: int, /) -> Self: ...
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
    def advise_small_pages(self) -> None:
        """Ask for 4 KiB pages (MADV_NOHUGEPAGE); OSError if the kernel refuses."""
    def close(self) -> None:
        """Unmap the memory now, or when the last view, tracker or workload lets go."""
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __release_buffer__(self, view: memoryview, /) -> None: ...


# Record flags, kept equal to xbzrle.stream.constants by a test.
RAM_SAVE_FLAG_ZERO: Final[int]
RAM_SAVE_FLAG_MEM_SIZE: Final[int]
RAM_SAVE_FLAG_PAGE: Final[int]
RAM_SAVE_FLAG_EOS: Final[int]
RAM_SAVE_FLAG_CONTINUE: Final[int]
RAM_SAVE_FLAG_XBZRLE: Final[int]
ENCODING_FLAG_XBZRLE: Final[int]

SAVE_MAX_RECORD: Final[int]
SAVE_PLAIN: Final[int]
SAVE_XBZRLE: Final[int]
SAVE_LAST: Final[int]
SAVE_QEMU_COPY: Final[int]
SAVE_REF_SIZE: Final[int]
LOAD_NEED_DATA: Final[int]
LOAD_OTHER: Final[int]
WORKLOAD_MAGIC: Final[int]

@final
class LoopCounts(structseq[int], tuple[int, int, int, int, int, int, int, int, int, int, int, int]):
    """What one call of the save or load loop did (the fields of BatchCounts)."""

    __match_args__: Final = ("scanned", "zero", "normal", "xbzrle", "unchanged", "overflow",
                             "cache_miss", "xbzrle_bytes", "wire_bytes", "skipped_overflow",
                             "encode_ns", "encode_timed")

    @property
    def scanned(self) -> int: ...
    @property
    def zero(self) -> int: ...
    @property
    def normal(self) -> int: ...
    @property
    def xbzrle(self) -> int: ...
    @property
    def unchanged(self) -> int: ...
    @property
    def overflow(self) -> int: ...
    @property
    def cache_miss(self) -> int: ...
    @property
    def xbzrle_bytes(self) -> int: ...
    @property
    def wire_bytes(self) -> int: ...
    @property
    def skipped_overflow(self) -> int: ...
    @property
    def encode_ns(self) -> int: ...
    @property
    def encode_timed(self) -> int: ...

@final
class DirtyBitmap:
    """A page set as uint64 words; its buffer is the words (format 'Q'), writable."""

    def __new__(cls, npages: int, pages: Iterable[int] = ()) -> Self: ...
    @classmethod
    def full(cls, npages: int, /) -> Self:
        """A bitmap of ``npages`` pages, all set (a migration's first round)."""
    @property
    def npages(self) -> int: ...
    def count(self) -> int: ...
    def pages(self) -> array[int]:
        """The set pages in ascending order, as array('Q')."""
    def add(self, page: int, /) -> None: ...
    def discard(self, page: int, /) -> None: ...
    def clear(self) -> None: ...
    def fill(self) -> None: ...
    def copy(self) -> DirtyBitmap: ...
    def __contains__(self, page: object, /) -> bool: ...
    def __or__(self, other: DirtyBitmap, /) -> DirtyBitmap: ...
    def __ror__(self, other: DirtyBitmap, /) -> DirtyBitmap: ...
    def __ior__(self, other: DirtyBitmap, /) -> Self: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __release_buffer__(self, view: memoryview, /) -> None: ...

@final
class UffdTracker:
    """Kernel dirty log (userfaultfd write-protect + PAGEMAP_SCAN); OSError if unsupported."""

    def __new__(cls, ram: GuestRam, vec_len: int = 16384, lazy: bool = False) -> Self: ...
    def sync(self) -> DirtyBitmap:
        """Pages written since the previous sync; re-arms them."""
    def close(self) -> None: ...

@final
class ScanTracker:
    """Per-page hash compare; baseline 'zero' assumes zeroed RAM, 'current' hashes it now."""

    def __new__(cls, ram: GuestRam, baseline: Literal["zero", "current"] = "zero") -> Self: ...
    def sync(self) -> DirtyBitmap: ...
    def follow(self, table: Buffer | None, /) -> None:
        """Also report pages that differ from a digest table (None stops)."""
    def close(self) -> None: ...

@final
class SoftTracker:
    """A bitmap that the built-in workloads set as they write."""

    def __new__(cls, npages: int, /) -> Self: ...
    def sync(self) -> DirtyBitmap: ...
    def mark(self, first: int, count: int = 1, /) -> None: ...
    def close(self) -> None: ...

@final
class WorkloadThread:
    """Runs the workload whose state header is at ``offset`` in ``ram``; created paused."""

    def __new__(cls, ram: GuestRam, offset: int, tracker: SoftTracker | None = None) -> Self: ...
    rate: float
    throttle: int
    @property
    def ops(self) -> int: ...
    @property
    def bytes_written(self) -> int: ...
    @property
    def throttled_seconds(self) -> float: ...
    @property
    def running(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    def resume(self) -> None: ...
    def pause(self) -> None: ...
    def step(self, n: int, /) -> int:
        """Run exactly n operations in the caller's thread (paused only); the number run."""
    def close(self) -> None: ...

def guest_page_hash(page: Buffer, /) -> int: ...
def page_hash_portable(page: Buffer, /) -> int: ...
def page_digest_hash(page: Buffer, /) -> int: ...
def data_map(ram: Buffer, swap: bool, /) -> bytearray: ...
def page_hashes(ram: Buffer, first_index: int = 0, /) -> bytes: ...
def table_pairs(table: Buffer, first_index: int = 0, /) -> bytes: ...
def table_fill(ram: Buffer, table: WritableBuffer, data_map: Buffer | None = None, /) -> None: ...

# A block of load_pages: (name, ram[, maybe_data[, hashes[, fd]]]) (stub only).
_LoadBlock: TypeAlias = (
    tuple[Buffer, WritableBuffer]
    | tuple[Buffer, WritableBuffer, WritableBuffer | None]
    | tuple[Buffer, WritableBuffer, WritableBuffer | None, WritableBuffer | None]
    | tuple[Buffer, WritableBuffer, WritableBuffer | None, WritableBuffer | None, int]
)

def load_pages(buf: Buffer, pos: int, blocks: Sequence[_LoadBlock], last: int, xbzrle_ok: bool,
               base_offset: int, /) -> tuple[int, int, int, LoopCounts]:
    """Apply page records from buf[pos:]: (pos, last, status, counts)."""

def populate_read(mapping: Buffer, offset: int, length: int, /) -> None:
    """Map mapping[offset:offset + length] with MADV_POPULATE_READ (GIL released);
    OSError where the kernel cannot."""

def scan_pages(buf: Buffer, pos: int, blocks: Sequence[tuple[bytes, int]], last: int,
               ordered: bool, prev_block: int, prev_offset: int, /
               ) -> tuple[int, int, int, int, tuple[int, int, int], tuple[int, int, int]]:
    """Count page records without applying them: (pos, last, prev_block, prev_offset,
    pages, wire_bytes), the last two (zero, normal, xbzrle)."""

@overload
def save_pages(out: WritableBuffer, pos: int, ram: Buffer, bitmap: WritableBuffer,
               start_page: int, name: Buffer, addr_base: int, mode: int,
               cache: PageCache | None, cont: bool, refs: None = None,
               backoff: WritableBuffer | None = None, hashes: WritableBuffer | None = None, /
               ) -> tuple[int, int, bool, LoopCounts]: ...
@overload
def save_pages(out: WritableBuffer, pos: int, ram: Buffer, bitmap: WritableBuffer,
               start_page: int, name: Buffer, addr_base: int, mode: int,
               cache: PageCache | None, cont: bool, refs: WritableBuffer,
               backoff: WritableBuffer | None = None, hashes: WritableBuffer | None = None, /
               ) -> tuple[int, int, bool, LoopCounts, int]: ...
def write_records(fd: int, out: Buffer, end: int, refs: Buffer, nrefs: int, ram: Buffer,
                  timeout_ms: int = -1, splice: bool = False, /) -> int:
    """Send save_pages' output with its page references; the bytes written."""
