"""The guest: RAM blocks, their dirty log, and the workloads writing them."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any

from .._backend import load_core
from ..errors import ParameterError
from ..sizes import PAGE_SIZE, block_size
from .dirtylog import DirtyLog
from .machines import DEFAULT_MACHINE, MachineType, machine_type
from .ram import RamBlock, check_block_name
from .workloads import Workload, WorkloadSpec, make_spec, prepare_state

if TYPE_CHECKING:  # type checkers see the compiled core's stub (_core.pyi)
    from .. import _core
else:
    _core = load_core()

DEFAULT_BLOCK = "pc.ram"


class Guest:
    """A guest to migrate: named RAM blocks, a dirty log, vCPU-like workloads.

    ``ram`` sizes the single default block ``pc.ram``; ``blocks`` (name ->
    size) replaces it with several.  Sizes are bytes or strings like
    ``"256M"``, 1 MiB..16 GiB, whole 4 KiB pages.  ``machine`` shapes the
    RAM as a QEMU machine type does (see :mod:`xbzrle.guest.machines`):
    ``"none"`` is one block ``ram``, ``"pc"`` is ``pc.ram`` plus the
    firmware blocks of QEMU 7.2's ``pc``; the stream then announces that
    machine, so a real QEMU destination accepts it.  ``tracker`` picks the
    dirty log (``auto``, ``uffd``, ``bitmap``, ``scan``; see
    :mod:`xbzrle.guest.dirtylog`).  A new guest is running: workloads
    started on it run at once, until :meth:`stop`.
    """

    def __init__(
        self,
        ram: int | str = "256M",
        blocks: Mapping[str, int | str] | None = None,
        tracker: str = "auto",
        machine: str = DEFAULT_MACHINE,
    ) -> None:
        self._machine = kind = machine_type(machine)
        if blocks is not None and not kind.custom_blocks:
            raise ParameterError(
                f"machine {kind.name!r} has a fixed RAM block list: give ram=, not blocks=")
        layout = {kind.ram_block: ram} if blocks is None else dict(blocks)
        if not layout:
            raise ParameterError("a guest needs at least one RAM block")
        sizes = {check_block_name(name): block_size(size, name) for name, size in layout.items()}
        if blocks is None:  # firmware blocks: the machine's own sizes, below the 1 MiB minimum
            sizes.update(kind.firmware)
        self._lock = threading.RLock()
        self._running = True
        self._throttle = 0
        self._workloads: list[Workload] = []
        self._blocks: dict[str, RamBlock] = {}
        self._dirty_log: DirtyLog | None = None
        try:
            for name, size in sizes.items():
                self._blocks[name] = RamBlock(name, size)
            self._dirty_log = DirtyLog(self._blocks, tracker)
        except BaseException:
            self.close()
            raise

    @property
    def machine(self) -> MachineType:
        """The machine type: ``machine.announced`` is the name the stream carries."""
        return self._machine

    @property
    def main_block(self) -> str:
        """The block sized by ``ram`` (workloads run there unless told otherwise)."""
        if self._machine.custom_blocks:
            return next(iter(self._blocks))
        return self._machine.ram_block

    @property
    def blocks(self) -> Mapping[str, RamBlock]:
        """RAM blocks by name, in creation order (the stream's block order)."""
        return MappingProxyType(self._blocks)

    @property
    def dirty_log(self) -> DirtyLog:
        if self._dirty_log is None:
            raise ValueError("guest is closed")
        return self._dirty_log

    @property
    def ram_size(self) -> int:
        """Total bytes over all blocks."""
        return sum(block.size for block in self._blocks.values())

    @property
    def running(self) -> bool:
        """False between :meth:`stop` and :meth:`cont`."""
        return self._running

    @property
    def throttle(self) -> int:
        """CPU throttle of every workload thread in percent, 0 = off (see :meth:`set_throttle`)."""
        return self._throttle

    def set_throttle(self, pct: int) -> None:
        """Slow every vCPU (workload thread) down by ``pct`` percent, 0 lifts it.

        QEMU's ``cpu_throttle`` model: each thread runs a 10 ms slice, then
        sleeps ``pct / (100 - pct)`` of it, so it runs ``100 - pct`` percent
        of the time.  Applied and lifted on the fly: the guest never stops
        for it, and workloads started later get it too.  Auto-converge sets
        it during a migration and lifts it when the migration ends.
        """
        if isinstance(pct, bool) or not isinstance(pct, int) or not 0 <= pct <= 99:
            raise ParameterError(f"throttle {pct!r}: expected a percentage from 0 to 99")
        with self._lock:
            self._throttle = pct
            for workload in self._workloads:
                workload._set_throttle(pct)

    @property
    def workloads(self) -> tuple[Workload, ...]:
        return tuple(self._workloads)

    @property
    def pages_written(self) -> int:
        """Page writes of all workloads so far: it grows exactly while the guest runs."""
        return sum(w.ops for w in self._workloads)

    def start_workload(
        self,
        kind: str,
        block: str | None = None,
        rate: float = 0,
        *,
        resume: bool | None = None,
        **params: Any,
    ) -> Workload:
        """Start a built-in workload on ``block`` (runs at once if the guest runs).

        Kinds: ``loadgen``, ``sparse``, ``dense``, ``hotcold``, ``idle``;
        ``block`` defaults to :attr:`main_block`; ``rate`` in pages per
        second, 0 = flat out.  ``params``: ``offset``
        and ``size`` of its region, ``seed``, and for hotcold
        ``hot_fraction`` / ``hot_share``.  If the region already holds this
        workload's state (RAM copied from a migrated guest), it resumes from
        there; see :mod:`xbzrle.guest.workloads` for the rule and ``resume``.
        """
        if block is None:
            block = self.main_block
        if block not in self._blocks:
            raise ParameterError(f"no RAM block {block!r}: have {', '.join(self._blocks)}")
        if rate < 0:
            raise ParameterError(f"workload rate {rate}: expected pages/s >= 0")
        ram = self._blocks[block]
        try:
            spec = make_spec(kind, ram.size, **params)
        except TypeError as exc:
            raise ParameterError(f"workload {kind!r}: {exc}") from None
        with self._lock:
            for other in self._workloads:
                if other.block == block and _overlap(other.spec, spec):
                    raise ParameterError(
                        f"workload region overlaps {other!r}: give it another offset"
                    )
            resumed = prepare_state(ram, spec, resume)
            if not resumed:  # a fresh header is a guest write no tracker may miss
                self.dirty_log.mark(block, spec.offset // PAGE_SIZE)
            thread = _core.WorkloadThread(ram, spec.offset, self.dirty_log.soft_tracker(block))
            thread.rate = rate
            thread.throttle = self._throttle
            workload = Workload(ram, spec, thread, resumed)
            self._workloads.append(workload)
            if self._running:
                workload._resume()
        return workload

    def stop_workload(self, workload: Workload) -> None:
        """End one workload's thread; its state stays in RAM."""
        with self._lock:
            workload.close()
            self._workloads.remove(workload)

    def stop(self) -> None:
        """Quiesce every workload: no workload writes RAM after this returns."""
        with self._lock:
            self._running = False
            for workload in self._workloads:
                workload._pause()

    def cont(self) -> None:
        """Resume the workloads where they stopped."""
        with self._lock:
            self._running = True
            for workload in self._workloads:
                workload._resume()

    def digest(self) -> dict[str, str]:
        """Digest of every block, by name (equal dicts: equal RAM)."""
        return {name: block.digest() for name, block in self._blocks.items()}

    def close(self) -> None:
        """Stop the workloads and release the RAM (views into it must be gone)."""
        with self._lock:
            for workload in self._workloads:
                workload.close()
            self._workloads.clear()
            if self._dirty_log is not None:
                self._dirty_log.close()
                self._dirty_log = None
            for block in self._blocks.values():
                block.close()

    def __enter__(self) -> Guest:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        blocks = ", ".join(f"{name}={block.size}" for name, block in self._blocks.items())
        return f"<Guest {self._machine.name} {state} {blocks}>"


def _overlap(a: WorkloadSpec, b: WorkloadSpec) -> bool:
    a_end = a.offset + (a.pages + 1) * PAGE_SIZE
    b_end = b.offset + (b.pages + 1) * PAGE_SIZE
    return a.offset < b_end and b.offset < a_end
