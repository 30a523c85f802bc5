"""Streams built by hand from the QEMU 7.2 layout, independent of our writer."""

from __future__ import annotations

import json
import struct

PAGE = 4096
MACHINE = "pc-i440fx-7.2"
BLOCKS = (("pc.ram", 16 * PAGE), ("vga.vram", 4 * PAGE))
DEVICE_BYTES = bytes(range(256)) * 3
VMDESC = {"page_size": PAGE, "devices": [{"name": "timer", "instance_id": 0}]}


def be16(v: int) -> bytes:
    return struct.pack(">H", v)


def be32(v: int) -> bytes:
    return struct.pack(">I", v)


def be64(v: int) -> bytes:
    return struct.pack(">Q", v)


def name(text: str) -> bytes:
    """A QEMU counted string: one length byte, then the UTF-8 bytes."""
    raw = text.encode()
    return bytes([len(raw)]) + raw


def header() -> bytes:
    return b"QEVM" + be32(3)


def configuration() -> bytes:
    return bytes([0x07]) + be32(len(MACHINE)) + MACHINE.encode()


def section(kind: int, sid: int, idstr: str, instance: int, version: int) -> bytes:
    return bytes([kind]) + be32(sid) + name(idstr) + be32(instance) + be32(version)


def footer(sid: int) -> bytes:
    return bytes([0x7E]) + be32(sid)


def mem_size() -> bytes:
    total = sum(size for _, size in BLOCKS)
    return be64(total | 0x04) + b"".join(name(n) + be64(s) for n, s in BLOCKS)


EOS = be64(0x10)


def ram_round_pages() -> bytes:
    """A zero page, a normal page (CONTINUE), an XBZRLE page in another block."""
    return (
        be64(0x2000 | 0x02)
        + name("pc.ram")
        + b"\x00"
        + be64(0x3000 | 0x08 | 0x20)
        + bytes([0xAB]) * PAGE
        + be64(0x1000 | 0x40)
        + name("vga.vram")
        + b"\x01"
        + be16(4)
        + b"\x02\x00\x01\x07"
    )


def qemu_like_stream(footers: bool = True, devices: bool = True) -> bytes:
    """Header, configuration, ram START/PART/END, device FULL sections, EOF, vmdesc."""
    foot = footer if footers else (lambda sid: b"")
    out = header() + configuration()
    out += section(0x01, 2, "ram", 0, 4) + mem_size() + EOS + foot(2)
    out += bytes([0x02]) + be32(2) + ram_round_pages() + EOS + foot(2)
    out += bytes([0x03]) + be32(2) + be64(0x0 | 0x02 | 0x20) + b"\x00" + EOS + foot(2)
    if devices:
        out += section(0x04, 0, "timer", 0, 2) + DEVICE_BYTES
        out += section(0x04, 3, "cpu", 0, 17) + DEVICE_BYTES + foot(3)
    text = json.dumps(VMDESC).encode()
    return out + b"\x00" + bytes([0x06]) + be32(len(text)) + text
