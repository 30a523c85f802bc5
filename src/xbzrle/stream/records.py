"""The events a stream parser emits and a stream writer is driven by.

Every event carries ``stream_offset``: the byte offset in the stream where
its record began.  It is keyword-only and left out of equality, so an event
built by hand compares equal to the same event parsed from any position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    """Base of all stream events."""

    stream_offset: int = field(default=-1, kw_only=True, compare=False)


@dataclass(frozen=True)
class Header(Event):
    """The file header: magic ``QEVM`` and the stream version (always 3)."""

    version: int


@dataclass(frozen=True)
class Configuration(Event):
    """QEMU_VM_CONFIGURATION: the source's machine type and checked capabilities."""

    machine: str
    capabilities: tuple[str, ...] = ()
    uuid: bytes | None = None


@dataclass(frozen=True)
class SectionStart(Event):
    """QEMU_VM_SECTION_START: the setup stage of an iterable section ("ram")."""

    section_id: int
    idstr: str
    instance_id: int
    version_id: int


@dataclass(frozen=True)
class SectionFull(Event):
    """QEMU_VM_SECTION_FULL: a section sent in one piece (devices, our digest)."""

    section_id: int
    idstr: str
    instance_id: int
    version_id: int


@dataclass(frozen=True)
class SectionPart(Event):
    """QEMU_VM_SECTION_PART: one more round of an iterable section."""

    section_id: int


@dataclass(frozen=True)
class EmptyParts(Event):
    """``count`` consecutive PART sections that held nothing but their EOS (and footer).

    QEMU sends one when a rate-limit slice found no dirty page.  The parser
    folds a run of them into one event, so a stream made of nothing else
    costs one event per run instead of three per 13 bytes.
    """

    section_id: int
    count: int


@dataclass(frozen=True)
class SectionEnd(Event):
    """QEMU_VM_SECTION_END: the last round, sent with the guest stopped."""

    section_id: int


@dataclass(frozen=True)
class SectionFooter(Event):
    """QEMU_VM_SECTION_FOOTER: repeats the id of the section just finished."""

    section_id: int


@dataclass(frozen=True)
class RamBlocks(Event):
    """RAM_SAVE_FLAG_MEM_SIZE: the total RAM size and every block's size."""

    total: int
    blocks: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class MappedRamBlock(Event):
    """A mapped-ram block header: where its page bitmap and its pages sit in the file.

    Bit ``i`` of the bitmap (``bitmap_size`` bytes of little-endian 64-bit words at
    ``bitmap_offset``) says page ``i`` is at ``pages_offset + i * page_size``; the
    stream goes on at ``pages_end``.  The parser checked the layout; the bytes are
    read with random access by whoever holds the file (:mod:`xbzrle.qemu.mappedram`).
    """

    block: str
    size: int
    version: int
    page_size: int
    bitmap_offset: int
    pages_offset: int

    @property
    def pages(self) -> int:
        return self.size // self.page_size

    @property
    def bitmap_size(self) -> int:
        """QEMU's BITS_TO_LONGS(pages) * sizeof(unsigned long), 64-bit hosts."""
        return (self.pages + 63) // 64 * 8

    @property
    def pages_end(self) -> int:
        return self.pages_offset + self.size


@dataclass(frozen=True)
class ZeroPage(Event):
    """A page whose every byte equals ``fill`` (QEMU always sends 0)."""

    block: str
    offset: int
    fill: int = 0


@dataclass(frozen=True)
class NormalPage(Event):
    """A page sent whole."""

    block: str
    offset: int
    data: bytes


@dataclass(frozen=True)
class XbzrlePage(Event):
    """An XBZRLE delta against the page the destination already holds."""

    block: str
    offset: int
    delta: bytes


@dataclass(frozen=True)
class EndOfSection(Event):
    """RAM_SAVE_FLAG_EOS: the end of one ram section's payload."""


@dataclass(frozen=True)
class Digest(Event):
    """Our "xbzrle-digest" section: ``{block name: (size, digest bytes)}``."""

    blocks: dict[str, tuple[int, bytes]]


@dataclass(frozen=True)
class Command(Event):
    """QEMU_VM_COMMAND, kept as its number and raw payload."""

    cmd: int
    data: bytes


@dataclass(frozen=True)
class Eof(Event):
    """QEMU_VM_EOF: the destination has everything it needs to run the guest."""


@dataclass(frozen=True)
class VmDescription(Event):
    """The JSON description after EOF: a dict, or the text if it is not a JSON object."""

    json: dict[str, Any] | str


@dataclass(frozen=True)
class DeviceState(Event):
    """Raw bytes of device state we do not interpret; ``offset`` is their stream offset.

    How the bytes are cut into events depends on how the input was fed:
    concatenate consecutive ``DeviceState.data`` to get the device state.
    """

    offset: int
    data: bytes


@dataclass(frozen=True)
class PagesLoaded(Event):
    """A run of page records that a page sink (the compiled load loop) applied itself.

    ``counts`` are the load loop's counters: scanned, zero, normal, xbzrle, ...
    """

    pages: int
    counts: tuple[int, ...] = ()
