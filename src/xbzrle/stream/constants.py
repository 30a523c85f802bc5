"""Numbers of the QEMU migration stream (QEMU 7.2, 4 KiB target pages).

Plain integers on purpose: a C save loop that writes page records itself
mirrors them, and the tests cross-check both against this module.
"""

from __future__ import annotations

from ..sizes import PAGE_SIZE as PAGE_SIZE  # re-exported: the stream modules use c.PAGE_SIZE

# File header.
MAGIC = 0x5145564D  # "QEVM"
VERSION = 3
VERSION_COMPAT = 2  # the pre-2011 layout, refused

# Top-level record types (the byte before every section).
VM_EOF = 0x00
VM_SECTION_START = 0x01
VM_SECTION_PART = 0x02
VM_SECTION_END = 0x03
VM_SECTION_FULL = 0x04
VM_SUBSECTION = 0x05
VM_VMDESCRIPTION = 0x06
VM_CONFIGURATION = 0x07
VM_COMMAND = 0x08
VM_SECTION_FOOTER = 0x7E

# RAM page records: the low 12 bits of the be64 word.
PAGE_BITS = 12
FLAGS_MASK = PAGE_SIZE - 1
RAM_SAVE_FLAG_FULL = 0x01  # obsolete, refused
RAM_SAVE_FLAG_ZERO = 0x02
RAM_SAVE_FLAG_MEM_SIZE = 0x04
RAM_SAVE_FLAG_PAGE = 0x08
RAM_SAVE_FLAG_EOS = 0x10
RAM_SAVE_FLAG_CONTINUE = 0x20
RAM_SAVE_FLAG_XBZRLE = 0x40
RAM_SAVE_FLAG_HOOK = 0x80  # RDMA, refused
RAM_SAVE_FLAG_COMPRESS_PAGE = 0x100  # zlib compression threads, refused
RAM_SAVE_FLAG_MULTIFD_FLUSH = 0x200  # multifd channels: refused, but harmless with mapped-ram

ENCODING_FLAG_XBZRLE = 0x01
MAX_XBZRLE_LEN = PAGE_SIZE

# The iterable "ram" section.
RAM_IDSTR = "ram"
RAM_SECTION_VERSION = 4

# The configuration vmstate and the subsections we understand.
CONFIGURATION_NAME = "configuration"
SUBSECTION_CAPABILITIES = "configuration/capabilities"
SUBSECTION_TARGET_PAGE_BITS = "configuration/target-page-bits"
SUBSECTION_UUID = "configuration/uuid"
UUID_SIZE = 16

# Our own section after the RAM: a digest of every block, taken with the
# source guest stopped.
DIGEST_IDSTR = "xbzrle-digest"
DIGEST_VERSION = 1

# Section ids our source uses.  QEMU numbers its handlers in registration
# order, and 7.2 gives "ram" id 2 (after "timer" and one more).  The value
# matters to a QEMU destination: it finds the handler of a PART or END section
# by the id its START carried, among handlers whose id is 0 until their own
# section arrives, so a "ram" section with id 0 is taken for "timer" ("timer:
# incoming version_id 0 is too old", seen with QEMU 7.2).  Any id but 0 works;
# 2 is QEMU's own.
RAM_SECTION_ID = 2
DIGEST_SECTION_ID = 1

# QEMU's migration commands (QEMU_VM_COMMAND); parsed generically.
MIG_CMD_OPEN_RETURN_PATH = 1
MIG_CMD_PING = 2
MIG_CMD_POSTCOPY_ADVISE = 3
MIG_CMD_POSTCOPY_LISTEN = 4
MIG_CMD_POSTCOPY_RUN = 5
MIG_CMD_POSTCOPY_RAM_DISCARD = 6
MIG_CMD_PACKAGED = 7
MIG_CMD_ENABLE_COLO = 8
MIG_CMD_POSTCOPY_RESUME = 9
MIG_CMD_RECV_BITMAP = 10
MIG_CMD_SWITCHOVER_START = 11  # QEMU 10: "the source is about to stop the guest"

COMMAND_NAMES = {
    MIG_CMD_OPEN_RETURN_PATH: "OPEN_RETURN_PATH",
    MIG_CMD_PING: "PING",
    MIG_CMD_POSTCOPY_ADVISE: "POSTCOPY_ADVISE",
    MIG_CMD_POSTCOPY_LISTEN: "POSTCOPY_LISTEN",
    MIG_CMD_POSTCOPY_RUN: "POSTCOPY_RUN",
    MIG_CMD_POSTCOPY_RAM_DISCARD: "POSTCOPY_RAM_DISCARD",
    MIG_CMD_PACKAGED: "PACKAGED",
    MIG_CMD_ENABLE_COLO: "ENABLE_COLO",
    MIG_CMD_POSTCOPY_RESUME: "POSTCOPY_RESUME",
    MIG_CMD_RECV_BITMAP: "RECV_BITMAP",
    MIG_CMD_SWITCHOVER_START: "SWITCHOVER_START",
}

# Commands that only a stream in (or recovering) postcopy or COLO carries: the
# RAM then arrives on request, or the device state inside a package, so a
# reader of the stream alone cannot rebuild the guest.  POSTCOPY_ADVISE only
# says postcopy-ram is on; a migration that completed in precopy is whole.
REFUSED_COMMANDS = frozenset({
    MIG_CMD_POSTCOPY_LISTEN, MIG_CMD_POSTCOPY_RUN, MIG_CMD_POSTCOPY_RAM_DISCARD,
    MIG_CMD_PACKAGED, MIG_CMD_ENABLE_COLO, MIG_CMD_POSTCOPY_RESUME, MIG_CMD_RECV_BITMAP,
})


def command_name(cmd: int) -> str:
    """QEMU's name of a migration command ("SWITCHOVER_START"), or "UNKNOWN_0x.."."""
    return COMMAND_NAMES.get(cmd, f"UNKNOWN_0x{cmd:02x}")


# mapped-ram (QEMU 9.0+, file: migrations): after each block of the MEM_SIZE
# list comes a header, then the page bitmap, then the pages at fixed offsets.
CAPABILITY_MAPPED_RAM = "mapped-ram"
# With x-ignore-shared, blocks in shared memory are left out of the stream and
# every MEM_SIZE entry carries the block's guest address: refused.
CAPABILITY_X_IGNORE_SHARED = "x-ignore-shared"
MAPPED_RAM_HEADER_VERSION = 1
MAPPED_RAM_HEADER_SIZE = 28  # be32 version, be64 page_size, bitmap_offset, pages_offset
MAPPED_RAM_FILE_OFFSET_ALIGNMENT = 0x100000  # what QEMU pads pages_offset to (1 MiB)
