"""The page loader: applies a stream's page records to named RAM blocks.

One public piece used by every reader that rebuilds RAM: the migration
destination (into a live guest), ``xbzrle extract`` and ``xbzrle receive``
(into files).  Records arrive from :class:`~xbzrle.stream.parser.StreamParser`,
either one by one (:meth:`PageLoader.apply`) or as a run of raw records that
the compiled load loop applies in place (:meth:`PageLoader.sink`, the
parser's ``page_sink`` fast path).  Every offset is checked against the
block it names; nothing is written outside a block.

With ``tables``, the loader keeps a digest table per block
(:mod:`xbzrle.guest.digest`): every page it writes, by either path, has its
entry set to the hash of what it now holds, while the page is in cache, so
the RAM digest at the end costs 8 bytes a page instead of a read of all RAM.
A table starts from what the block holds: nothing to read for ``zeroed``
blocks (new files), the populated pages of anonymous memory (a fresh guest
has none), every page of any other buffer.  :meth:`PageLoader.forget`
drops the table of a block written some other way; :meth:`PageLoader.digest`
then says None and the caller reads the RAM: a table never gives a wrong
digest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeAlias

from .. import codec
from .._backend import load_core
from ..errors import DecodeError, StreamError
from ..guest.digest import DigestTable, digest_table, table_digest
from . import constants as K
from . import records as ev
from .counts import BatchCounts

if TYPE_CHECKING:  # type checkers see the compiled core's stub (_core.pyi)
    from .. import _core

    PageRecord: TypeAlias = ev.ZeroPage | ev.NormalPage | ev.XbzrlePage
else:
    _core = load_core()


def _swap_configured() -> bool:
    """True when the machine has swap (or we cannot tell): see ``_core.data_map``."""
    try:
        with open("/proc/swaps") as f:
            return len(f.read().splitlines()) > 1
    except OSError:
        return True


class PageLoader:
    """Applies page records to named RAM blocks, with bounds checks.

    ``blocks`` maps block names to writable buffers (a guest's RAM blocks,
    mmaps of files, bytearrays): the loader only needs their bytes.
    ``tables``: keep a digest table per block (see the module's docstring);
    ``zeroed``: the caller knows every block is all zero (new files), so the
    tables start without reading anything.  ``files``: for blocks that are
    shared mappings of files, a descriptor of the file by block name: the
    compiled loop writes full pages into it (``pwritev``) instead of copying
    them through the mapping, which on a new file costs a page fault and a
    zeroed page each; the descriptors stay the caller's.
    """

    def __init__(self, blocks: Mapping[str, _core.WritableBuffer], xbzrle: bool,
                 anonymous: bool = False, *, tables: bool = False, zeroed: bool = False,
                 files: Mapping[str, int] | None = None) -> None:
        self.blocks = blocks
        self.xbzrle = xbzrle  # read when the stream arrives: the operator may enable it late
        self.counts = BatchCounts()
        self._views = {name: memoryview(block).cast("B") for name, block in blocks.items()}
        # For anonymous memory (a guest's RAM) the kernel tells which pages were never
        # populated: ZERO records for those are skipped without reading them.
        swap = _swap_configured()
        self._maps = ({name: _core.data_map(view, swap) for name, view in self._views.items()}
                      if anonymous else {})
        self._sizes = {name: len(view) for name, view in self._views.items()}
        self._tables = {name: self._start_table(name, zeroed) for name in blocks} \
            if tables else {}
        self._entries = {name: memoryview(t).cast("Q") for name, t in self._tables.items()
                         if t is not None}
        files = files or {}
        self._table = [(name.encode(), self._views[name], self._maps.get(name),
                        self._tables.get(name), files.get(name, -1)) for name in blocks]
        self._index = {name: i for i, name in enumerate(blocks)}

    def _start_table(self, name: str, zeroed: bool) -> DigestTable | None:
        """A digest table that describes the block as it is now, or None if that
        would take a read of data we cannot locate (then the digest reads the RAM)."""
        view, size = self._views[name], self._sizes[name]
        table = digest_table(size)
        if zeroed:
            return table
        if size % K.PAGE_SIZE:
            return None
        # Anonymous memory: only the pages the kernel populated are read; any
        # other buffer is read whole, once, before the first record.
        _core.table_fill(view, table, self._maps.get(name))
        return table

    def check_layout(self, event: ev.RamBlocks) -> None:
        for name, size in event.blocks:
            if name not in self._views:
                raise StreamError(f"the source has RAM block {name!r}, this guest does not",
                                  event.stream_offset)
            if len(self._views[name]) != size:
                raise StreamError(
                    f"RAM block {name!r} is {size} bytes on the source, "
                    f"{len(self._views[name])} here", event.stream_offset)

    def release(self) -> None:
        """Drop the loader's views so the buffers can be closed (mmaps) or resized."""
        for view in self._views.values():
            view.release()
        self._views = {}
        self._table = []

    def forget(self, name: str) -> None:
        """Block ``name`` was written by something else than this loader: no table for it."""
        if name in self._tables:
            self._tables[name] = None
            entries = self._entries.pop(name, None)
            if entries is not None:
                entries.release()
            self._table = [(n, view, data_map, None if n == name.encode() else table, fd)
                           for n, view, data_map, table, fd in self._table]

    def digest(self, name: str) -> str | None:
        """The RAM digest of block ``name`` from its table (hex), or None without one."""
        table = self._tables.get(name)
        return None if table is None else table_digest(self._sizes[name], table)

    def _page(self, event: PageRecord) -> memoryview:
        view = self._views.get(event.block)
        if view is None:
            raise StreamError(f"page for unknown RAM block {event.block!r}", event.stream_offset)
        if event.offset + K.PAGE_SIZE > len(view):
            raise StreamError(f"page offset {event.offset:#x} outside RAM block {event.block!r}",
                              event.stream_offset)
        return view[event.offset:event.offset + K.PAGE_SIZE]

    def apply(self, event: PageRecord) -> None:
        with self._page(event) as page:  # released even on error: the buffer may be closed
            self._apply_to(event, page)

    def _apply_to(self, event: PageRecord, page: memoryview) -> None:
        c = self.counts
        data_map = self._maps.get(event.block)
        if data_map is not None:
            data_map[event.offset // K.PAGE_SIZE] = 1  # any page applied may hold data
        if isinstance(event, ev.ZeroPage):
            if event.fill or not _core.is_zero(page):
                page[:] = bytes([event.fill]) * K.PAGE_SIZE
            c.zero += 1
        elif isinstance(event, ev.NormalPage):
            page[:] = event.data
            c.normal += 1
        else:
            if not self.xbzrle:
                raise StreamError(
                    "received an XBZRLE page but the xbzrle capability is not enabled on the "
                    "destination", event.stream_offset)
            try:
                codec.decode_into(event.delta, page)
            except DecodeError as exc:
                raise StreamError(f"bad XBZRLE page at {event.offset:#x} of {event.block!r}: "
                                  f"{exc}", event.stream_offset) from exc
            c.xbzrle += 1
        c.scanned += 1
        entries = self._entries.get(event.block)
        if entries is not None:
            entries[event.offset // K.PAGE_SIZE] = _core.page_digest_hash(page)

    def sink(self, buf: bytearray | memoryview, pos: int, base: int,
             last: str | None) -> tuple[int, str | None, tuple[int, ...]]:
        """The parser's fast path: the compiled loop applies a run of page records."""
        last_index = self._index.get(last, -1) if last is not None else -1
        new_pos, last_index, _status, raw = _core.load_pages(
            buf, pos, self._table, last_index, self.xbzrle, base)
        if new_pos != pos:
            # in place, and only what the load loop moves: a BatchCounts per
            # call cost more than the call itself on a run of a few records
            self.counts.add_loop(raw, BatchCounts.LOAD_FIELDS)
            last = self._table[last_index][0].decode() if last_index >= 0 else last
        return new_pos, last, raw

