"""QEMU-compatible migration stream records, sans-IO (bytes in, events out).

``StreamParser`` turns bytes into the events of :mod:`.records`;
``StreamWriter`` turns calls into bytes.  Neither does I/O.  The layout
follows QEMU 7.2 (x86, 4 KiB pages); see ``docs/stream.md``.
"""

from __future__ import annotations

from . import constants
from .parser import NEED_DATA, StreamParser, find_vmdescription, parse_bytes
from .records import (
    Command,
    Configuration,
    DeviceState,
    Digest,
    EmptyParts,
    EndOfSection,
    Eof,
    Event,
    Header,
    MappedRamBlock,
    NormalPage,
    PagesLoaded,
    RamBlocks,
    SectionEnd,
    SectionFooter,
    SectionFull,
    SectionPart,
    SectionStart,
    VmDescription,
    XbzrlePage,
    ZeroPage,
)
from .writer import StreamWriter

__all__ = [
    "NEED_DATA",
    "Command",
    "Configuration",
    "DeviceState",
    "Digest",
    "EndOfSection",
    "Eof",
    "Event",
    "Header",
    "MappedRamBlock",
    "NormalPage",
    "PagesLoaded",
    "RamBlocks",
    "SectionEnd",
    "SectionFooter",
    "SectionFull",
    "EmptyParts",
    "SectionPart",
    "SectionStart",
    "StreamParser",
    "StreamWriter",
    "VmDescription",
    "XbzrlePage",
    "ZeroPage",
    "constants",
    "find_vmdescription",
    "parse_bytes",
]
