"""Guest.dirty_log: which pages changed since the last look.

Three trackers, one per RAM block each, behind one interface:

* ``uffd``: the kernel's log (userfaultfd async write-protect + PAGEMAP_SCAN,
  Linux 6.7+).  Sees every writer, like a hypervisor's dirty log.
* ``bitmap``: a software bitmap set by the built-in workloads (and by
  :meth:`DirtyLog.mark`).  Writes through a plain buffer view are invisible.
* ``scan``: a hash per page, compared at every sync.  Sees every writer but
  reads all of RAM, and reports content changes only (a page rewritten with
  the bytes it held at the last sync is not reported).

Content is not enough for a migration: a page the source sent while it held
other bytes than at the sync (written after the sync, torn by a write during
the copy) and then restored before the next sync looks untouched, yet the
destination holds the bytes sent.  So a migration gives the scan tracker the
save loop's digest tables (:meth:`DirtyLog.follow_destination`): each sync
then also reports a page whose hash differs from what the destination holds.
The tables must describe the bytes that really left, so the source sends
from a private copy of each page under ``scan`` while the guest runs (see
docs/guest.md).  The comparison rides on the sync's one read of the RAM; the
other trackers see every write and ignore the tables.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TypeAlias, cast

from .._backend import load_core
from ..errors import ParameterError
from ..sizes import PAGE_SIZE
from .ram import RamBlock

if TYPE_CHECKING:  # type checkers see the compiled core's stub (_core.pyi)
    from .. import _core
    from .digest import DigestTable

    Tracker: TypeAlias = _core.UffdTracker | _core.ScanTracker | _core.SoftTracker
else:
    _core = load_core()
log = logging.getLogger(__name__)

TRACKERS = ("uffd", "bitmap", "scan")
DirtyBitmap = _core.DirtyBitmap


def uffd_problem() -> str | None:
    """Why the kernel tracker cannot run here, or None if it can.

    Tried on a page of its own: registering a guest's RAM, even briefly,
    would leave it without huge pages (see :class:`DirtyLog`).
    """
    try:
        _core.UffdTracker(_core.GuestRam(PAGE_SIZE)).close()
    except OSError as exc:
        return f"userfaultfd write-protect + PAGEMAP_SCAN unavailable: {exc}"
    return None


def choose_tracker(requested: str, probe: Callable[[], str | None]) -> tuple[str, str]:
    """The tracker to use and why; ``probe`` says why uffd fails (None: it works)."""
    if requested not in ("auto", *TRACKERS):
        raise ParameterError(
            f"unknown dirty tracker {requested!r}: expected auto, {', '.join(TRACKERS)}"
        )
    if requested != "auto":
        return requested, "requested"
    problem = probe()
    if problem is None:
        return "uffd", "kernel dirty log available"
    return "bitmap", f"{problem}; only the built-in workloads' writes are seen"


class DirtyLog:
    """Pages written since the previous :meth:`sync`, per RAM block.

    Each sync returns the pages written since the previous one (or since
    creation) and re-arms them in the same step, so no write falls between
    the read and the re-arm: a write racing with a sync is reported by this
    sync or the next.  The kernel tracker arms at the first sync, not at
    creation, because the kernel gives a registered range no transparent
    huge pages; that first sync reports every page that holds data (a
    superset of the pages written: a huge page counts whole), which a
    migration's first round sends anyway.
    """

    def __init__(self, blocks: Mapping[str, RamBlock], tracker: str = "auto") -> None:
        self._tracker, why = choose_tracker(tracker, uffd_problem)
        log.info("dirty log: %s tracker (%s)", self._tracker, why)
        self._blocks = dict(blocks)
        self._lock = threading.Lock()
        self._extra: dict[str, DirtyBitmap] = {}
        self._trackers: dict[str, Tracker] = {}
        try:
            for name, block in self._blocks.items():
                self._trackers[name] = self._make(block)
        except BaseException:
            self.close()
            raise

    def _make(self, block: RamBlock) -> Tracker:
        if self._tracker == "uffd":
            return _core.UffdTracker(block, lazy=True)
        if self._tracker == "scan":
            return _core.ScanTracker(block)
        return _core.SoftTracker(block.npages)

    @property
    def tracker(self) -> str:
        """``"uffd"``, ``"bitmap"`` or ``"scan"``."""
        return self._tracker

    def sync(self) -> dict[str, DirtyBitmap]:
        """Pages written since the previous sync, per block, re-armed atomically."""
        if not self._trackers:
            raise ValueError("dirty log is closed")
        result = {name: tracker.sync() for name, tracker in self._trackers.items()}
        with self._lock:
            extra, self._extra = self._extra, {}
        for name, pages in extra.items():
            result[name] |= pages
        return result

    def follow_destination(self, tables: Mapping[str, DigestTable] | None) -> bool:
        """Also report pages that differ from what a destination holds (``scan`` only).

        ``tables`` maps each block to its digest table (one native uint64 per
        page: 0 for a zero page, else its page hash), kept up to date by the
        save loop as it sends; None stops.  The ``scan`` tracker sees
        contents, not writes: without this, a page sent while it held other
        bytes and restored before the next sync would never be sent again.
        Returns whether the tracker uses the tables (False for ``uffd`` and
        ``bitmap``, which see every write and need none).
        """
        if self._tracker != "scan":
            return False
        for name, tracker in self._trackers.items():
            # the "scan" tracker is the one _make builds as a ScanTracker, for every block
            cast("_core.ScanTracker", tracker).follow(None if tables is None else tables[name])
        return True

    def mark_all(self) -> None:
        """Make the next sync report every page (a migration's first round)."""
        with self._lock:
            for name, block in self._blocks.items():
                self._extra[name] = DirtyBitmap.full(block.npages)

    def mark(self, block: str, first_page: int, count: int = 1) -> None:
        """Report pages written by code no tracker sees (any tracker accepts it)."""
        npages = self._blocks[block].npages
        if first_page < 0 or count < 0 or first_page + count > npages:
            raise ParameterError(f"pages {first_page}+{count} outside {block} ({npages} pages)")
        with self._lock:
            pages = self._extra.get(block)
            if pages is None:
                pages = self._extra[block] = DirtyBitmap(npages)
            for page in range(first_page, first_page + count):
                pages.add(page)

    def soft_tracker(self, block: str) -> _core.SoftTracker | None:
        """The bitmap a workload on ``block`` must set, or None if not needed."""
        # the "bitmap" tracker is the one _make builds as a SoftTracker, for every block
        return cast("_core.SoftTracker", self._trackers[block]) if self._tracker == "bitmap" \
            else None

    def close(self) -> None:
        """Stop tracking and let go of the RAM."""
        for tracker in self._trackers.values():
            tracker.close()
        self._trackers = {}

    def __repr__(self) -> str:
        return f"<DirtyLog {self._tracker} over {', '.join(self._blocks)}>"
