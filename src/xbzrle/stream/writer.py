"""A sans-IO writer of QEMU migration streams: every method returns the bytes to send.

The writer keeps the one piece of state the format needs: the block of the
previous page record, for the CONTINUE flag.  Like QEMU (``last_sent_block``
in its RAM state, reset only when a migration sets up), it persists across
sections and rounds of one migration and is cleared by :meth:`ram_blocks`.
A C save loop that writes page records itself reads and sets
:attr:`last_block` around its batch, so both keep one chain.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ParameterError
from . import constants as c

__all__ = ["StreamWriter"]

_BE16 = struct.Struct(">H")
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")
_U32_MAX = 0xFFFFFFFF
_U64_MAX = 0xFFFFFFFFFFFFFFFF


def _name(text: str, what: str) -> bytes:
    raw = text.encode("utf-8")
    if not 0 < len(raw) <= 255:
        raise ParameterError(f"{what} {text!r} must be 1 to 255 bytes of UTF-8")
    return bytes((len(raw),)) + raw


def _u32(value: int, what: str) -> bytes:
    if not 0 <= value <= _U32_MAX:
        raise ParameterError(f"{what} {value} does not fit in 32 bits")
    return _BE32.pack(value)


class StreamWriter:
    """Builds the records of one migration stream, QEMU 7.2 layout."""

    def __init__(self, send_footers: bool = True) -> None:
        self.send_footers = send_footers
        self.last_block: str | None = None
        self._blocks: dict[str, int] = {}

    # -- file and sections -----------------------------------------------

    def header(self) -> bytes:
        return _BE32.pack(c.MAGIC) + _BE32.pack(c.VERSION)

    def configuration(self, machine: str, capabilities: Iterable[str] = ()) -> bytes:
        """QEMU_VM_CONFIGURATION, with a capabilities subsection when any are given."""
        raw = machine.encode("utf-8")
        out = bytes((c.VM_CONFIGURATION,)) + _u32(len(raw), "machine name length") + raw
        caps = list(capabilities)
        if caps:
            out += (
                bytes((c.VM_SUBSECTION,))
                + _name(c.SUBSECTION_CAPABILITIES, "subsection name")
                + _BE32.pack(1)
                + _BE32.pack(len(caps))
                + b"".join(_name(cap, "capability") for cap in caps)
            )
        return out

    def _section_header(
        self, kind: int, section_id: int, idstr: str, instance_id: int, version_id: int
    ) -> bytes:
        return (
            bytes((kind,))
            + _u32(section_id, "section id")
            + _name(idstr, "section name")
            + _u32(instance_id, "instance id")
            + _u32(version_id, "section version")
        )

    def section_start(
        self, section_id: int, idstr: str, instance_id: int, version_id: int
    ) -> bytes:
        return self._section_header(c.VM_SECTION_START, section_id, idstr, instance_id, version_id)

    def section_full(self, section_id: int, idstr: str, instance_id: int, version_id: int) -> bytes:
        return self._section_header(c.VM_SECTION_FULL, section_id, idstr, instance_id, version_id)

    def section_part(self, section_id: int) -> bytes:
        return bytes((c.VM_SECTION_PART,)) + _u32(section_id, "section id")

    def section_end(self, section_id: int) -> bytes:
        return bytes((c.VM_SECTION_END,)) + _u32(section_id, "section id")

    def footer(self, section_id: int) -> bytes:
        """The footer after a section's payload; empty when footers are off (machines < 2.4)."""
        if not self.send_footers:
            return b""
        return bytes((c.VM_SECTION_FOOTER,)) + _u32(section_id, "section id")

    def command(self, cmd: int, data: bytes = b"") -> bytes:
        if not 0 <= cmd <= 0xFFFF or len(data) > 0xFFFF:
            raise ParameterError("command number and data length must fit in 16 bits")
        return bytes((c.VM_COMMAND,)) + _BE16.pack(cmd) + _BE16.pack(len(data)) + bytes(data)

    def eof(self) -> bytes:
        return bytes((c.VM_EOF,))

    def vmdescription(self, obj: Mapping[str, Any] | str) -> bytes:
        """The JSON description QEMU appends after EOF (for analysis tools only)."""
        text = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
        raw = text.encode("utf-8")
        return bytes((c.VM_VMDESCRIPTION,)) + _u32(len(raw), "description length") + raw

    # -- RAM records ------------------------------------------------------

    def ram_blocks(self, blocks: Iterable[tuple[str, int]]) -> bytes:
        """The MEM_SIZE record of the ram section's setup; starts a new CONTINUE chain."""
        table = list(blocks)
        total = sum(size for _, size in table)
        if total % c.PAGE_SIZE or total > _U64_MAX:
            raise ParameterError(
                f"total RAM 0x{total:x} must be a multiple of {c.PAGE_SIZE} below 2**64"
            )
        names = [name for name, _ in table]
        if len(set(names)) != len(names):
            raise ParameterError(f"duplicate RAM block names in {names}")
        out = [_BE64.pack(total | c.RAM_SAVE_FLAG_MEM_SIZE)]
        for name, size in table:
            if size <= 0:
                # A reader stops once the sizes add up, so an empty block could be lost.
                raise ParameterError(f"RAM block {name!r} has size {size}: expected > 0")
            out.append(_name(name, "RAM block name") + _BE64.pack(size))
        self._blocks = dict(table)
        self.last_block = None
        return b"".join(out)

    def _page_header(self, block: str, offset: int, flag: int) -> bytes:
        if offset % c.PAGE_SIZE or not 0 <= offset <= _U64_MAX - c.FLAGS_MASK:
            raise ParameterError(f"page offset 0x{offset:x} is not a page-aligned 64-bit offset")
        if self._blocks:
            size = self._blocks.get(block)
            if size is None:
                raise ParameterError(f"unknown RAM block {block!r}")
            if offset + c.PAGE_SIZE > size:
                raise ParameterError(
                    f"page offset 0x{offset:x} outside RAM block {block!r} of size 0x{size:x}"
                )
        if block == self.last_block:
            return _BE64.pack(offset | flag | c.RAM_SAVE_FLAG_CONTINUE)
        header = _BE64.pack(offset | flag) + _name(block, "RAM block name")
        self.last_block = block
        return header

    def zero_page(self, block: str, offset: int) -> bytes:
        return self._page_header(block, offset, c.RAM_SAVE_FLAG_ZERO) + b"\x00"

    def normal_page(self, block: str, offset: int, data: bytes | bytearray | memoryview) -> bytes:
        if len(data) != c.PAGE_SIZE:
            raise ParameterError(f"page data of {len(data)} bytes: expected {c.PAGE_SIZE}")
        return self._page_header(block, offset, c.RAM_SAVE_FLAG_PAGE) + bytes(data)

    def xbzrle_page(self, block: str, offset: int, delta: bytes | bytearray | memoryview) -> bytes:
        if len(delta) > c.MAX_XBZRLE_LEN:
            raise ParameterError(
                f"XBZRLE delta of {len(delta)} bytes: expected at most {c.MAX_XBZRLE_LEN}"
            )
        return (
            self._page_header(block, offset, c.RAM_SAVE_FLAG_XBZRLE)
            + bytes((c.ENCODING_FLAG_XBZRLE,))
            + _BE16.pack(len(delta))
            + bytes(delta)
        )

    def eos(self) -> bytes:
        return _BE64.pack(c.RAM_SAVE_FLAG_EOS)

    # -- our digest section ----------------------------------------------

    def digest(
        self,
        blocks: Mapping[str, tuple[int, bytes]],
        section_id: int = c.DIGEST_SECTION_ID,
    ) -> bytes:
        """The whole "xbzrle-digest" FULL section: header, payload and footer."""
        out = [
            self.section_full(section_id, c.DIGEST_IDSTR, 0, c.DIGEST_VERSION),
            _u32(len(blocks), "digest block count"),
        ]
        for name, (size, digest) in blocks.items():
            if not 0 <= size <= _U64_MAX or len(digest) > 255:
                raise ParameterError(
                    f"digest of block {name!r}: size must fit 64 bits, digest at most 255 bytes"
                )
            out.append(
                _name(name, "RAM block name")
                + _BE64.pack(size)
                + bytes((len(digest),))
                + bytes(digest)
            )
        out.append(self.footer(section_id))
        return b"".join(out)
