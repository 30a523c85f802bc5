"""The wire: a full-RAM migration of random bytes, ours next to QEMU 7.2's.

A paused guest whose RAM holds SIZE bytes of one random file migrates over
loopback TCP with no bandwidth cap into a paused destination.  When
``qemu-system-x86_64`` is installed, QEMU does the same with the same bytes
(``-machine none -S``, RAM a ``memory-backend-file`` of that file, the
destination ``-incoming tcp:``), alternating with our runs, and the script
prints both rates and their ratio.  Then our source alone into
``exec:cat > /dev/null`` and into ``file:`` on tmpfs, and ``xbzrle extract``
of the resulting stream (manifest with SHA-256, then with the RAM digest).
Every figure is the median of ``--runs`` runs.

Then the floors, measured in the same run: what this machine can do at all
for the same bytes, whoever does it.  Populating SIZE of fresh anonymous
memory (``MADV_POPULATE_WRITE``: the kernel zeroing the pages a destination
must own), on 4 KiB pages and on huge pages, each right after as much was
freed; one ``memcpy`` of SIZE into memory already populated; SIZE over
loopback TCP from this process into a child that receives into one reused
buffer (no RAM to fill); and the work of a migration over TCP: that
transfer's CPU on both sides, the memcpy and the cheaper populate, divided
by the cores (the physical work: one copy into the socket, one out, one
write into RAM the destination owns).  A migration over TCP cannot beat
either TCP line.  Last, issue 10's goals for the wire, each with the time
it allows, ours, and whether a floor of the same run already takes longer
(``goal_report``).

Our source is the library ``Guest`` in this process (its migration thread
does the work); our destination is a child ``xbzrle vm -S --incoming``.  A
run ends when the destination holds the RAM: for us the source's
``completed`` (it waits for the destination's verdict, given after the digest
check); for QEMU the later of the two sides' ``completed``.

    python benchmarks/wire.py [--size 1G] [--runs 5] [--no-qemu]
                              [--only wire,exec,file,extract,floor]
                              [--host-memory both|warm|cold]

The machine is shared: read the ratios (measured in the same run), not the
absolute rates.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xbzrle import Guest
from xbzrle.migration.manager import MigrationManager
from xbzrle.sizes import parse_size

QEMU = "qemu-system-x86_64"
TMPFS = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
POLL = 0.005
TICK = os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """CPU seconds of the children reaped so far (our destination, exec:'s cat)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds of a running process (QEMU), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def random_file(path: Path, size: int) -> Path:
    """SIZE random bytes at ``path`` (kept between runs of the script)."""
    if not path.exists() or path.stat().st_size != size:
        with open(path, "wb") as f:
            left = size
            while left:
                chunk = os.urandom(min(left, 16 << 20))
                f.write(chunk)
                left -= len(chunk)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QMP:
    """Just enough QMP for a benchmark: one command at a time, events skipped."""

    def __init__(self, path: str, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + 30
        while True:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"QEMU did not start (status {proc.poll()})") from None
                time.sleep(0.02)
        self.reader = self.sock.makefile("rb")
        json.loads(self.reader.readline())
        self.cmd("qmp_capabilities")

    def cmd(self, command: str, **arguments: object) -> dict:
        self.sock.sendall(json.dumps({"execute": command, "arguments": arguments}).encode()
                          + b"\n")
        while True:
            reply = json.loads(self.reader.readline())
            if "event" in reply:
                continue
            if "error" in reply:
                raise RuntimeError(f"{command}: {reply['error']}")
            return reply["return"]


def qemu_process(work: Path, name: str, size: int, backend: str, *extra: str):
    path = str(work / f"{name}.qmp")
    proc = subprocess.Popen(
        [QEMU, "-nodefaults", "-display", "none", "-machine", "none", "-m", f"{size >> 20}M",
         "-S", "-object", backend, "-machine", "memory-backend=mem", *extra,
         "-qmp", f"unix:{path},server=on,wait=off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, QMP(path, proc)


def qemu_run(ram_file: Path, size: int, work: Path) -> tuple[float, float, float]:
    """Seconds for QEMU 7.2 to migrate the paused guest until both sides completed,
    and the CPU seconds of the source and destination processes meanwhile."""
    port = free_port()
    src, qs = qemu_process(work, "src", size, f"memory-backend-file,id=mem,size={size},"
                           f"mem-path={ram_file},share=on")
    dst, qd = qemu_process(work, "dst", size, f"memory-backend-ram,id=mem,size={size}",
                           "-incoming", f"tcp:127.0.0.1:{port}")
    try:
        qs.cmd("migrate-set-parameters", **{"max-bandwidth": 0, "downtime-limit": 300})
        settle_host_memory(size)
        cpu0 = process_cpu(src.pid), process_cpu(dst.pid)
        started = time.monotonic()
        qs.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        done = {"src": None, "dst": None}
        while None in done.values():
            for side, q in (("src", qs), ("dst", qd)):
                if done[side] is None:
                    status = q.cmd("query-migrate").get("status")
                    if status == "completed":
                        done[side] = time.monotonic()
                    elif status in ("failed", "cancelled"):
                        raise RuntimeError(f"QEMU {side}: migration {status}")
            time.sleep(POLL)
        return (max(done.values()) - started, process_cpu(src.pid) - cpu0[0],
                process_cpu(dst.pid) - cpu0[1])
    finally:
        for proc, q in ((src, qs), (dst, qd)):
            with contextlib.suppress(Exception):
                q.cmd("quit")
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def our_guest(ram_file: Path, size: int) -> Guest:
    guest = Guest(ram=size)
    with open(ram_file, "rb") as f, memoryview(guest.blocks["pc.ram"]) as view:
        f.readinto(view)
    guest.stop()
    return guest


def huge_page_share(address: int) -> float:
    """The share of the mapping at ``address`` (this process) that sits on huge
    pages: the source's RAM asks for them, and the host may not have them."""
    fields: dict[str, int] = {}
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                inside = int(head.split("-")[0], 16) == address
            elif inside and head in ("Rss:", "AnonHugePages:"):
                fields[head] = int(line.split()[1])
    return fields.get("AnonHugePages:", 0) / max(1, fields.get("Rss:", 0))


def our_destination(size: int) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "xbzrle", "vm", "--ram", str(size), "--workload", "idle",
           "-S", "--incoming", "tcp:127.0.0.1:0", "--exit-after-migration", "--report-json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, int(line.split()[1])


DOWNTIMES: dict[str, list[int]] = {}
"""``downtime`` (ms, from the guest's stop to the end) of each of our migrations, by URI
scheme: for a paused guest that is the switch-over, the RAM digests and the verdict."""


HOST_MEMORY = "warm"
"""How the destinations find the host's free memory (``--host-memory``).  On
a virtual machine that hands freed memory back to its host (free page
reporting, about 2 s after the free), 1 GiB of fresh RAM costs 0.13 s on
huge pages when it was freed moments before and 1.1-1.3 s once handed back
(4 KiB pages: 0.29 and 0.33-0.39 s); which destination gets which would
otherwise depend on the order and on start-up times.  ``warm``: this script
populates and frees as much memory as the guest's right before each timed
pass (on bare metal every pass is like this); ``cold``: it waits 3 s first,
so both destinations take memory the host has reclaimed (an idle
destination host of this kind).  ``both`` (the default) prints the two."""


def settle_host_memory(size: int, state: str | None = None) -> None:
    """Put the host's free memory in the same state (``state``, else
    HOST_MEMORY) before each side's pass."""
    if (state or HOST_MEMORY) == "cold":
        time.sleep(3)
        return
    area = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
    try:
        area.madvise(mmap.MADV_HUGEPAGE)
        area.madvise(MADV_POPULATE_WRITE)
    finally:
        area.close()


def our_migration(guest: Guest, uri: str) -> tuple[float, float, float]:
    """Seconds from ``migrate`` to ``completed`` (fails loudly otherwise), the CPU
    seconds of this process (the source) and of the children reaped meanwhile."""
    manager = MigrationManager(guest)
    manager.set_parameters(max_bandwidth=0)
    cpu0, child0 = time.process_time(), children_cpu()
    started = time.monotonic()
    mig = manager.migrate(uri)
    mig.wait()
    elapsed = time.monotonic() - started
    cpu, child = time.process_time() - cpu0, children_cpu() - child0
    info = manager.query()
    if info["status"] != "completed":
        raise RuntimeError(f"our migration to {uri}: {info['status']}: {mig.error}")
    DOWNTIMES.setdefault(uri.split(":", 1)[0], []).append(int(info["downtime"]))
    return elapsed, cpu, child


def our_run(guest: Guest, size: int) -> tuple[float, float, float]:
    """Seconds, source CPU and destination CPU (from the migration's start to its exit)."""
    proc, port = our_destination(size)
    try:
        settle_host_memory(size)
        child0 = children_cpu() + process_cpu(proc.pid)  # its start-up is not migration work
        elapsed, cpu, _ = our_migration(guest, f"tcp:127.0.0.1:{port}")
        out, _ = proc.communicate(timeout=60)
        report = json.loads([x for x in out.splitlines() if x.startswith("{")][-1])
        if not report.get("digest-verified"):
            raise RuntimeError(f"destination: {report}")
        return elapsed, cpu, children_cpu() - child0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def write_floor(guest: Guest, path: Path) -> tuple[float, float]:
    """Seconds and CPU to write the guest's RAM into a new tmpfs file with plain
    1 MiB ``os.write`` calls: what storing the bytes costs, whoever writes them."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    cpu0, started = time.process_time(), time.monotonic()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with memoryview(guest.blocks["pc.ram"]) as view:
            for at in range(0, len(view), 1 << 20):
                os.write(fd, view[at:at + (1 << 20)])
    finally:
        os.close(fd)
    result = time.monotonic() - started, time.process_time() - cpu0
    path.unlink()
    return result


MADV_POPULATE_WRITE = 23  # Linux 5.14
SINK = """
import socket, sys, time
size, port = int(sys.argv[1]), int(sys.argv[2])
buf = bytearray(1 << 20)
with socket.create_connection(("127.0.0.1", port)) as s:
    cpu = time.process_time()
    left = size
    while left:
        n = s.recv_into(buf, min(left, len(buf)))
        if not n:
            sys.exit(1)
        left -= n
    s.sendall(b"k%.6f" % (time.process_time() - cpu))
"""
"""The TCP floor's receiver: it reports the CPU its receiving took (not its start)."""


def populate_floor(size: int, huge: bool) -> tuple[float]:
    """Seconds to populate SIZE of fresh anonymous memory (the kernel zeroes each
    page) on huge pages or on 4 KiB pages, right after as much was freed: the
    cheapest state of the host's memory (``warm``, see HOST_MEMORY).  Any
    destination pays this for the RAM it receives, QEMU's as well as ours."""
    settle_host_memory(size, "warm")
    area = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
    try:
        area.madvise(mmap.MADV_HUGEPAGE if huge else mmap.MADV_NOHUGEPAGE)
        started = time.monotonic()
        area.madvise(MADV_POPULATE_WRITE)
        return (time.monotonic() - started,)
    finally:
        area.close()


def memcpy_floor(guest: Guest) -> tuple[float]:
    """Seconds of one memcpy of the guest's RAM into memory already populated."""
    with memoryview(guest.blocks["pc.ram"]) as src:
        area = mmap.mmap(-1, len(src))
        try:
            area.madvise(MADV_POPULATE_WRITE)
            with memoryview(area) as dst:
                started = time.monotonic()
                dst[:] = src
                return (time.monotonic() - started,)
        finally:
            area.close()


def tcp_floor(guest: Guest) -> tuple[float, float, float]:
    """Seconds (and CPU of sender and receiver) to send the guest's RAM over loopback
    TCP, 1 MiB sends, into a child that receives into one reused 1 MiB buffer."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with memoryview(guest.blocks["pc.ram"]) as view:
            size = len(view)
        proc = subprocess.Popen([sys.executable, "-c", SINK, str(size),
                                 str(server.getsockname()[1])])
        conn, _ = server.accept()
        with conn, memoryview(guest.blocks["pc.ram"]) as view:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            cpu0, started = time.process_time(), time.monotonic()
            for at in range(0, len(view), 1 << 20):
                conn.sendall(view[at:at + (1 << 20)])
            reply = b""
            while chunk := conn.recv(64):  # "k" and the CPU, then the sink closes
                reply += chunk
            if not reply.startswith(b"k"):
                raise RuntimeError("the TCP sink did not receive everything")
            elapsed, cpu = time.monotonic() - started, time.process_time() - cpu0
        if proc.wait(30) != 0:
            raise RuntimeError("the TCP sink failed")
        return elapsed, cpu, float(reply[1:])


def gbps(size: int, seconds: float) -> float:
    return size / seconds / 1e9


def line(what: str, runs: list[tuple[float, ...]], size: int, extra: str = "") -> float:
    """Print the medians of (seconds, source CPU, destination CPU); return the seconds."""
    seconds, *cpus = (statistics.median(r[i] for r in runs) for i in range(len(runs[0])))
    cpu = "  ".join(f"{c:5.2f}" for c in cpus)
    print(f"{what:<42} {seconds:6.3f} s {gbps(size, seconds):5.2f} GB/s  cpu {cpu:<12} {extra}",
          flush=True)
    return seconds


def tcp_passes(guest: Guest, ram_file: Path, size: int, work: Path, runs: int,
               with_qemu: bool, host_memory: str) -> tuple[float | None, float]:
    """The TCP pass, ours and QEMU's, ``runs`` times with the host's memory in one state.
    Returns the medians in seconds: QEMU's (None without QEMU) and ours."""
    global HOST_MEMORY
    HOST_MEMORY = host_memory
    DOWNTIMES.pop("tcp", None)
    ours, theirs = [], []
    for i in range(runs):
        # Who goes first alternates, so that neither side always follows the
        # other's exit (whose freed memory the host may still back).
        if with_qemu and i % 2:
            theirs.append(qemu_run(ram_file, size, work))
        ours.append(our_run(guest, size))
        if with_qemu and not i % 2:
            theirs.append(qemu_run(ram_file, size, work))
    print(f"host memory {host_memory}:")
    qemu = None
    if with_qemu:
        qemu = line("QEMU 7.2 -> QEMU 7.2, tcp loopback", theirs, size)
        mine = line("xbzrle -> xbzrle, tcp loopback", ours, size)
        ratio = statistics.median(t[0] / o[0] for t, o in zip(theirs, ours, strict=True))
        print(f"  rate ratio to QEMU 7.2 (median of per-run ratios): {ratio:.2f}x "
              f"(medians {qemu / mine:.2f}x)")
    else:
        mine = line("xbzrle -> xbzrle, tcp loopback", ours, size)
    print(f"  downtime (stop -> verdict, both digests): "
          f"{statistics.median(DOWNTIMES['tcp']):.0f} ms", flush=True)
    return qemu, mine


FLOORS = {"floor-tcp": "the loopback TCP floor (nothing parsed, no RAM filled)",
          "floor-tcp-work": "the TCP floor's CPU on both sides, one copy of the RAM and "
                            "populating fresh RAM for it, spread over this machine's cores,",
          "floor-write": "the tmpfs write floor"}


def goal_report(size: int, figures: dict[str, float]) -> list[str]:
    """Issue 10's goals for the wire next to what this run measured, each with
    the floor that bounds it where the run measured one.

    ``figures``: median seconds by name, any of ``tcp-qemu-<state>`` and
    ``tcp-ours-<state>`` (``state`` cold or warm), ``exec``, ``file``,
    ``extract`` (``--checksum ram-digest``), ``floor-tcp`` (loopback TCP into
    a reused buffer), ``floor-tcp-work`` (that transfer's CPU on both sides,
    one memcpy of the RAM and populating fresh RAM for it, divided by the
    cores this process may use: work any migration over TCP does, QEMU's
    too, however it is spread) and
    ``floor-write`` (the RAM written into a tmpfs file).  A goal is out of
    reach on this machine when a floor that its work contains already takes
    longer than the goal allows.
    """
    goals: list[tuple[str, float, str, tuple[str, ...]]] = []  # what, allowed, ours, floors
    for state in ("cold", "warm"):
        if f"tcp-qemu-{state}" in figures and f"tcp-ours-{state}" in figures:
            goals.append((f"TCP at 2x QEMU 7.2's rate, host memory {state}",
                          figures[f"tcp-qemu-{state}"] / 2, f"tcp-ours-{state}",
                          ("floor-tcp", "floor-tcp-work")))
    goals.append(("source into exec: at 3 GB/s", size / 3e9, "exec", ()))
    if "exec" in figures:
        goals.append(("source into file: no slower than into exec:", figures["exec"], "file",
                      ("floor-write",)))
    goals.append(("extract at 1.5 GB/s", size / 1.5e9, "extract", ("floor-write",)))
    lines = []
    for what, allowed, ours, floors in goals:
        if ours not in figures:
            continue
        took = figures[ours]
        text = f"  {what:<48} allows {allowed:6.3f} s, ours {took:6.3f} s: "
        beyond = [f for f in floors if figures.get(f, 0.0) > allowed]
        if took <= allowed:
            text += "met"
        elif beyond:
            text += (f"not met; out of reach here: {FLOORS[beyond[0]]} alone takes "
                     f"{figures[beyond[0]]:.3f} s")
        else:
            text += "not met"
        lines.append(text)
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1G")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-qemu", action="store_true", help="ours alone even if QEMU is here")
    ap.add_argument("--only", default="wire,exec,file,extract,floor")
    ap.add_argument("--host-memory", choices=("both", "warm", "cold"), default="both",
                    help="the host's free memory before each TCP pass (see HOST_MEMORY)")
    args = ap.parse_args()
    size = parse_size(args.size)
    parts = set(args.only.split(","))
    work = Path(tempfile.mkdtemp(prefix="xbzrle-wire-", dir=TMPFS))
    ram_file = random_file(TMPFS / f"xbzrle-wire-{size}.bin", size)
    with_qemu = not args.no_qemu and shutil.which(QEMU) is not None
    print(f"{size / 2**30:.2f} GiB of random bytes, paused guests, median of {args.runs} runs"
          f"{', against QEMU 7.2' if with_qemu else ' (no QEMU here: ours alone)'}; "
          "cpu: CPU seconds of the source, then of the destination")
    guest = our_guest(ram_file, size)
    figures: dict[str, float] = {}
    print(f"our source's RAM: {huge_page_share(guest.blocks['pc.ram'].address):.0%} on huge "
          "pages (QEMU's source: a tmpfs file, 4 KiB pages)")
    try:
        if "wire" in parts:
            for state in (("cold", "warm") if args.host_memory == "both" else
                          (args.host_memory,)):
                qemu, mine = tcp_passes(guest, ram_file, size, work, args.runs, with_qemu,
                                        state)
                figures[f"tcp-ours-{state}"] = mine
                if qemu is not None:
                    figures[f"tcp-qemu-{state}"] = qemu
        if "exec" in parts:
            runs = [our_migration(guest, "exec:cat > /dev/null") for _ in range(args.runs)]
            figures["exec"] = line("xbzrle source -> exec:cat > /dev/null", runs, size,
                                   "(cpu: source, cat)")
            print(f"  downtime (stop -> last byte, the source's digest): "
                  f"{statistics.median(DOWNTIMES['exec']):.0f} ms", flush=True)
        stream = work / "stream"
        if "file" in parts or "extract" in parts:
            runs = []
            for _ in range(args.runs if "file" in parts else 1):
                with contextlib.suppress(FileNotFoundError):
                    stream.unlink()
                runs.append(our_migration(guest, f"file:{stream}")[:2])
            if "file" in parts:
                figures["file"] = line("xbzrle source -> file: on tmpfs", runs, size)
                floor = [write_floor(guest, work / "floor") for _ in range(args.runs)]
                figures["floor-write"] = line("  floor: os.write of the RAM into a tmpfs file",
                                              floor, size,
                                              "(1 MiB writes: the kernel's page cache)")
        if "extract" in parts:
            checksums = ("sha256", "ram-digest")
            runs: dict[str, list[tuple[float, float]]] = {c: [] for c in checksums}
            for i in range(args.runs):
                for checksum in checksums:  # alternating, so both see the same load
                    out = work / f"extract-{i}"
                    child0 = children_cpu()
                    started = time.monotonic()
                    subprocess.run([sys.executable, "-m", "xbzrle", "extract", str(stream), "-o",
                                    str(out), "--checksum", checksum], check=True,
                                   stdout=subprocess.DEVNULL)
                    runs[checksum].append((time.monotonic() - started, children_cpu() - child0))
                    shutil.rmtree(out)
            for checksum in checksums:
                figures[f"extract-{checksum}"] = line(
                    f"xbzrle extract --checksum {checksum}", runs[checksum], size,
                    "(tmpfs -> tmpfs, with the interpreter's start)")
            figures["extract"] = figures["extract-ram-digest"]
        if "floor" in parts:
            floors = {"populate-4k": [], "populate-huge": [], "memcpy": [], "tcp": []}
            for _ in range(args.runs):
                floors["populate-4k"].append(populate_floor(size, huge=False))
                floors["populate-huge"].append(populate_floor(size, huge=True))
                floors["memcpy"].append(memcpy_floor(guest))
                floors["tcp"].append(tcp_floor(guest))
            populate = min(
                line("floor: populate fresh RAM, 4 KiB pages", floors["populate-4k"], size),
                line("floor: populate fresh RAM, huge pages", floors["populate-huge"], size))
            line("floor: one memcpy of the RAM", floors["memcpy"], size)
            figures["floor-tcp"] = line("floor: loopback TCP into a reused buffer",
                                        floors["tcp"], size, "(cpu: sender, receiver)")
            cores = len(os.sched_getaffinity(0))
            figures["floor-tcp-work"] = (
                sum(statistics.median(run[i] for run in floors["tcp"]) for i in (1, 2))
                + statistics.median(run[0] for run in floors["memcpy"]) + populate
            ) / cores
            print(f"{f'floor: that CPU, memcpy, populate, / {cores}':<42} "
                  f"{figures['floor-tcp-work']:6.3f} s", flush=True)
        report = goal_report(size, figures)
        if report:
            print("issue 10's goals for the wire, next to this run's floors:")
            print("\n".join(report), flush=True)
    finally:
        guest.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
