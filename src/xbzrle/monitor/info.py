"""The text of HMP's ``info migrate``, in QEMU 7.2's layout.

Pure formatting over ``query-migrate`` dicts; the HMP console and the
demo's report print it.  As QEMU 7.2: the ``globals:`` block first (so the
command prints something before any migration), ``Migration status: failed
(reason)`` on one line, and no RAM figures for a failed migration.  A
destination shows what it has: its status, where it listens, and what it
received, never the source's counters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

#: QEMU 7.2's ``globals:`` lines, with the values this implementation really has:
#: no global-state section is sent, the configuration section and section footers are.
GLOBALS = (
    ("store-global-state", "off"),
    ("only-migratable", "off"),
    ("send-configuration", "on"),
    ("send-section-footer", "on"),
    ("decompress-error-check", "on"),
    ("clear-bitmap-shift", "18"),
)


def format_capabilities(caps: Sequence[Mapping[str, object]]) -> str:
    return "capabilities: " + " ".join(
        f"{c['capability']}: {'on' if c['state'] else 'off'}" for c in caps)


def format_globals() -> list[str]:
    return ["globals:", *(f"{name}: {value}" for name, value in GLOBALS)]


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float) else 0


def _float(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def _socket_uri(address: Mapping[str, object]) -> str:
    if address.get("type") == "inet":
        host = str(address.get("host", ""))
        host = f"[{host}]" if ":" in host else host
        return f"tcp:{host}:{address.get('port')}"
    return f"{address.get('type')}:{address.get('path', '')}"


def _status_lines(info: Mapping[str, object]) -> list[str]:
    status = str(info["status"])
    line = f"Migration status: {status}"
    if status == "failed" and "error-desc" in info:
        line += f" ({info['error-desc']})"
    lines = [line, f"total time: {info.get('total-time', 0)} ms"]
    if status != "failed" and "error-desc" in info:
        lines.append(f"Error: {info['error-desc']}")
    return lines


def _socket_lines(info: Mapping[str, object]) -> list[str]:
    sockets = info.get("socket-address")
    if not isinstance(sockets, Sequence) or not sockets:
        return []
    return ["socket address: [", *(f"\t{_socket_uri(a)}" for a in sockets
                                   if isinstance(a, Mapping)), "]"]


def _ram_lines(ram: Mapping[str, object]) -> list[str]:
    def kib(key: str) -> int:
        return _int(ram.get(key)) >> 10

    lines = [
        f"transferred ram: {kib('transferred')} kbytes",
        f"throughput: {_float(ram.get('mbps')):.2f} mbps",
        f"remaining ram: {kib('remaining')} kbytes",
        f"total ram: {kib('total')} kbytes",
        f"duplicate: {ram.get('duplicate', 0)} pages",
        f"skipped: {ram.get('skipped', 0)} pages",
        f"normal: {ram.get('normal', 0)} pages",
        f"normal bytes: {kib('normal-bytes')} kbytes",
        f"dirty sync count: {ram.get('dirty-sync-count', 0)}",
        f"page size: {kib('page-size') or 4} kbytes",
        f"pages-per-second: {ram.get('pages-per-second', 0)}",
    ]
    if ram.get("dirty-pages-rate"):
        lines.append(f"dirty pages rate: {ram['dirty-pages-rate']} pages")
    return lines


def _xbzrle_lines(x: Mapping[str, object]) -> list[str]:
    return [
        f"cache size: {x['cache-size']} bytes",
        f"xbzrle transferred: {_int(x['bytes']) >> 10} kbytes",
        f"xbzrle pages: {x['pages']} pages",
        f"xbzrle cache miss: {x['cache-miss']} pages",
        f"xbzrle cache miss rate: {_float(x['cache-miss-rate']):.2f}",
        f"xbzrle encoding rate: {_float(x['encoding-rate']):.2f}",
        f"xbzrle overflow: {x['overflow']}",
        # ours: pages the overflow back-off sent whole without the encoder
        *([f"xbzrle skipped overflow: {x['skipped-overflow']}"] if "skipped-overflow" in x
          else []),
        *([f"xbzrle encode time: {x['x-encode-time']} us"] if "x-encode-time" in x else []),
    ]


def _received_lines(ram: Mapping[str, object]) -> list[str]:
    """A destination's own figures: what arrived, by page kind."""
    return [
        f"received ram: {_int(ram.get('transferred')) >> 10} kbytes",
        f"total ram: {_int(ram.get('total')) >> 10} kbytes",
        f"duplicate: {ram.get('duplicate', 0)} pages",
        f"normal: {ram.get('normal', 0)} pages",
    ]


def format_info_migrate(info: Mapping[str, object],
                        caps: Sequence[Mapping[str, object]] | None = None, *,
                        incoming: bool = False, show_globals: bool = True) -> str:
    """``info migrate`` as QEMU 7.2's HMP prints it (values in the same units).

    ``caps`` adds our one extra line, the capabilities (QEMU 7.2 no longer
    prints them here; the demo does, to show which run used XBZRLE).
    ``incoming`` formats a destination's own view.
    """
    lines = format_globals() if show_globals else []
    if caps is not None and info.get("status"):
        lines.append(format_capabilities(caps))
    if not info.get("status"):
        return "\n".join(lines)
    lines += _status_lines(info)
    if "expected-downtime" in info:
        lines.append(f"expected downtime: {info['expected-downtime']} ms")
    if "downtime" in info and not incoming:
        lines.append(f"downtime: {info['downtime']} ms")
    if "setup-time" in info and not incoming:
        lines.append(f"setup: {info['setup-time']} ms")
    lines += _socket_lines(info)
    ram = info.get("ram")
    if info["status"] == "failed" or not isinstance(ram, Mapping):
        return "\n".join(lines)  # QEMU shows no figures for a failed migration
    if incoming:
        lines += _received_lines(ram)
        x = info.get("xbzrle-cache")
        if isinstance(x, Mapping):
            lines.append(f"xbzrle pages: {x.get('pages', 0)} pages")
        return "\n".join(lines)
    lines += _ram_lines(ram)
    x = info.get("xbzrle-cache")
    if isinstance(x, Mapping):
        lines += _xbzrle_lines(x)
    if "cpu-throttle-percentage" in info:
        lines.append(f"cpu throttle percentage: {info['cpu-throttle-percentage']}")
    if "x-guest-work-percent" in info:
        lines.append(f"guest work: {_float(info['x-guest-work-percent']):.1f} % of unthrottled")
    return "\n".join(lines)
