"""Our source into a real QEMU 7.2 destination, next to our own destination.

The same live guest (``machine="none"``, the seed's load generator flat out,
XBZRLE on, a bandwidth cap) is migrated in turn into
``qemu-system-x86_64 -machine none -incoming tcp:...`` (x-ram-digest off)
and into ``xbzrle vm --machine none --incoming`` (x-ram-digest on, the
default between our own processes).  Both destinations are separate
processes on loopback; runs alternate so machine noise hits both alike.
Prints every run, then medians and the ratio QEMU / ours.  Every QEMU run
also checks that QEMU's RAM equals the source's (the guest is paused then).

    python benchmarks/into_qemu.py [--ram 64M] [--cap 32M] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xbzrle import Guest
from xbzrle.migration.manager import MigrationManager
from xbzrle.sizes import parse_size

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "qemu" / "interop"))
from qemu_vm import QemuDestination  # noqa: E402

FIELDS = ("total_ms", "downtime_ms", "sent_mib", "syncs", "xbzrle_pages")


def ours(ram: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "xbzrle", "vm", "--machine", "none", "--ram", str(ram),
         "--workload", "loadgen", "--incoming", "tcp:127.0.0.1:0", "--xbzrle",
         "--exit-after-migration", "--report-json"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline().split()[1])
    return proc, f"tcp:127.0.0.1:{port}"


def migrate(guest: Guest, uri: str, cap: int, digest: bool) -> dict:
    manager = MigrationManager(guest)
    manager.set_capability("xbzrle", True)
    manager.set_capability("x-ram-digest", digest)
    manager.set_parameters(max_bandwidth=cap, xbzrle_cache_size=16 << 20)
    status = manager.migrate(uri).wait(300)
    info = manager.query()
    if str(status) != "completed":
        raise SystemExit(f"migration {status}: {info.get('error-desc')}")
    return {"total_ms": info["total-time"], "downtime_ms": info["downtime"],
            "sent_mib": info["ram"]["transferred"] / 2**20,
            "syncs": info["ram"]["dirty-sync-count"],
            "xbzrle_pages": info["xbzrle-cache"]["pages"]}


def into_qemu(guest: Guest, ram: int, cap: int, work: Path) -> dict:
    dest = QemuDestination(work, ram)
    try:
        row = migrate(guest, f"tcp:127.0.0.1:{dest.port}", cap, digest=False)
        if dest.wait_completed()["status"] != "completed":
            raise SystemExit(f"QEMU failed: {dest.errors()}")
        with memoryview(guest.blocks["ram"]) as view:
            if dest.ram_bytes() != view:
                raise SystemExit("QEMU's RAM differs from the source's")
        return row
    finally:
        dest.stop()


def into_ours(guest: Guest, ram: int, cap: int) -> dict:
    proc, uri = ours(ram)
    try:
        row = migrate(guest, uri, cap, digest=True)
        out, _ = proc.communicate(timeout=60)
        report = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
        if report["status"] != "completed":
            raise SystemExit(f"our destination: {report}")
        return row
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ram", default="64M", help="guest RAM; 8 KiB are added (QEMU 7.2 TCG)")
    ap.add_argument("--cap", default="32M", help="max-bandwidth, bytes/s")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    if shutil.which("qemu-system-x86_64") is None:
        print("qemu-system-x86_64 is not installed", file=sys.stderr)
        return 1
    ram = parse_size(args.ram) + (8 << 10)
    cap = parse_size(args.cap)
    rows: dict[str, list[dict]] = {"qemu": [], "ours": []}
    print(f"{'destination':<12} " + " ".join(f"{f:>13}" for f in FIELDS))
    with tempfile.TemporaryDirectory() as tmp, Guest(ram=ram, machine="none") as guest:
        guest.start_workload("loadgen")
        for _ in range(args.repeats):
            for name in ("qemu", "ours"):
                row = (into_qemu(guest, ram, cap, Path(tmp)) if name == "qemu"
                       else into_ours(guest, ram, cap))
                guest.cont()  # the source pauses after each completed migration
                rows[name].append(row)
                print(f"{name:<12} " + " ".join(f"{row[f]:>13.1f}" for f in FIELDS), flush=True)
                time.sleep(0.2)  # let the workload dirty its pages again
    print(f"\nmedians of {args.repeats} runs each ({ram} bytes of RAM, cap {cap} B/s):")
    for f in FIELDS:
        q = statistics.median(r[f] for r in rows["qemu"])
        o = statistics.median(r[f] for r in rows["ours"])
        ratio = f"{q / o:.2f}" if o else "-"
        print(f"  {f:<13} into QEMU {q:10.1f}   into ours {o:10.1f}   QEMU/ours {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
