"""The codec benchmark's baselines: memcmp and a model of QEMU's plain codec.

They live outside the package (nothing in a migration uses them): the C in
``codec_baseline.c`` is built on first use with the system compiler (``$CC``,
else ``cc``) into ``benchmarks/.build/`` (named by a hash of the source and
the compiler, so an edit rebuilds it) and called through ctypes, one call per
batch of pages, so the cost of the call does not show in the figures.  ctypes
releases the GIL during each call, as the compiled core does.
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import shlex
import subprocess
import tempfile
from array import array
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "codec_baseline.c"
BUILD_DIR = HERE / ".build"
CFLAGS = ["-O3", "-std=gnu11", "-fPIC", "-shared", "-Wall"]
BACKINGS = ("huge", "small")
"""How the benchmarks' pages are backed: ``huge``, as guest RAM and the page
cache are (private anonymous memory advised to transparent huge pages, as
QEMU advises its RAM), or ``small``, 4 KiB pages only (every page a TLB
entry of its own)."""


def page_memory(data: bytes | bytearray | memoryview, backing: str = "small") -> mmap.mmap:
    """A copy of ``data`` in memory laid out as guest RAM is (see BACKINGS).

    Every page starts on a page boundary, as in guest RAM and the cache (a
    ``bytes`` object's data sits 32 or 48 bytes into a cache line, which costs
    every 32- and 64-byte load a line split, ours and memcmp's alike, and not
    equally), and the backing is the same for the baseline and the measured
    code, so a ratio compares work, not page tables.
    """
    if backing not in BACKINGS:
        raise ValueError(f"backing must be one of {BACKINGS}, not {backing!r}")
    buf = mmap.mmap(-1, len(data), flags=mmap.MAP_PRIVATE)
    buf.madvise(mmap.MADV_HUGEPAGE if backing == "huge" else mmap.MADV_NOHUGEPAGE)
    buf[:] = data
    return buf


def _address(buf, writable: bool = False) -> tuple[int, int, object]:
    """Address and length of a contiguous buffer, without copying it.

    Returns a keep-alive object too: the address is valid while it lives.
    """
    view = memoryview(buf).cast("B")
    if not view.contiguous:
        raise TypeError("the baselines need contiguous buffers")
    if view.readonly:
        if writable:
            raise TypeError("the baselines need a writable buffer here")
        if isinstance(buf, bytes):
            pointer = ctypes.c_char_p(buf)
            return ctypes.cast(pointer, ctypes.c_void_p).value or 0, len(view), pointer
        raise TypeError("read-only buffers other than bytes are not supported")
    holder = (ctypes.c_char * len(view)).from_buffer(view)
    return ctypes.addressof(holder), len(view), (holder, view)


def build() -> Path:
    """The shared library, compiled now unless a build of this source exists."""
    compiler = shlex.split(os.environ.get("CC", "cc"))
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join(compiler + CFLAGS).encode()).hexdigest()[:16]
    target = BUILD_DIR / f"codec_baseline-{key}.so"
    if target.exists():
        return target
    BUILD_DIR.mkdir(exist_ok=True)
    fd, partial = tempfile.mkstemp(suffix=".so", dir=BUILD_DIR)
    os.close(fd)
    try:
        try:
            done = subprocess.run([*compiler, *CFLAGS, "-o", partial, str(SOURCE)],
                                  capture_output=True, text=True)
        except OSError as exc:
            raise RuntimeError(f"cannot run the C compiler {compiler[0]!r} (set CC): "
                               f"{exc.strerror}") from None
        if done.returncode != 0:
            raise RuntimeError(f"building {SOURCE.name} failed:\n{done.stderr.strip()}")
        os.replace(partial, target)  # atomic: a concurrent build finds a whole file
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


class Baselines:
    """The compiled baselines, with the calling conventions of the core's batch API."""

    def __init__(self, library: Path | None = None) -> None:
        lib = ctypes.CDLL(str(library or build()))
        size_t, ssize_t, ptr = ctypes.c_size_t, ctypes.c_ssize_t, ctypes.c_void_p
        self._memcmp = lib.memcmp_pages
        self._memcmp.argtypes = [ptr, ptr, size_t, size_t]
        self._memcmp.restype = size_t
        self._encode = lib.qemu_plain_encode_pages
        self._encode.argtypes = [ptr, ptr, size_t, size_t, ptr, ptr]
        self._encode.restype = size_t
        self._decode = lib.qemu_plain_decode_pages
        self._decode.argtypes = [ptr, size_t, ptr, size_t, ptr, size_t]
        self._decode.restype = ssize_t
        self._run_places = lib.run_places
        self._run_places.argtypes = [ptr, ptr, size_t, size_t, ptr, ptr]
        self._run_places.restype = ssize_t
        self._store_floor = lib.store_floor
        self._store_floor.argtypes = [ptr, ptr, size_t, size_t]
        self._store_floor.restype = None
        self._checked_store_floor = lib.checked_store_floor
        self._checked_store_floor.argtypes = [ptr, ptr, ptr, ptr, size_t, size_t]
        self._checked_store_floor.restype = ctypes.c_uint
        self._out = bytearray()

    @staticmethod
    def _pages(length: int, page_size: int) -> int:
        if page_size <= 0 or length % page_size:
            raise ValueError(f"buffers must hold whole pages of {page_size} bytes")
        return length // page_size

    def memcmp_pages(self, a, b, page_size: int = 4096) -> int:
        """Number of equal page pairs of a and b, by libc memcmp page by page."""
        a_addr, a_len, _a_keep = _address(a)
        b_addr, b_len, _b_keep = _address(b)
        if a_len != b_len:
            raise ValueError("buffers differ in length")
        self._pages(a_len, page_size)
        return self._memcmp(a_addr, b_addr, a_len, page_size)

    def qemu_plain_encode_pages(self, old, new, page_size: int = 4096
                                ) -> tuple[memoryview, array]:
        """encode_pages with QEMU's plain encoder: (deltas, lengths).

        The deltas are written into one output buffer kept from call to call,
        as QEMU reuses its encoding buffer; the view returned is valid until
        the next call.
        """
        old_addr, old_len, _old_keep = _address(old)
        new_addr, new_len, _new_keep = _address(new)
        if old_len != new_len:
            raise ValueError("old and new buffers differ in length")
        lengths = array("i", bytes(4 * self._pages(old_len, page_size)))
        if len(self._out) < old_len:
            self._out = bytearray(old_len)
        out_addr, _, _out_keep = _address(self._out, writable=True)
        len_addr, _, _len_keep = _address(lengths, writable=True)
        used = self._encode(old_addr, new_addr, old_len, page_size, out_addr, len_addr)
        return memoryview(self._out)[:used], lengths

    def qemu_plain_decode_pages(self, deltas, lengths, pages, page_size: int = 4096) -> None:
        """decode_pages with QEMU's plain decoder (one pass per page).

        ``ValueError`` names the first page whose delta QEMU refuses; that
        page may be half written, as in QEMU.
        """
        lengths = lengths if isinstance(lengths, array) and lengths.typecode == "i" \
            else array("i", lengths)
        page_addr, page_len, _page_keep = _address(pages, writable=True)
        count = self._pages(page_len, page_size)
        if len(lengths) != count:
            raise ValueError(f"{len(lengths)} lengths for {count} pages")
        delta_addr, delta_len, _delta_keep = _address(deltas)
        len_addr, _, _len_keep = _address(lengths)
        bad = self._decode(delta_addr, delta_len, len_addr, count, page_addr, page_size)
        if bad == -2:
            raise ValueError("the lengths add up to more than the deltas hold")
        if bad >= 0:
            raise ValueError(f"QEMU's decoder refuses the delta of page {bad}")

    def run_places(self, deltas, lengths, page_size: int = 4096) -> array:
        """Where a decoder of ``deltas`` must store: each run's first and last
        byte as offsets from the start of the pages, in pairs, ascending (untimed
        preparation of :meth:`store_floor`).  ``ValueError`` when the
        lengths ask for more than the deltas hold or a delta does not parse."""
        return self._runs(deltas, lengths, page_size, sources=False)

    def run_sources(self, deltas, lengths, page_size: int = 4096) -> array:
        """Where each run's bytes are: their offset in ``deltas``, one per run,
        in the order of :meth:`run_places` (untimed preparation of
        :meth:`checked_store_floor`); the same ``ValueError`` as run_places."""
        return self._runs(deltas, lengths, page_size, sources=True)

    def _runs(self, deltas, lengths, page_size: int, sources: bool) -> array:
        lengths = array("i", lengths)
        if sum(n for n in lengths if n > 0) > len(deltas):
            raise ValueError("the lengths add up to more than the deltas hold")
        delta_addr, _, _delta_keep = _address(deltas)
        len_addr, _, _len_keep = _address(lengths)
        runs = self._run_places(delta_addr, len_addr, len(lengths), page_size, None, None)
        if runs < 0:
            raise ValueError("a delta does not parse")
        found = array("I", bytes(4 * runs * (1 if sources else 2)))
        if runs:
            found_addr, _, _found_keep = _address(found, writable=True)
            self._run_places(delta_addr, len_addr, len(lengths), page_size,
                             None if sources else found_addr, found_addr if sources else None)
        return found

    def store_floor(self, places: array, pages, ahead: int = 0) -> None:
        """One byte stored at each place of :meth:`run_places` into ``pages``,
        each pair asked for ``ahead`` runs before (0: not asked for): the
        stores any decoder of those deltas makes, and nothing else."""
        page_addr, page_len, _page_keep = _address(pages, writable=True)
        if places and places[-1] >= page_len:  # places ascend: the last is the largest
            raise ValueError("a place lies beyond the pages")
        if places:
            places_addr, _, _places_keep = _address(places)
            self._store_floor(page_addr, places_addr, len(places) // 2, ahead)

    def checked_store_floor(self, places: array, sources: array, deltas, pages,
                            ahead: int = 0) -> int:
        """The last byte of every run's length read, then each run's first
        and last byte copied from the deltas to its places of
        :meth:`store_floor`: what a decoder that checks every delta before
        writing any page does at least (places and sources from
        :meth:`run_places` and :meth:`run_sources` of the same deltas).
        Returns the sum of the length bytes read."""
        page_addr, page_len, _page_keep = _address(pages, writable=True)
        delta_addr, delta_len, _delta_keep = _address(deltas)
        if len(places) != 2 * len(sources):
            raise ValueError("places and sources are of different deltas")
        if places and places[-1] >= page_len:  # both ascend: the last is the largest
            raise ValueError("a place lies beyond the pages")
        # Both ascend: the last run ends furthest into the deltas.
        if sources and (sources[0] == 0
                        or sources[-1] + places[-1] - places[-2] >= delta_len):
            raise ValueError("a run lies beyond the deltas")
        if not places:
            return 0
        places_addr, _, _places_keep = _address(places)
        sources_addr, _, _sources_keep = _address(sources)
        return self._checked_store_floor(page_addr, delta_addr, places_addr, sources_addr,
                                         len(sources), ahead)


_loaded: Baselines | None = None


def load() -> Baselines:
    """The baselines, built and loaded once per process."""
    global _loaded
    if _loaded is None:
        _loaded = Baselines()
    return _loaded
