"""Machine types: which RAM blocks a guest has, and the name its stream announces.

A QEMU destination accepts a migration only when the stream's
``configuration`` section names its own machine type ("Machine type
received is ... and local is ...") and every RAM block of the stream is one
of its own, same name and same size ("Unknown ramblock", "Length
mismatch").  A machine type here is that contract written down: the name to
announce and the block list, in the order QEMU's MEM_SIZE record lists
them (largest maximum size first).

The block lists are what QEMU 7.2 (Debian's qemu-system-x86_64) reports
with ``info ramblock``:

- ``none`` (``-machine none -m SIZE``): one block ``ram`` of SIZE.
- ``pc`` (``-machine pc -m SIZE -nodefaults``, announced as its 7.2 name
  ``pc-i440fx-7.2``): ``pc.ram`` of SIZE and the firmware blocks below.
  Other devices add blocks of their own (``-vga std`` adds ``vga.vram`` and
  ``vga.rom``, a NIC its option ROM), which is why QEMU must run with
  ``-nodefaults`` to match.
- ``xbzrle-vm`` (the default): our own, one block ``pc.ram``, or any
  ``blocks`` a caller lays out; only ``xbzrle vm`` processes accept it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ParameterError

KiB = 1 << 10


@dataclass(frozen=True)
class MachineType:
    """One machine: the name its streams announce and its fixed blocks besides RAM."""

    name: str
    announced: str  # the ``configuration`` section's machine name
    ram_block: str  # the block sized by ``ram=``
    firmware: tuple[tuple[str, int], ...] = ()  # fixed-size blocks after it, in stream order
    custom_blocks: bool = False  # whether ``Guest(blocks=...)`` may replace the layout


#: QEMU 7.2's ``-machine pc -nodefaults`` firmware blocks and their used sizes.
PC_FIRMWARE_BLOCKS = (
    ("/rom@etc/acpi/tables", 128 * KiB),  # resizable up to 2 MiB: 128 KiB in use
    ("pc.bios", 256 * KiB),  # SeaBIOS
    ("pc.rom", 128 * KiB),  # option ROM space
    ("/rom@etc/table-loader", 4 * KiB),
    ("/rom@etc/acpi/rsdp", 4 * KiB),
)

DEFAULT_MACHINE = "xbzrle-vm"

MACHINES: Mapping[str, MachineType] = {
    m.name: m
    for m in (
        MachineType(DEFAULT_MACHINE, DEFAULT_MACHINE, "pc.ram", custom_blocks=True),
        MachineType("none", "none", "ram"),
        MachineType("pc", "pc-i440fx-7.2", "pc.ram", PC_FIRMWARE_BLOCKS),
    )
}

#: Other spellings QEMU accepts for the same machine.
ALIASES = {"pc-i440fx-7.2": "pc"}


def machine_type(name: str) -> MachineType:
    """The machine called ``name`` (or one of its aliases); ParameterError otherwise."""
    found = MACHINES.get(ALIASES.get(name, name))
    if found is None:
        raise ParameterError(
            f"machine type {name!r} is not supported: expected one of {', '.join(MACHINES)}"
        )
    return found
