"""RAM blocks as sparse files mapped into memory, for extract and receive.

The announced sizes and names come from the peer, so nothing is allocated or
named from them blindly:

- each file is only truncated to its size (sparse) and mapped; pages a stream
  never sends cost no disk and no memory;
- the mappings hold no file descriptor (``mmap(2)`` without Python's
  ``mmap`` object, which keeps a duplicate), so a stream with more blocks than
  ``ulimit -n`` still extracts; only the largest few blocks (``WRITE_FDS``)
  keep theirs open, for the page loader to write full pages with
  ``pwritev`` rather than through the mapping (no page fault and no zeroing
  of each new page: the loader's ``files``);
- a file name is derived from the block name but always valid: escaped, cut
  to a safe length and, whenever that lost anything, suffixed with a hash of
  the real name (which the manifest keeps);
- the digest of each block reads only the file's data extents
  (``SEEK_DATA``/``SEEK_HOLE``): holes are zero pages and contribute nothing.

The total is capped before anything is created.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import mmap
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .._backend import load_core
from ..errors import ParameterError, StreamError
from ..sizes import PAGE_SIZE

DEFAULT_MAX_RAM = 64 << 30
MANIFEST = "manifest.json"
DEVICE_STATE = "device-state.bin"
OUTPUT_FILES = (MANIFEST, DEVICE_STATE)
MAX_STEM = 80
"""Characters of a block name kept in its file name (255 bytes is the usual limit)."""
CHECKSUMS = ("ram-digest", "sha256", "none")
"""What the manifest holds per block: xbzrle's RAM digest (the default: the
x-ram-digest section's value, taken from the digest table the page loader
keeps as it writes each page, or for a block written otherwise (mapped-ram)
read from the file's data extents only, so a sparse block costs what it
holds), SHA-256 of the file (any tool checks it,
but it reads every byte of the holes too), or nothing."""
WRITE_FDS = 8
"""Blocks, the largest first, whose file stays open for the page loader's
writes; the others (ROMs and the like: little data) are written through their
mapping alone."""
_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]+")
_DIGEST_CHUNK = 16 << 20

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long)
_libc.munmap.restype = ctypes.c_int
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_MAP_FAILED = ctypes.c_void_p(-1).value
_view_of_memory = ctypes.pythonapi.PyMemoryView_FromMemory
_view_of_memory.restype = ctypes.py_object
_view_of_memory.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int)
_PyBUF_WRITE = 0x200


def block_file_name(name: str, taken: set[str]) -> str:
    """A valid file name for a RAM block name such as "/rom@etc/acpi/tables", unique in ``taken``.

    Names that escaping leaves intact (but for leading slashes) keep their
    readable form; any other is cut to MAX_STEM characters and gets 12 hex
    digits of its SHA-256, so distinct names never pile up on one stem.
    """
    stem = _UNSAFE.sub("_", name.strip("/")).strip("._") or "block"
    if stem != name.lstrip("/") or len(stem) > MAX_STEM:
        stem = f"{stem[:MAX_STEM]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    candidate, n = f"{stem}.ram", 1
    while candidate in taken:  # only names equal up to leading slashes get here
        n += 1
        candidate = f"{stem}-{n}.ram"
    taken.add(candidate)
    return candidate


class _FileMap:
    """A shared mapping of a whole file, with no descriptor kept open."""

    __slots__ = ("address", "size", "view", "fd")

    def __init__(self, path: Path, size: int, keep_fd: bool = False) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(fd, size)
            address = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE,
                                 mmap.MAP_SHARED, fd, 0)
            if address in (None, _MAP_FAILED):
                code = ctypes.get_errno()
                raise OSError(code, f"mmap of {path}: {os.strerror(code)}")
        except BaseException:
            os.close(fd)
            raise
        if not keep_fd:
            os.close(fd)
        self.fd = fd if keep_fd else -1
        self.address = address
        self.size = size
        self.view: memoryview = _view_of_memory(address, size, _PyBUF_WRITE)

    def close(self) -> None:
        """Unmap; every view taken from ``view`` must have been released before."""
        if self.address is not None:
            self.view.release()
            _libc.munmap(self.address, self.size)
            self.address = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class RamFiles:
    """One sparse, mapped file per RAM block, in ``out_dir``.

    ``maps`` gives a writable memoryview per block name; release every view
    derived from them (``PageLoader.release``) before ``close``.  ``fds``:
    an open descriptor of the file behind the map, for the largest
    ``WRITE_FDS`` blocks (closed by ``close``).
    """

    def __init__(self, out_dir: Path, blocks: tuple[tuple[str, int], ...],
                 max_ram: int = DEFAULT_MAX_RAM, stream_offset: int = -1) -> None:
        total = sum(size for _, size in blocks)
        if total > max_ram:
            raise StreamError(
                f"stream offset {stream_offset}: the stream announces {total} bytes of RAM, "
                f"more than the {max_ram}-byte limit (raise it with --max-ram)", stream_offset)
        self.out_dir = out_dir
        self.files: dict[str, str] = {}
        self.maps: dict[str, memoryview | bytearray] = {}
        self.fds: dict[str, int] = {}
        self._sizes: dict[str, int] = {}
        self._mapped: list[_FileMap] = []
        taken: set[str] = set()
        largest = sorted(range(len(blocks)), key=lambda i: -blocks[i][1])[:WRITE_FDS]
        try:
            for index, (name, size) in enumerate(blocks):
                file_name = block_file_name(name, taken)
                self.files[name] = file_name
                self._sizes[name] = size
                if size:
                    mapped = _FileMap(out_dir / file_name, size, keep_fd=index in largest)
                    self._mapped.append(mapped)
                    self.maps[name] = mapped.view
                    if mapped.fd >= 0:
                        self.fds[name] = mapped.fd
                else:  # an empty block cannot be mapped; it has nothing to write anyway
                    (out_dir / file_name).write_bytes(b"")
                    self.maps[name] = bytearray()
        except OSError as exc:
            self.close()
            raise StreamError(f"stream offset {stream_offset}: cannot create the RAM block "
                              f"files: {exc}", stream_offset) from exc

    def sizes(self) -> dict[str, int]:
        return dict(self._sizes)

    def manifest_blocks(self, checksum: str = "ram-digest",
                        known: dict[str, str] | None = None) -> list[dict[str, object]]:
        """Name, file, size and checksum (see CHECKSUMS) of every block (after close).

        ``known``: RAM digests already taken (from the loader's digest tables);
        the files of the other blocks are read for theirs.
        """
        if checksum not in CHECKSUMS:
            raise ParameterError(f"unknown checksum {checksum!r}: one of {', '.join(CHECKSUMS)}")
        blocks: list[dict[str, object]] = []
        for name, size in self._sizes.items():
            path = self.out_dir / self.files[name]
            entry: dict[str, object] = {"name": name, "file": self.files[name], "size": size,
                                        "sha256": None}
            if checksum == "sha256":
                entry["sha256"] = _file_sha256(path)
            elif checksum == "ram-digest":
                entry["ram_digest"] = (known or {}).get(name) or file_digest(path, size)
            blocks.append(entry)
        return blocks

    def close(self) -> None:
        for mapped in self._mapped:
            mapped.close()
        self._mapped = []
        self.maps = {}
        self.fds = {}


def file_digest(path: Path, size: int) -> str:
    """The RAM digest (:func:`xbzrle.guest.digest.ram_digest`) of a sparse file's contents.

    Reads only the data extents the file system reports; a hole is zero
    pages, which the digest leaves out anyway.  Work follows the data.
    """
    if TYPE_CHECKING:  # type checkers see the compiled core's stub (_core.pyi)
        from .. import _core as core
    else:
        core = load_core()
    hasher = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=32)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for start, end in _data_extents(fd, size):
            for chunk_start in range(start, end, _DIGEST_CHUNK):
                data = os.pread(fd, min(_DIGEST_CHUNK, end - chunk_start), chunk_start)
                if len(data) % PAGE_SIZE:  # a block that ends inside a page: zero-pad it
                    data += bytes(PAGE_SIZE - len(data) % PAGE_SIZE)
                hasher.update(core.page_hashes(data, chunk_start // PAGE_SIZE))
    finally:
        os.close(fd)
    return hasher.hexdigest()


def _data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """Page-aligned ``(start, end)`` ranges of ``fd`` that may hold data."""
    extents: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
            hole = os.lseek(fd, data, os.SEEK_HOLE)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after pos
                break
            return [(pos, size)]  # no SEEK_DATA here: read it all
        start = data - data % PAGE_SIZE
        end = min(size, -(-hole // PAGE_SIZE) * PAGE_SIZE)
        if extents and extents[-1][1] >= start:
            extents[-1] = (extents[-1][0], end)
        else:
            extents.append((start, end))
        pos = end
    return extents


def prepare_output_dir(out_dir: Path) -> None:
    """Create ``out_dir``; reuse it only if empty or holding an earlier extraction."""
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = list(out_dir.iterdir())
    if not entries:
        return
    if not (out_dir / MANIFEST).is_file():
        raise ParameterError(f"output directory {out_dir} is not empty and holds no {MANIFEST}: "
                             "choose an empty or new directory")
    for entry in entries:
        if entry.is_file() and (entry.suffix == ".ram" or entry.name in OUTPUT_FILES):
            os.unlink(entry)


def _file_sha256(path: Path) -> str:
    """SHA-256 of a whole file, holes included (read in chunks: memory stays small)."""
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_DIGEST_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()
