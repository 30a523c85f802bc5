"""Plain-text form of a :class:`~.analyze.StreamReport` (the JSON form is ``to_dict``)."""

from __future__ import annotations

from .analyze import PAGE_KINDS, StreamReport


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} B"


def _mapped_ram_lines(r: StreamReport) -> list[str]:
    assert r.mapped_ram is not None
    present = r.mapped_ram_pages_present()
    lines = ["mapped-ram: RAM at fixed file offsets, "
             + (f"{present} pages present" if present is not None
                else "pages present not read (the input cannot seek)")]
    for info in r.mapped_ram:
        b = info.block
        count = "?" if info.pages_present is None else str(info.pages_present)
        lines.append(f"  {b.block}: header v{b.version} at offset {b.stream_offset}, "
                     f"{b.page_size}-byte pages, {count} of {b.pages} present")
        lines.append(f"    bitmap  {b.bitmap_offset:>14} .. {b.bitmap_offset + b.bitmap_size:<14}"
                     f" ({b.bitmap_size} bytes)")
        lines.append(f"    pages   {b.pages_offset:>14} .. {b.pages_end:<14}"
                     f" ({_size(b.size)})")
    return lines


def render_report(r: StreamReport) -> str:
    lines = [f"stream: {r.source} ({r.size} bytes)",
             f"version: {r.version if r.version is not None else '-'}"]
    if r.machine is not None:
        caps = ", ".join(r.capabilities) or "none"
        lines.append(f"machine: {r.machine}")
        lines.append(f"capabilities (configuration/capabilities): {caps}")
        if r.uuid:
            lines.append(f"uuid: {r.uuid}")
    lines.append("sections:")
    for s in r.sections:
        extra = f", {s.parts} parts, {'ended' if s.ended else 'NOT ENDED'}" \
            if s.kind == "iterable" else ""
        lines.append(f"  id {s.section_id:<3} {s.idstr!r} instance {s.instance_id} "
                     f"version {s.version_id} ({s.kind}{extra}) at offset {s.stream_offset}")
    if r.ram_total is not None:
        lines.append(f"ram: {len(r.blocks)} blocks, {r.ram_total} bytes ({_size(r.ram_total)})")
        for name, size in r.blocks:
            lines.append(f"  {name:<28} {size:>14} bytes ({_size(size)})")
    if r.mapped_ram is not None:
        lines.extend(_mapped_ram_lines(r))
    if r.rounds:
        lines.append("rounds (pages / wire bytes):")
        lines.append(f"  {'round':<10}" + "".join(f"{k:>24}" for k in PAGE_KINDS))
        for rnd in r.rounds:
            label = f"{rnd.index}{' final' if rnd.final else ''}"
            lines.append(f"  {label:<10}" + "".join(
                f"{rnd.kinds[k].pages:>10} / {rnd.kinds[k].bytes:>11}" for k in PAGE_KINDS))
        if r.rounds_capped:
            lines.append(f"  ({len(r.rounds)} rounds, the most a report keeps apart: "
                         "any later ones are counted into the last)")
        totals = r.totals()
        lines.append(f"  {'total':<10}" + "".join(
            f"{totals[k].pages:>10} / {totals[k].bytes:>11}" for k in PAGE_KINDS))
    if r.commands:
        lines.append("commands:")
        for cmd in r.commands:
            lines.append(f"  {cmd.name} (0x{cmd.cmd:02x}, {cmd.length} bytes) "
                         f"at offset {cmd.stream_offset}")
    if r.digest is not None:
        lines.append("digest (xbzrle-digest section):")
        for name, (size, hexd) in r.digest.items():
            lines.append(f"  {name}: {size} bytes, {hexd}")
    if r.device_state_offset is not None:
        lines.append(f"device state: {r.device_state_bytes} bytes from offset "
                     f"{r.device_state_offset}, kept raw")
    if r.eof:
        eof = "yes"
    elif r.device_state_offset is not None:
        eof = "inside the raw device state"
    else:
        eof = "not seen"
    lines.append(f"eof: {eof}")
    if r.devices is not None:
        lines.append(f"devices ({len(r.devices)}, from the VMDESCRIPTION JSON):")
        for d in r.devices:
            lines.append(f"  {d['name']} instance {d['instance_id']} version {d['version']}")
    status = "complete" if r.complete else "INCOMPLETE"
    lines.append(f"status: {status}, {r.end_offset} bytes parsed")
    if r.error:
        lines.append(f"error: {r.error}")
    return "\n".join(lines) + "\n"
