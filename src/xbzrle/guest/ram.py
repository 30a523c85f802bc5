"""RAM blocks: named, page-aligned guest memory the C code reads in place."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from .._backend import load_core
from ..errors import ParameterError
from ..sizes import PAGE_SIZE
from .digest import ram_digest

if TYPE_CHECKING:  # type checkers see the compiled core's stub (_core.pyi)
    from .. import _core
else:
    _core = load_core()

MAX_NAME_BYTES = 255  # a RAM block's name travels as a length byte plus the name


def check_block_name(name: str) -> str:
    """Reject names the migration stream could not carry."""

    if not isinstance(name, str) or not 1 <= len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        raise ParameterError(f"RAM block name {name!r}: expected 1..255 bytes of UTF-8")
    return name


class RamBlock(_core.GuestRam):
    """One named block of guest RAM (QEMU's RAMBlock, e.g. ``pc.ram``).

    The memory is an anonymous private mapping: pages never written read as
    zero and cost nothing.  It asks for transparent huge pages, as QEMU's
    RAM does; a destination goes back to 4 KiB pages where this machine's
    host takes freed memory back (:mod:`xbzrle.guest.hugepages`).  The
    object exports it through the buffer protocol, writable and without
    copying, so ``memoryview(block)``, numpy and the C save/load loops all
    work on the live bytes.
    """

    _name: str  # set in __new__ (GuestRam instances have a __dict__)

    def __new__(cls, name: str, size: int) -> RamBlock:
        self = super().__new__(cls, size)
        self._name = check_block_name(name)
        with contextlib.suppress(OSError):  # a kernel without THP: 4 KiB pages it is
            self.advise_huge_pages()
        return self

    @property
    def name(self) -> str:
        return self._name

    def digest(self) -> str:
        """Digest of the whole block, hex: equal digests prove equal RAM.

        See :mod:`xbzrle.digest`: memory speed, never-touched pages skipped.
        """
        return ram_digest(self)

    def page(self, index: int) -> memoryview:
        """A writable view of page ``index`` (release it before closing the block)."""
        if not 0 <= index < self.npages:
            raise IndexError(f"page {index} outside 0..{self.npages - 1} of {self.name}")
        with memoryview(self) as view:
            return view[index * PAGE_SIZE : (index + 1) * PAGE_SIZE]

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.size} bytes"
        return f"<RamBlock {self.name!r} {state}>"
