"""The hostile inputs of issue 13 (sections 2 and 3), built by hand.

Each is a few bytes to a megabyte that once cost far more work or memory
than it carried, or escaped as a traceback.  Tests and the benchmark
``benchmarks/hostile.py`` share them.
"""

from __future__ import annotations

import json

from stream_samples import EOS, PAGE, be32, be64, configuration, header, name, section


def ram_start(blocks: list[tuple[str, int]], total: int | None = None) -> bytes:
    """Header, configuration, the 'ram' START section and its MEM_SIZE record."""
    if total is None:
        total = sum(size for _, size in blocks)
    out = header() + configuration() + section(0x01, 2, "ram", 0, 4)
    out += be64(total | 0x04)
    out += b"".join(bytes([len(n.encode())]) + n.encode() + be64(s) for n, s in blocks)
    return out


def huge_sparse_block(size: int = 16 << 30) -> bytes:
    """One block announced at ``size`` bytes, one normal page written at its end."""
    out = ram_start([("pc.ram", size)]) + EOS
    out += bytes([0x03]) + be32(2)
    out += be64((size - PAGE) | 0x08) + name("pc.ram") + bytes([0x5A]) * PAGE
    return out + EOS + bytes([0x00])


def many_blocks(count: int, size: int = PAGE, prefix: str = "b") -> bytes:
    """A MEM_SIZE record listing ``count`` distinct blocks, then a complete stream."""
    blocks = [(f"{prefix}{i}", size) for i in range(count)]
    out = ram_start(blocks) + EOS
    out += bytes([0x03]) + be32(2) + be64(0x0 | 0x02) + name(blocks[-1][0]) + b"\x00"
    return out + EOS + bytes([0x00])


def long_block_name(length: int = 255) -> bytes:
    """A block whose name is ``length`` bytes (at most 255 on the wire)."""
    block = "n" * length
    out = ram_start([(block, PAGE)]) + EOS
    out += bytes([0x03]) + be32(2) + be64(0x0 | 0x08) + name(block) + bytes([7]) * PAGE
    return out + EOS + bytes([0x00])


def nested_vmdescription(depth: int = 100_000) -> bytes:
    """A complete small stream whose VMDESCRIPTION nests ``depth`` JSON arrays."""
    doc = b'{"devices":' + b"[" * depth + b"]" * depth + b"}"
    out = ram_start([("pc.ram", PAGE)]) + EOS
    out += bytes([0x03]) + be32(2) + be64(0x02) + name("pc.ram") + b"\x00" + EOS
    return out + bytes([0x00, 0x06]) + be32(len(doc)) + doc


def empty_section_loop(count: int) -> bytes:
    """``count`` empty PART sections (5 bytes + EOS each) in a RAM section."""
    out = ram_start([("pc.ram", PAGE)]) + EOS
    part = bytes([0x02]) + be32(2) + EOS
    return out + part * count


def lied_total(total: int = 1 << 40) -> bytes:
    """MEM_SIZE says ``total`` bytes but lists one small block; an empty name follows."""
    out = header() + configuration() + section(0x01, 2, "ram", 0, 4)
    out += be64(total | 0x04) + name("pc.ram") + be64(PAGE)
    # What follows is a page record, which a reader still inside the block
    # list takes for a block with an empty name.
    return out + be64(0x10) + be64(0x10)


def vmdesc_json(depth: int) -> str:
    return json.dumps({"devices": []})[:-1] + "[" * depth


def zero_page_records(count: int, block_pages: int | None = None) -> bytes:
    """A RAM section of ``count`` 9-byte ZERO records (a never-written guest's first pass).

    With ``block_pages`` the records loop over a block of that many pages, so
    a new round starts every ``block_pages`` records (a hostile loop).
    """
    pages = block_pages or count
    out = ram_start([("pc.ram", pages * PAGE)]) + EOS + bytes([0x02]) + be32(2)
    out += be64(0x02) + name("pc.ram") + b"\x00"
    out += b"".join(be64((i % pages) * PAGE | 0x22) + b"\x00" for i in range(1, count))
    return out + EOS + bytes([0x03]) + be32(2) + EOS + bytes([0x00])
