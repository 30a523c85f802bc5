"""Workloads: threads that write guest RAM the way a running guest would.

Each workload owns a region of one RAM block.  The region's first page holds
its whole state (a header of ten little-endian uint64: magic, kind, pages,
seed, hot_pages, hot_share, rng, pos, ops, bytes_written); its working pages
follow.  Because the state is guest RAM, a guest rebuilt from a copy of the
RAM resumes the workload exactly where it stopped.

Resumption rule: :meth:`Guest.start_workload` looks at the region's first
page.  A header of the same kind and parameters means *resume* from it; an
all-clear page (or ``resume=False``) means *start fresh*; a different
workload's header is an error (pass ``resume=False`` to overwrite it).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._backend import load_core
from ..errors import ParameterError, XbzrleError
from ..sizes import PAGE_SIZE, parse_size

if TYPE_CHECKING:  # type checkers see the compiled core's stub (_core.pyi)
    from .. import _core
    from .ram import RamBlock
else:
    _core = load_core()

KINDS = {"loadgen": 1, "sparse": 2, "dense": 3, "hotcold": 4, "idle": 5}
LOADGEN_WORKING_SET = 16 << 20  # the seed's generator: a 16 MiB buffer
DEFAULT_SEED = 0x5EED
HEADER = struct.Struct("<10Q")
MAGIC = _core.WORKLOAD_MAGIC
SHARE_SCALE = 65536


@dataclass(frozen=True)
class WorkloadSpec:
    """Where a workload lives and what it does; everything its header fixes."""

    kind: str
    offset: int  # byte offset of the state page in the block
    pages: int  # working pages after the state page
    seed: int = DEFAULT_SEED
    hot_pages: int = 0  # hotcold: the first hot_pages working pages are hot
    hot_share: int = 0  # hotcold: share of writes going to the hot set, /65536

    def header(self) -> bytes:
        """The state page header of a workload that has done nothing yet."""
        return HEADER.pack(
            MAGIC, KINDS[self.kind], self.pages, self.seed, self.hot_pages, self.hot_share,
            self.seed, 0, 0, 0,
        )

    def matches(self, header: tuple[int, ...]) -> bool:
        """True if ``header`` (unpacked) is this workload's, at any point of its run."""
        fixed = (MAGIC, KINDS[self.kind], self.pages, self.seed, self.hot_pages, self.hot_share)
        return header[:6] == fixed


def make_spec(
    kind: str,
    block_size: int,
    offset: int | str = 0,
    size: int | str | None = None,
    seed: int = DEFAULT_SEED,
    hot_fraction: float | None = None,
    hot_share: float | None = None,
) -> WorkloadSpec:
    """Validate a workload's parameters against its block and fill in defaults.

    ``size`` is the working set in bytes (after the state page): 16 MiB for
    ``loadgen`` (less if the block is smaller), the rest of the block for the
    others.  ``hotcold`` takes ``hot_fraction`` of the pages (default 0.05)
    as its hot set and sends ``hot_share`` of its writes there (default 0.9).
    """
    if kind not in KINDS:
        raise ParameterError(f"unknown workload kind {kind!r}: expected {', '.join(KINDS)}")
    offset = parse_size(offset)
    if offset < 0 or offset % PAGE_SIZE or offset + 2 * PAGE_SIZE > block_size:
        raise ParameterError(f"workload offset {offset}: not a page leaving room in the block")
    room = block_size - offset - PAGE_SIZE
    if size is None:
        size = min(LOADGEN_WORKING_SET, room) if kind == "loadgen" else room
    size = parse_size(size)
    if size <= 0 or size % PAGE_SIZE or size > room:
        raise ParameterError(
            f"workload size {size}: expected whole pages, at most {room} bytes here"
        )
    if not 0 <= seed < 1 << 64:
        raise ParameterError(f"workload seed {seed} is not a uint64")
    pages = size // PAGE_SIZE
    if kind != "hotcold":
        if hot_fraction is not None or hot_share is not None:
            raise ParameterError("hot_fraction and hot_share apply to the hotcold workload only")
        return WorkloadSpec(kind, offset, pages, seed)
    fraction = 0.05 if hot_fraction is None else hot_fraction
    share = 0.9 if hot_share is None else hot_share
    if not 0 < fraction <= 1 or not 0 <= share <= 1:
        raise ParameterError("hot_fraction must be in (0, 1], hot_share in [0, 1]")
    hot_pages = max(1, min(pages, round(pages * fraction)))
    return WorkloadSpec(kind, offset, pages, seed, hot_pages, round(share * SHARE_SCALE))


def read_header(block: Any, offset: int) -> tuple[int, ...]:
    """The ten header words at ``offset`` in ``block``."""
    with memoryview(block) as view:
        return HEADER.unpack_from(view, offset)


def prepare_state(block: Any, spec: WorkloadSpec, resume: bool | None) -> bool:
    """Apply the resumption rule; returns True if an existing state is resumed."""
    header = read_header(block, spec.offset)
    if spec.matches(header):
        if resume is False:
            _write_header(block, spec)
            return False
        return True
    if resume is True:
        raise ParameterError(
            f"no {spec.kind} state with these parameters at offset {spec.offset} to resume"
        )
    if header[0] == MAGIC and resume is None:
        kinds = {code: name for name, code in KINDS.items()}
        raise ParameterError(
            f"offset {spec.offset} holds the state of another workload "
            f"({kinds.get(header[1], 'unknown')}, {header[2]} pages, seed {header[3]}); "
            "pass resume=False to overwrite it"
        )
    _write_header(block, spec)
    return False


def _write_header(block: Any, spec: WorkloadSpec) -> None:
    with memoryview(block) as view:
        view[spec.offset : spec.offset + PAGE_SIZE] = bytes(PAGE_SIZE)
        view[spec.offset : spec.offset + HEADER.size] = spec.header()


class Workload:
    """A running (or paused) workload; made by :meth:`Guest.start_workload`.

    One operation writes one page, so ``rate`` is in pages per second
    (0 = flat out).  ``loadgen``'s operation is the seed's inner loop over
    one page: +1 on the bytes at 0, 1024, 2048 and 3072.
    """

    def __init__(self, block: RamBlock, spec: WorkloadSpec, thread: _core.WorkloadThread,
                 resumed: bool) -> None:
        self._block = block
        self.spec = spec
        self.resumed = resumed
        self._thread = thread
        self._last = (time.monotonic(), thread.ops)

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def block(self) -> str:
        return self._block.name

    @property
    def rate(self) -> float:
        return self._thread.rate

    @rate.setter
    def rate(self, value: float) -> None:
        if value < 0:
            raise ParameterError(f"workload rate {value}: expected pages/s >= 0")
        self._thread.rate = value

    @property
    def running(self) -> bool:
        return self._thread.running

    @property
    def throttle(self) -> int:
        """CPU throttle in percent (0 = off); set it through :meth:`Guest.set_throttle`."""
        return self._thread.throttle

    @property
    def throttled_seconds(self) -> float:
        """Seconds this workload's thread has slept for the throttle."""
        return self._thread.throttled_seconds

    @property
    def ops(self) -> int:
        """Operations (page writes) since the workload's state was created."""
        return self._thread.ops

    def step(self, n: int) -> int:
        """Run exactly ``n`` operations now, in this thread; the guest must be stopped."""
        if n < 0:
            raise ParameterError(f"step({n}): expected n >= 0")
        try:
            return self._thread.step(n)
        except RuntimeError as exc:
            raise XbzrleError(f"{exc} (stop the guest first)") from None

    def stats(self) -> dict[str, Any]:
        """Counters, plus the write rate since the previous stats() call."""
        now, ops = time.monotonic(), self._thread.ops
        then, before = self._last
        self._last = (now, ops)
        rate = (ops - before) / (now - then) if now > then else 0.0
        return {
            "kind": self.kind,
            "block": self.block,
            "running": self.running,
            "ops": ops,
            "pages_written": ops,
            "bytes_written": self._thread.bytes_written,
            "dirty_rate": rate,
            "dirty_bytes_rate": rate * PAGE_SIZE,
        }

    # Guest's controls: a workload follows its guest's run state and throttle.
    def _set_throttle(self, pct: int) -> None:
        self._thread.throttle = pct

    def _pause(self) -> None:
        self._thread.pause()

    def _resume(self) -> None:
        self._thread.resume()

    def close(self) -> None:
        """End the thread for good (the state stays in RAM)."""
        self._thread.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "paused"
        return f"<Workload {self.kind} on {self.block}+{self.spec.offset} {state} ops={self.ops}>"
