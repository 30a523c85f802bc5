"""Which guest RAM asks the kernel for transparent huge pages.

QEMU advises its RAM ``MADV_HUGEPAGE``, and so does every ``RamBlock``:
reading RAM misses the TLB less, and pinning it (the source's ``vmsplice``
into an ``exec:`` pipe) walks one entry per 2 MiB.  Measured here with the
source's RAM on huge pages against 4 KiB ones, interleaved: 1 GiB into
``exec:cat > /dev/null`` 1.11-1.17x faster; over TCP no change, where the
destination is the critical path (docs/migration.md).

The exception is RAM being filled in a hurry: a destination populates all
of it during the migration, where huge pages cost one fault per 2 MiB
instead of per 4 KiB.  That pays off on a host that keeps a virtual
machine's free memory backed.  A virtual machine whose balloon device
reports free pages to its host (virtio-balloon's free page reporting)
hands every freed 2 MiB block back within seconds, and a huge page taken
later is backed again by the host, fault by fault: measured on such a
machine, populating 1 GiB took 1.06-1.30 s on huge pages against
0.33-0.39 s on 4 KiB pages, five seconds after the last free (0.13 s
against 0.29 s right after one).  There a destination's RAM goes back to
4 KiB pages for the incoming migration (:func:`small_pages_for_incoming`),
which the reporting does not touch, and stays on them: advised huge again,
``khugepaged`` would later collapse sparse regions into whole huge pages,
and the destination's memory would no longer follow what the stream
carried.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

VIRTIO_ID_BALLOON = 5
VIRTIO_BALLOON_F_REPORTING = 5
VIRTIO_DEVICES = Path("/sys/bus/virtio/devices")


def huge_pages_pay_off(balloon_features: Iterable[str]) -> bool:
    """Whether filling fresh memory on huge pages pays off: False when a
    balloon device offers free page reporting.

    ``balloon_features``: the ``features`` strings of the machine's virtio
    balloon devices, as sysfs shows them (one character per feature bit,
    bit 0 first).
    """
    return not any(len(bits) > VIRTIO_BALLOON_F_REPORTING
                   and bits[VIRTIO_BALLOON_F_REPORTING] == "1" for bits in balloon_features)


def balloon_features(devices: Path = VIRTIO_DEVICES) -> list[str]:
    """The feature strings of the virtio balloon devices under ``devices``."""
    found: list[str] = []
    try:
        entries = list(devices.iterdir())
    except OSError:
        return found
    for entry in entries:
        try:
            if int((entry / "device").read_text(), 16) == VIRTIO_ID_BALLOON:
                found.append((entry / "features").read_text().strip())
        except (OSError, ValueError):
            continue
    return found


_PAY_OFF_HERE: bool | None = None


def huge_pages_pay_off_here() -> bool:
    """This machine's answer to :func:`huge_pages_pay_off` (looked up once per process)."""
    global _PAY_OFF_HERE
    if _PAY_OFF_HERE is None:
        _PAY_OFF_HERE = huge_pages_pay_off(balloon_features())
    return _PAY_OFF_HERE


class AdvisableRam(Protocol):
    """What small_pages_for_incoming needs of a block (a RamBlock, in practice)."""

    def advise_small_pages(self) -> None: ...


def small_pages_for_incoming(blocks: Iterable[AdvisableRam]) -> None:
    """Before an incoming migration fills ``blocks``: 4 KiB pages where
    filling huge ones is dear on this machine (nothing otherwise)."""
    if huge_pages_pay_off_here():
        return
    for block in blocks:
        with contextlib.suppress(OSError):  # a kernel without THP: 4 KiB pages already
            block.advise_small_pages()
