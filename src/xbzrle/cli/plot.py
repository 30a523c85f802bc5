"""Pictures of migrations, round by round: ``demo --plot`` and ``analyze --plot``.

The series are built by pure functions from the same round data the JSON
output carries (``demo --json``'s ``rounds``, ``analyze --json``'s
``rounds``), so what is drawn is what is reported.  matplotlib (the
``[plot]`` extra) is imported only when a picture is asked for.

Four panels per migration: dirty pages of each round; bytes on the wire,
split into whole pages, XBZRLE records, and zero pages with the stream's
framing; the share of pages that missed the XBZRLE cache; and the number of
deltas that overflowed (sent whole).  A saved stream records page records,
not cache decisions: there the third panel shows the share of pages sent
whole after the first round (cache misses and overflows together) and the
overflow panel says it cannot be known.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..sizes import PAGE_SIZE

#: Bytes of a page record's header: the 8-byte address and flags word.
RECORD_HEADER = 8
WIDTH_IN, HEIGHT_IN, DPI = 12, 10, 100
MAX_TICKS = 12  # round numbers on an axis, at most
MAX_LABELLED_BARS = 12  # above this, totals on the bars would overlap
MiB = 1 << 20


@dataclass
class RoundSeries:
    """What the panels of one migration draw, one entry per round."""

    title: str
    labels: list[str] = field(default_factory=list)  # "1", "2", ..., "final"
    dirty_pages: list[int] = field(default_factory=list)
    bytes_normal: list[int] = field(default_factory=list)
    bytes_xbzrle: list[int] = field(default_factory=list)
    bytes_zero: list[int] = field(default_factory=list)  # zero pages (+ framing, live runs)
    miss_rate: list[float | None] = field(default_factory=list)
    overflow: list[int | None] = field(default_factory=list)
    miss_label: str = "cache miss rate"
    zero_label: str = "zero pages + framing"


def _label(index: int, final: bool) -> str:
    return "final" if final else str(index)


def migration_series(title: str, rounds: Sequence[Mapping[str, Any]],
                     xbzrle: bool) -> RoundSeries:
    """Series of a live migration from ``MigrationStats.history_dicts()``.

    Whole pages cost a page plus the record header; XBZRLE records are their
    counted bytes less the overflowed pages (drawn as whole pages) plus the
    header; the rest of the round's wire bytes are zero pages and framing.
    """
    s = RoundSeries(title)
    for r in rounds:
        pages = int(r["zero"]) + int(r["normal"]) + int(r["xbzrle"])
        normal = int(r["normal"]) * (PAGE_SIZE + RECORD_HEADER)
        records = int(r["xbzrle-bytes"]) - int(r["overflow"]) * PAGE_SIZE
        xbz = max(0, records) + int(r["xbzrle"]) * RECORD_HEADER
        s.labels.append(_label(int(r["round"]) + 1, bool(r["final"])))
        s.dirty_pages.append(int(r["dirty-pages"]))
        s.bytes_normal.append(normal)
        s.bytes_xbzrle.append(xbz)
        s.bytes_zero.append(max(0, int(r["wire-bytes"]) - normal - xbz))
        # XBZRLE starts with the second round: the first has no cache decisions.
        looked_up = xbzrle and pages and int(r["round"]) > 0
        s.miss_rate.append(int(r["cache-miss"]) / pages if looked_up else None)
        s.overflow.append(int(r["overflow"]) if xbzrle else None)
    return s


def stream_series(title: str, rounds: Sequence[Mapping[str, Any]]) -> RoundSeries:
    """Series of a saved stream from ``xbzrle analyze --json``'s ``rounds``."""
    s = RoundSeries(title, miss_label="sent whole", zero_label="zero pages")
    uses_xbzrle = any(r["xbzrle"]["pages"] for r in rounds)
    for i, r in enumerate(rounds):
        pages = sum(int(r[k]["pages"]) for k in ("zero", "normal", "xbzrle"))
        s.labels.append(_label(int(r["round"]), bool(r["final"])))
        s.dirty_pages.append(pages)
        s.bytes_normal.append(int(r["normal"]["bytes"]))
        s.bytes_xbzrle.append(int(r["xbzrle"]["bytes"]))
        s.bytes_zero.append(int(r["zero"]["bytes"]))
        whole = int(r["normal"]["pages"])
        s.miss_rate.append(whole / pages if uses_xbzrle and i > 0 and pages else None)
        s.overflow.append(None)
    return s


def require_matplotlib() -> Any:
    """matplotlib's pyplot on a file-only backend, or one clear error."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'xbzrle[plot]' "
                         "(or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw(axes: Sequence[Any], s: RoundSeries) -> None:
    x = list(range(len(s.labels)))
    dirty, wire, miss, over = axes
    dirty.bar(x, s.dirty_pages, color="#4c72b0")
    dirty.set_title(s.title)
    dirty.set_ylabel("dirty pages")
    normal = [b / MiB for b in s.bytes_normal]
    xbz = [b / MiB for b in s.bytes_xbzrle]
    zero = [b / MiB for b in s.bytes_zero]
    wire.bar(x, normal, color="#dd8452", label="whole pages")
    wire.bar(x, xbz, bottom=normal, color="#55a868", label="XBZRLE records")
    top = wire.bar(x, zero, bottom=[a + b for a, b in zip(normal, xbz, strict=True)],
                   color="#8c8c8c", label=s.zero_label)
    totals = [a + b + c for a, b, c in zip(normal, xbz, zero, strict=True)]
    if len(x) <= MAX_LABELLED_BARS:
        # The total on each bar: an XBZRLE round is too thin to read off the axis.
        wire.bar_label(top, labels=[f"{t:.2f}" if t < 10 else f"{t:.0f}" for t in totals],
                       fontsize="x-small", padding=1)
    wire.set_ylabel("MiB on the wire")
    wire.legend(fontsize="small")
    if any(v is not None for v in s.miss_rate):
        miss.plot(x, [float("nan") if v is None else v * 100 for v in s.miss_rate],
                  marker="o", color="#c44e52")
        miss.set_ylim(bottom=0)
    else:
        miss.text(0.5, 0.5, "no XBZRLE cache", ha="center", va="center",
                  transform=miss.transAxes, color="gray")
    miss.set_ylabel(f"% {s.miss_label}")
    if s.miss_label != "cache miss rate":
        miss.set_title("pages sent whole after round 1: cache misses and overflows together",
                       fontsize="small")
    if any(v is not None for v in s.overflow):
        over.bar(x, [0 if v is None else v for v in s.overflow], color="#8172b3")
        over.set_ylim(bottom=0, top=max(1, *(v or 0 for v in s.overflow)) * 1.15)
    else:
        why = "no XBZRLE cache" if not any(s.bytes_xbzrle) and s.zero_label != "zero pages" \
            else "not recorded in a stream"
        over.text(0.5, 0.5, why, ha="center", va="center", transform=over.transAxes,
                  color="gray")
    over.set_ylabel("overflows")
    over.set_xlabel("round")
    wire.set_ylim(top=max(totals, default=0) * 1.15 or 1)
    step = max(1, -(-len(x) // MAX_TICKS))  # a readable number of round numbers
    shown = sorted(set(x[::step]) | ({x[-1]} if x else set()))
    for ax in axes:
        ax.set_xticks(shown, [s.labels[i] for i in shown])
        ax.set_xlim(-0.6, len(x) - 0.4)
        ax.grid(axis="y", alpha=0.3)


def plot_series(columns: Sequence[RoundSeries], path: str, title: str) -> None:
    """Draw one column of four panels per series, side by side, into ``path`` (PNG)."""
    plt = require_matplotlib()
    fig, axes = plt.subplots(4, len(columns), figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI,
                             sharey="row", squeeze=False)
    for col, series in enumerate(columns):
        _draw([axes[row][col] for row in range(4)], series)
    fig.suptitle(title)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)


def demo_columns(results: Mapping[str, Mapping[str, Any]]) -> list[RoundSeries]:
    """The demo's two runs, plain then XBZRLE, as series."""
    names = {"plain": "without XBZRLE", "xbzrle": "with XBZRLE"}
    return [migration_series(f"{names.get(name, name)}: {r.get('status')}",
                             r.get("rounds", []), "xbzrle-cache" in r)
            for name, r in results.items()]


def plot_demo(results: Mapping[str, Mapping[str, Any]], path: str, title: str) -> None:
    plot_series(demo_columns(results), path, title)


def plot_stream(report: Mapping[str, Any], path: str) -> None:
    """``xbzrle analyze --plot``: the stream's rounds (from its JSON report)."""
    series = stream_series("rounds as the stream shows them", report.get("rounds", []))
    plot_series([series], path, f"xbzrle analyze: {report.get('source')}")
