"""Build the test guest and run it under a real QEMU driven over QMP.

Test helpers only: a synchronous JSON-lines QMP client (enough for a few
commands and polling), the guest build (gcc -m32, ld in elf_i386 mode), and
a QEMU process whose RAM lives in a file the test can read afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

GUEST_SOURCES = Path(__file__).parent / "guest"
QEMU = "qemu-system-x86_64"

# QEMU 7.2 under TCG loses dirty pages when RAM is a multiple of 256 KiB
# (fixed in 9.0): keep the size off that grid.
GUEST_RAM = (32 << 20) + (8 << 10)
# The guest's load loop (guest/guest.c: LOAD_BASE, LOAD_SPAN, STRIDE) adds 1 to
# one byte per KiB of its 16 MiB buffer, pass after pass; the buffer's last such
# byte counts the passes done (mod 256).  Low RAM is the file's start.
LAST_LOAD_BYTE = 0x00400000 + (16 << 20) - 1024


def qemu_missing_reason() -> str | None:
    """Why the interop tests cannot run here, or None."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed (scripts/test installs Debian's qemu-system-x86)"
    if shutil.which("gcc") is None or shutil.which("ld") is None:
        return "gcc and ld are needed to build the test guest"
    return None


def build_guest(out_dir: Path) -> Path:
    """Compile the multiboot test guest; returns the ELF32 kernel path."""
    cflags = ["-m32", "-ffreestanding", "-fno-pic", "-fno-stack-protector", "-O2",
              "-Wall", "-Wextra", "-Werror"]
    objects = []
    for source in ("boot.S", "guest.c"):
        obj = out_dir / (source.rsplit(".", 1)[0] + ".o")
        subprocess.run(["gcc", *cflags, "-c", str(GUEST_SOURCES / source), "-o", str(obj)],
                       check=True, capture_output=True)
        objects.append(str(obj))
    elf = out_dir / "guest.elf"
    subprocess.run(["ld", "-m", "elf_i386", "-T", str(GUEST_SOURCES / "guest.ld"), "-nostdlib",
                    "--build-id=none", "--no-warn-rwx-segments", "-o", str(elf), *objects],
                   check=True, capture_output=True)
    return elf


class QMPError(RuntimeError):
    pass


class QMP:
    """A blocking QMP client: one command at a time, events skipped."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.sock.settimeout(timeout)
        self.reader = self.sock.makefile("rb")
        # QEMU 7.2 can write an event (RESUME, as a guest without -S starts)
        # to a client it accepted but has not greeted yet: skip those.
        greeting = self._read()
        while "event" in greeting:
            greeting = self._read()
        if "QMP" not in greeting:
            raise QMPError(f"not a QMP greeting: {greeting}")
        self.execute("qmp_capabilities")

    def _read(self) -> dict:
        line = self.reader.readline()
        if not line:
            raise QMPError("QEMU closed the QMP connection")
        return json.loads(line)

    def execute(self, command: str, **arguments: object) -> object:
        message: dict[str, object] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self.sock.sendall(json.dumps(message).encode() + b"\n")
        while True:
            reply = self._read()
            if "event" in reply:
                continue
            if "error" in reply:
                raise QMPError(f"{command}: {reply['error']}")
            return reply["return"]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.reader.close()
            self.sock.close()


@dataclass
class MigrationSettings:
    xbzrle: bool = True
    cache_size: int = 4 << 20
    max_bandwidth: int = 48 << 20
    rounds_before_converging: int = 4
    timeout: float = 90.0
    parameters: dict = field(default_factory=dict)  # more migrate-set-parameters (tls-creds...)


@dataclass
class MigrationResult:
    info: dict
    seconds: float
    extra: dict = field(default_factory=dict)


class QemuProcess:
    """What both QEMU roles share: a QMP connection, a log, RAM in a shared file."""

    proc: subprocess.Popen
    qmp: QMP
    log: typing.IO
    ram_file: Path

    def ram_bytes(self) -> bytes:
        """The guest's RAM (stable once the migration completed)."""
        return self.ram_file.read_bytes()

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.qmp.execute("quit")
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(Exception):
            self.qmp.close()
        self.log.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.ram_file)


class GuestVM(QemuProcess):
    """One QEMU process running the test guest; RAM in ``ram_file``."""

    def __init__(self, kernel: Path, work: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.work = work
        self.ram_file = work / "guest-ram"
        self.qmp_path = work / "qmp.sock"
        self.log = open(work / "qemu.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [QEMU, "-accel", "tcg", "-nodefaults", "-display", "none", "-vga", "none",
             "-nic", "none", "-serial", "none", "-parallel", "none",
             "-object", f"memory-backend-file,id=mem,size={GUEST_RAM},"
                        f"mem-path={self.ram_file},share=on",
             "-machine", "pc,memory-backend=mem", "-m", f"{GUEST_RAM // 1024}k",
             "-kernel", str(kernel),
             "-qmp", f"unix:{self.qmp_path},server=on,wait=off", *extra_args],
            stdout=self.log, stderr=subprocess.STDOUT)
        try:
            self.qmp = QMP(self.qmp_path)
        except Exception:
            self.stop()
            raise

    def passes(self) -> int:
        """How many times the guest went over its 16 MiB buffer (mod 256)."""
        with open(self.ram_file, "rb") as ram:
            ram.seek(LAST_LOAD_BYTE)
            return ram.read(1)[0]

    def wait_running(self, passes: int = 2, timeout: float = 60.0) -> None:
        """Wait until the guest has booted and dirtied its buffer ``passes`` times.

        A condition, not a time: on a loaded machine TCG may take seconds to
        get the guest going, and a migration started before it filled its
        buffer has little to send in later rounds.
        """
        status = self.qmp.execute("query-status")
        assert isinstance(status, dict) and status["status"] == "running", status
        deadline = time.monotonic() + timeout
        while self.passes() < passes:
            if time.monotonic() > deadline:
                raise QMPError(f"the guest made {self.passes()} passes in {timeout} s")
            time.sleep(0.02)

    def migrate(self, uri: str, settings: MigrationSettings) -> MigrationResult:
        """Migrate with ``settings``; let it converge after a few dirty-sync rounds.

        QEMU must not converge on its own (a guest slowed down by a loaded
        machine dirties little, and QEMU then completes after a round or two):
        the downtime limit is 1 ms until the switch-over (0 would complete at
        once: QEMU 7.2 syncs the dirty log only when what is left falls under
        bandwidth x limit, so nothing left and no sync ends it), which comes once
        ``rounds_before_converging`` syncs are done and, with XBZRLE on, an
        XBZRLE page went out (``xbzrle-cache.bytes`` > 0; ``pages`` counts
        cache hits, also those that sent nothing or a whole page).
        """
        q = self.qmp
        q.execute("migrate-set-capabilities",
                  capabilities=[{"capability": "xbzrle", "state": settings.xbzrle}])
        q.execute("migrate-set-parameters", **{
            "max-bandwidth": settings.max_bandwidth, "xbzrle-cache-size": settings.cache_size,
            "downtime-limit": 1, **settings.parameters})
        start = time.monotonic()
        q.execute("migrate", uri=uri)
        converging = False
        while True:
            info = q.execute("query-migrate")
            assert isinstance(info, dict)
            status = info.get("status")
            if status == "completed":
                return MigrationResult(info, time.monotonic() - start)
            if status in ("failed", "cancelled"):
                raise QMPError(f"migration {status}: {info.get('error-desc', info)}")
            syncs = info.get("ram", {}).get("dirty-sync-count", 0)
            xbzrle_sent = info.get("xbzrle-cache", {}).get("bytes", 0) > 0
            if (not converging and syncs >= settings.rounds_before_converging
                    and (xbzrle_sent or not settings.xbzrle)):
                # The guest dirties 16 MiB endlessly; let the last round through.
                q.execute("migrate-set-parameters",
                          **{"downtime-limit": 600_000, "max-bandwidth": 1 << 30})
                converging = True
            if time.monotonic() - start > settings.timeout:
                q.execute("migrate_cancel")
                raise QMPError(f"migration did not complete in {settings.timeout} s: {info}")
            time.sleep(0.05)



class QemuDestination(QemuProcess):
    """A paused QEMU waiting for an incoming migration, its RAM in a file.

    ``machine`` is ``none`` (one block ``ram``) or ``pc`` (``pc.ram`` and the
    firmware blocks of ``-nodefaults``); the memory backend's id names the RAM
    block, so it is given the machine's own block name.  ``-S`` keeps the
    guest paused after the migration: nothing runs that could change its RAM
    (our streams carry no CPU state), so the file holds exactly what was
    loaded.  ``incoming`` is a URI for ``-incoming``, or None to listen on a
    free TCP port (``port``) through QMP's ``migrate-incoming``.
    ``extra_args`` go on QEMU's command line (``-object tls-creds-x509,...``);
    ``parameters`` are set with ``migrate-set-parameters`` before
    ``migrate-incoming`` (QEMU reads ``tls-creds`` when it starts listening).
    """

    RAM_BLOCK = {"none": "ram", "pc": "pc.ram"}

    def __init__(self, work: Path, ram_size: int, machine: str = "none",
                 incoming: str | None = None, extra_args: tuple[str, ...] = (),
                 parameters: dict | None = None) -> None:
        self.ram_file = work / "qemu-dest-ram"
        self.qmp_path = work / "qemu-dest.sock"
        self.log_path = work / "qemu-dest.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        block = self.RAM_BLOCK[machine]
        self.proc = subprocess.Popen(
            [QEMU, "-accel", "tcg", "-nodefaults", "-display", "none", "-S",
             "-object", f"memory-backend-file,id={block},size={ram_size},"
                        f"mem-path={self.ram_file},share=on",
             "-machine", f"{machine},memory-backend={block}", "-m", f"{ram_size // 1024}k",
             "-incoming", incoming or "defer",
             "-qmp", f"unix:{self.qmp_path},server=on,wait=off", *extra_args],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.port = 0
        try:
            self.qmp = QMP(self.qmp_path)
            # QEMU 7.2 loads XBZRLE pages with the capability off as well; a
            # QEMU destination is still meant to have it on, as the docs say.
            self.qmp.execute("migrate-set-capabilities",
                             capabilities=[{"capability": "xbzrle", "state": True}])
            if parameters:
                self.qmp.execute("migrate-set-parameters", **parameters)
            if incoming is None:
                self.qmp.execute("migrate-incoming", uri="tcp:127.0.0.1:0")
                info = self.qmp.execute("query-migrate")
                assert isinstance(info, dict), info
                self.port = int(info["socket-address"][0]["port"])
        except Exception:
            self.stop()
            raise

    def wait_completed(self, timeout: float = 60.0) -> dict:
        """QEMU's own ``query-migrate`` once its incoming migration ended."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise QMPError(f"QEMU exited with status {self.proc.returncode}: {self.errors()}")
            info = self.qmp.execute("query-migrate")
            assert isinstance(info, dict)
            if info.get("status") in ("completed", "failed"):
                return info
            if time.monotonic() > deadline:
                raise QMPError(f"incoming migration did not end in {timeout} s: {info}")
            time.sleep(0.05)

    def ram_blocks(self) -> list[tuple[str, int]]:
        """``info ramblock``: (name, used size) of every block, as QEMU lists them."""
        text = self.qmp.execute("human-monitor-command", **{"command-line": "info ramblock"})
        assert isinstance(text, str)
        rows = []
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) == 6:  # name, page size and its unit, offset, used, total
                rows.append((fields[0], int(fields[4], 16)))
        return rows

    def errors(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace").strip()

