"""The guest being migrated: RAM blocks, dirty-page tracking, workloads.

Knows nothing of migration.  The compiled core does the work (there is no
pure-Python twin: threads writing RAM and kernel dirty logs need C).
"""

from __future__ import annotations

from ..sizes import MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, PAGE_SIZE, block_size, parse_size
from .dirtylog import TRACKERS, DirtyBitmap, DirtyLog
from .machine import DEFAULT_BLOCK, Guest
from .machines import DEFAULT_MACHINE, MACHINES, MachineType, machine_type
from .ram import RamBlock
from .workloads import KINDS, Workload

__all__ = [
    "DEFAULT_BLOCK",
    "DEFAULT_MACHINE",
    "KINDS",
    "MACHINES",
    "MAX_BLOCK_SIZE",
    "MIN_BLOCK_SIZE",
    "PAGE_SIZE",
    "TRACKERS",
    "DirtyBitmap",
    "DirtyLog",
    "Guest",
    "MachineType",
    "RamBlock",
    "Workload",
    "block_size",
    "machine_type",
    "parse_size",
]
