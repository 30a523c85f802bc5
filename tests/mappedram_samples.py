"""Mapped-ram files written by hand to QEMU's layout, independent of the reader.

QEMU 7.2 (installed here) has no mapped-ram, so the tests write the files
themselves, following docs/devel/migration/mapped-ram.rst and
migration/ram.c of QEMU 9.0+: ``mapped_ram_setup_ramblock`` writes, after
each block's ``idstr`` and ``used_length`` in the MEM_SIZE list, a packed
header (be32 version 1, be64 page size, be64 bitmap offset, be64 pages
offset), with the bitmap right after the header and the pages at the next
1 MiB boundary; the stream goes on at ``pages_offset + used_length``.
Pages are written at ``pages_offset + offset`` whenever they are sent, zero
pages only clear their bit, and ``ram_save_complete`` writes the bitmaps
(64-bit little-endian words) at the end.  The file is sparse where nothing
was written, as QEMU's is.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import BinaryIO

from stream_samples import be16, be32, be64, name

PAGE = 4096
ALIGN = 0x100000  # QEMU's MAPPED_RAM_FILE_OFFSET_ALIGNMENT
HEADER = struct.Struct(">IQQQ")
MACHINE = "pc-q35-10.2"
DEVICE_BYTES = bytes(range(256)) * 2
VMDESC = {"page_size": PAGE, "devices": [{"name": "timer", "instance_id": 0, "version": 2}]}
SWITCHOVER_START = 0x0B




def configuration(machine: str, capabilities: tuple[str, ...]) -> bytes:
    out = bytes([0x07]) + be32(len(machine)) + machine.encode()
    if capabilities:
        out += (bytes([0x05]) + name("configuration/capabilities") + be32(1)
                + be32(len(capabilities)) + b"".join(name(c) for c in capabilities))
    return out


def section(kind: int, sid: int, idstr: str, instance: int, version: int) -> bytes:
    return bytes([kind]) + be32(sid) + name(idstr) + be32(instance) + be32(version)


def footer(sid: int) -> bytes:
    return bytes([0x7E]) + be32(sid)


def command(cmd: int, data: bytes = b"") -> bytes:
    return bytes([0x08]) + be16(cmd) + be16(len(data)) + data


EOS = be64(0x10)


@dataclass
class Block:
    """Where one block's header, bitmap and pages went, as a reader should find them."""

    name: str
    size: int
    entry_offset: int = 0  # the idstr length byte of its MEM_SIZE entry
    header_offset: int = 0
    bitmap_offset: int = 0
    pages_offset: int = 0
    bitmap: dict[int, int] = field(default_factory=dict)  # byte index -> byte, sparse

    @property
    def pages(self) -> int:
        return self.size // PAGE

    @property
    def bitmap_size(self) -> int:
        return (self.pages + 63) // 64 * 8


class MappedRamWriter:
    """Writes one mapped-ram migration into ``f`` (a real, seekable file), as QEMU does.

    ``header_fields`` can replace a block's header fields (hostile variants):
    ``{"blockname": {"version": 2, "pages_offset": ...}}``.
    """

    RAM_ID = 2

    def __init__(self, f: BinaryIO, blocks: list[tuple[str, int]], *, machine: str = MACHINE,
                 capabilities: tuple[str, ...] = ("mapped-ram",),
                 header_fields: dict[str, dict[str, int]] | None = None) -> None:
        self.f = f
        self.pos = 0  # where the sequential stream goes on
        self.blocks = {n: Block(n, s) for n, s in blocks}
        self.capabilities = capabilities
        self.machine = machine
        self.header_fields = header_fields or {}
        self.device_offset = -1

    def _put(self, data: bytes) -> None:
        self.f.seek(self.pos)
        self.f.write(data)
        self.pos += len(data)

    def setup(self, after_blocks: bool = True) -> None:
        self._put(b"QEVM" + be32(3) + configuration(self.machine, self.capabilities))
        self._put(section(0x01, self.RAM_ID, "ram", 0, 4))
        total = sum(b.size for b in self.blocks.values())
        self._put(be64(total | 0x04))
        for b in self.blocks.values():
            b.entry_offset = self.pos
            self._put(name(b.name) + be64(b.size))
            b.header_offset = self.pos
            b.bitmap_offset = self.pos + HEADER.size
            b.pages_offset = -(-(b.bitmap_offset + b.bitmap_size) // ALIGN) * ALIGN
            fields = {"version": 1, "page_size": PAGE, "bitmap_offset": b.bitmap_offset,
                      "pages_offset": b.pages_offset}
            fields.update(self.header_fields.get(b.name, {}))
            self._put(HEADER.pack(fields["version"], fields["page_size"],
                                  fields["bitmap_offset"], fields["pages_offset"]))
            self.pos = b.pages_offset + b.size  # room for the pages: a hole until written
        if after_blocks:
            self._put(EOS + footer(self.RAM_ID))

    def page(self, block: str, offset: int, data: bytes) -> None:
        """Send one page: a zero page only clears its bit, any other goes to its slot."""
        b = self.blocks[block]
        index = offset // PAGE
        byte = b.bitmap.get(index // 8, 0)
        if data == bytes(PAGE):
            b.bitmap[index // 8] = byte & ~(1 << (index % 8))
            return
        self.f.seek(b.pages_offset + offset)
        self.f.write(data)
        b.bitmap[index // 8] = byte | 1 << (index % 8)

    def iterate(self) -> None:
        self._put(bytes([0x02]) + be32(self.RAM_ID) + EOS + footer(self.RAM_ID))

    def complete(self, *, switchover_start: bool = True, devices: bool = True) -> None:
        if switchover_start:
            self._put(command(SWITCHOVER_START))
        self._put(bytes([0x03]) + be32(self.RAM_ID))
        for b in self.blocks.values():  # ram_save_file_bmap: the bitmaps, at the end
            for index, byte in b.bitmap.items():
                self.f.seek(b.bitmap_offset + index)
                self.f.write(bytes([byte]))
        self._put(EOS + footer(self.RAM_ID))
        self.device_offset = self.pos
        if devices:
            self._put(section(0x04, 0, "timer", 0, 2) + DEVICE_BYTES)
            self._put(section(0x04, 3, "cpu", 0, 17) + DEVICE_BYTES + footer(3))
        text = json.dumps(VMDESC).encode()
        self._put(b"\x00" + bytes([0x06]) + be32(len(text)) + text)
        self.f.truncate(self.pos)
        self.f.flush()


def write_file(path, ram: dict[str, bytes | bytearray], **options) -> MappedRamWriter:
    """A whole non-live save of ``ram`` (every page once, zero pages skipped)."""
    with open(path, "w+b") as f:
        w = MappedRamWriter(f, [(n, len(data)) for n, data in ram.items()], **options)
        w.setup()
        for n, data in ram.items():
            for offset in range(0, len(data), PAGE):
                w.page(n, offset, bytes(data[offset:offset + PAGE]))
        w.complete()
    return w
