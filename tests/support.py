"""Shared test helpers: waiting on conditions instead of sleeping and hoping;
loading the benchmark scripts."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.02,
               message: str = "condition not met in time"):
    """Poll ``predicate`` until it returns something true; return that value.

    The timeout only bounds a hang: a loaded machine makes the wait longer,
    never the test wrong.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(message)
        time.sleep(interval)


def progresses(guest, timeout: float = 30.0) -> bool:
    """True once the running guest's workload writes another page (False if it stops)."""
    before = guest.pages_written
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not guest.running:
            return False
        if guest.pages_written > before:
            return True
        time.sleep(0.01)
    return False


@contextlib.contextmanager
def refusing_destination(reason: str = "refused by the test"):
    """A destination that reads a whole stream, then refuses it; yields its URI.

    The source gets as far as its verdict (past the switch-over), then fails.
    """
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            while conn.recv(1 << 16):
                pass
            conn.sendall(f"XBZRLE-ERROR {reason}\n".encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"tcp:127.0.0.1:{server.getsockname()[1]}"
    finally:
        thread.join(10)
        server.close()


def rewrite_between_rounds(manager, guest, block: str = "pc.ram") -> None:
    """Hold each round until the workload has gone over every page twice more.

    The listeners run in the migration thread: once when it turns active
    (after setup cleared the dirty log) and after each dirty sync.  So every
    sync finds the pages dirty again, no round can look converged for lack of
    writes, and later rounds resend cached pages as XBZRLE records, however a
    loaded machine schedules the workload thread.
    """
    lap = 2 * guest.blocks[block].npages

    def wait_for_a_lap(*_: object) -> None:
        wait_until(lambda seen=guest.pages_written: guest.pages_written >= seen + lap)

    manager.add_status_listener(lambda status: status == "active" and wait_for_a_lap())
    manager.add_pass_listener(wait_for_a_lap)


def mapping_field(address: int, field: str) -> str:
    """The value of ``field`` (``Rss``, ``AnonHugePages``, ``VmFlags``...) for the
    mapping of this process that starts at ``address``, from /proc/self/smaps."""
    with open("/proc/self/smaps") as smaps:
        inside = False
        for line in smaps:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                inside = int(head.split("-")[0], 16) == address
            elif inside and head == f"{field}:":
                return line.split(None, 1)[1].strip()
    raise AssertionError(f"no mapping at {address:#x} with {field}")


def load_benchmark(name: str, file: str) -> ModuleType:
    """benchmarks/<file>.py as module <name>: the scripts live outside the
    package (registered before it runs, as dataclasses need; loaded once)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{file}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
