"""What XBZRLE saved in a stream: its pages as whole pages versus what was sent.

Pure arithmetic over an analysis report's rounds (``StreamReport.to_dict()``
form): an XBZRLE record stands for a whole page the source would otherwise
have sent, so the saving of a round is its XBZRLE pages times the page size
over the wire bytes of those records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..sizes import PAGE_SIZE


def _size(n: float) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f} {unit}" if value >= 100 else f"{value:.1f} {unit}"
    return f"{n:.0f} B"


def saving(pages: int, sent: int) -> dict[str, Any]:
    """One saving: pages, their size as whole pages, the bytes sent, the ratio."""
    whole = pages * PAGE_SIZE
    return {"pages": pages, "as_whole_pages": whole, "sent": sent,
            "ratio": round(whole / sent, 1) if sent else None}


def xbzrle_savings(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Overall and per-round savings; rounds without XBZRLE pages are left out."""
    per_round = []
    for r in rounds:
        x = r["xbzrle"]
        if x["pages"]:
            per_round.append({"round": r["round"], "final": r["final"],
                              **saving(int(x["pages"]), int(x["bytes"]))})
    total = saving(sum(p["pages"] for p in per_round), sum(p["sent"] for p in per_round))
    return {"total": total, "rounds": per_round}


def describe(s: Mapping[str, Any]) -> str:
    """``142408 XBZRLE pages = 556 MiB as whole pages, sent as 3.5 MiB: 157x``."""
    ratio = f"{s['ratio']:.0f}x" if s["ratio"] and s["ratio"] >= 10 else f"{s['ratio']}x"
    return (f"{s['pages']} XBZRLE pages = {_size(s['as_whole_pages'])} as whole pages, "
            f"sent as {_size(s['sent'])}: {ratio}")


def render_savings(savings: Mapping[str, Any]) -> str:
    """The text block ``xbzrle analyze`` prints after its report."""
    if not savings["total"]["pages"]:
        return "xbzrle: no XBZRLE pages in this stream\n"
    lines = ["xbzrle saved: " + describe(savings["total"])]
    for r in savings["rounds"]:
        label = f"round {r['round']}{' final' if r['final'] else ''}"
        lines.append(f"  {label:<14} {describe(r)}")
    return "\n".join(lines) + "\n"
