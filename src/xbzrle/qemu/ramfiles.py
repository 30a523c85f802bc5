"""RAM blocks as sparse files mapped into memory, for extract and receive.

The announced sizes come from the peer, so nothing is allocated from them:
each file is only truncated to its size (sparse) and mapped; pages a stream
never sends cost no disk.  The total is capped before anything is created.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
from pathlib import Path

from ..errors import ParameterError, StreamError

DEFAULT_MAX_RAM = 64 << 30
MANIFEST = "manifest.json"
DEVICE_STATE = "device-state.bin"
OUTPUT_FILES = (MANIFEST, DEVICE_STATE)
CHECKSUMS = ("sha256", "ram-digest", "none")
"""What the manifest holds per block: SHA-256 of the file (the default, any
tool checks it), xbzrle's RAM digest (the x-ram-digest section's value, 3-4x
faster: never-touched pages are skipped and the page hash runs at memory
speed, two threads), or nothing."""
_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]+")


def block_file_name(name: str, taken: set[str]) -> str:
    """A file name for a RAM block name such as "/rom@etc/acpi/tables", unique in ``taken``."""
    stem = _UNSAFE.sub("_", name.strip("/")).strip("._") or "block"
    candidate, n = f"{stem}.ram", 1
    while candidate in taken:
        n += 1
        candidate = f"{stem}-{n}.ram"
    taken.add(candidate)
    return candidate


class RamFiles:
    """One sparse, mmapped file per RAM block, in ``out_dir``."""

    def __init__(self, out_dir: Path, blocks: tuple[tuple[str, int], ...],
                 max_ram: int = DEFAULT_MAX_RAM, stream_offset: int = -1) -> None:
        total = sum(size for _, size in blocks)
        if total > max_ram:
            raise StreamError(
                f"stream offset {stream_offset}: the stream announces {total} bytes of RAM, "
                f"more than the {max_ram}-byte limit (raise it with --max-ram)", stream_offset)
        self.out_dir = out_dir
        self.files: dict[str, str] = {}
        self.maps: dict[str, mmap.mmap | bytearray] = {}
        taken: set[str] = set()
        for name, size in blocks:
            file_name = block_file_name(name, taken)
            self.files[name] = file_name
            with open(out_dir / file_name, "w+b") as f:
                f.truncate(size)
                # An empty block cannot be mapped; it has nothing to write anyway.
                self.maps[name] = mmap.mmap(f.fileno(), size) if size else bytearray()

    def sizes(self) -> dict[str, int]:
        return {name: len(ram) for name, ram in self.maps.items()}

    def manifest_blocks(self, checksum: str = "sha256") -> list[dict[str, object]]:
        """Name, file, size and checksum (see CHECKSUMS) of every block, for the manifest."""
        if checksum not in CHECKSUMS:
            raise ParameterError(f"unknown checksum {checksum!r}: one of {', '.join(CHECKSUMS)}")
        blocks: list[dict[str, object]] = []
        for name, ram in self.maps.items():
            entry: dict[str, object] = {"name": name, "file": self.files[name], "size": len(ram),
                                        "sha256": None}
            if checksum == "sha256":
                entry["sha256"] = hashlib.sha256(ram).hexdigest()
            elif checksum == "ram-digest":
                from ..guest.digest import ram_digest
                entry["ram_digest"] = ram_digest(ram)
            blocks.append(entry)
        return blocks

    def close(self) -> None:
        for ram in self.maps.values():
            if isinstance(ram, mmap.mmap):
                ram.flush()
                ram.close()
        self.maps = {}


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
