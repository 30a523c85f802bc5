"""The text of HMP's ``info migrate``, in QEMU's layout.

Pure formatting over ``query-migrate`` dicts; the HMP console and the
demo's report print it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def format_capabilities(caps: Sequence[Mapping[str, object]]) -> str:
    return "capabilities: " + " ".join(
        f"{c['capability']}: {'on' if c['state'] else 'off'}" for c in caps)


def _socket_uri(address: Mapping[str, object]) -> str:
    if address.get("type") == "inet":
        host = str(address.get("host", ""))
        host = f"[{host}]" if ":" in host else host
        return f"tcp:{host}:{address.get('port')}"
    return f"{address.get('type')}:{address.get('path', '')}"


def format_info_migrate(info: Mapping[str, object],
                        caps: Sequence[Mapping[str, object]] | None = None) -> str:
    """``info migrate`` as QEMU's HMP prints it (values in the same units)."""
    lines: list[str] = []
    if caps is not None and info.get("status"):
        lines.append(format_capabilities(caps))
    if not info:
        return "\n".join(lines)
    lines.append(f"Migration status: {info['status']}")
    if "error-desc" in info:
        lines.append(f"Error: {info['error-desc']}")
    if "total-time" in info:
        lines.append(f"total time: {info['total-time']} ms")
    if "expected-downtime" in info:
        lines.append(f"expected downtime: {info['expected-downtime']} ms")
    if "downtime" in info:
        lines.append(f"downtime: {info['downtime']} ms")
    if "setup-time" in info:
        lines.append(f"setup: {info['setup-time']} ms")
    sockets = info.get("socket-address")
    if isinstance(sockets, Sequence) and sockets:
        lines.append("socket address: [")
        lines += [f"\t{_socket_uri(a)}" for a in sockets if isinstance(a, Mapping)]
        lines.append("]")
    ram = info.get("ram")
    if isinstance(ram, Mapping):
        lines += [
            f"transferred ram: {ram['transferred'] >> 10} kbytes",
            f"throughput: {ram['mbps']:.2f} mbps",
            f"remaining ram: {ram['remaining'] >> 10} kbytes",
            f"total ram: {ram['total'] >> 10} kbytes",
            f"duplicate: {ram['duplicate']} pages",
            f"skipped: {ram.get('skipped', 0)} pages",
            f"normal: {ram['normal']} pages",
            f"normal bytes: {ram['normal-bytes'] >> 10} kbytes",
            f"dirty sync count: {ram['dirty-sync-count']}",
            f"page size: {ram.get('page-size', 4096) >> 10} kbytes",
        ]
        if ram.get("pages-per-second"):
            lines.append(f"pages-per-second: {ram['pages-per-second']}")
        if ram.get("dirty-pages-rate"):
            lines.append(f"dirty pages rate: {ram['dirty-pages-rate']} pages")
    x = info.get("xbzrle-cache")
    if isinstance(x, Mapping):
        lines += [
            f"cache size: {x['cache-size']} bytes",
            f"xbzrle transferred: {x['bytes'] >> 10} kbytes",
            f"xbzrle pages: {x['pages']} pages",
            f"xbzrle cache miss: {x['cache-miss']} pages",
            f"xbzrle cache miss rate: {x['cache-miss-rate']:.2f}",
            f"xbzrle encoding rate: {x['encoding-rate']:.2f}",
            f"xbzrle overflow: {x['overflow']}",
        ]
    return "\n".join(lines)
