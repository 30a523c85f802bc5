"""Auto-converge on real migrations: real guests with workload threads, real sockets.

A guest that writes faster than the link never converges on its own; with
auto-converge the source slows its vCPUs down until it does, and gives
them their full speed back however the migration ends.
"""

from __future__ import annotations

import socket

import pytest

from monitor_support import wait_until
from xbzrle import Guest
from xbzrle.migration.manager import MigrationManager
from xbzrle.migration.status import MigrationStatus

S = MigrationStatus
RAM = 16 << 20
MiB = 1 << 20
#: 16 MiB/s carries 4096 pages/s; sparse at 12000 pages/s over ~4000 pages
#: keeps nearly all of them dirty: no round ever gets under 300 ms.
LINK = 16 * MiB
RATE = 12_000


def warm_guest(kind: str = "sparse", rate: float = RATE) -> Guest:
    """A guest whose workload has already touched its whole region (no free zero pages)."""
    guest = Guest(ram=RAM)
    guest.stop()
    work = guest.start_workload(kind, rate=rate)
    work.step(8 * work.spec.pages)
    guest.cont()
    return guest


def pair(kind: str = "sparse", rate: float = RATE, xbzrle: bool = False):
    src = warm_guest(kind, rate)
    dst = Guest(ram=RAM)
    dst.stop()
    dst.start_workload(kind)
    src_m, dst_m = MigrationManager(src), MigrationManager(dst)
    for m in (src_m, dst_m):
        m.set_capability("xbzrle", xbzrle)
    src_m.set_parameters(max_bandwidth=LINK, downtime_limit=300, xbzrle_cache_size=8 * MiB)
    incoming = dst_m.incoming("tcp:127.0.0.1:0", resume=False)
    return src, dst, src_m, dst_m, f"tcp:127.0.0.1:{incoming.port}"


def test_sparse_that_never_converges_completes_with_auto_converge():
    src, dst, src_m, dst_m, uri = pair()
    try:
        # Without auto-converge: round after round, the expected downtime stays over the limit.
        mig = src_m.migrate(uri)
        info = wait_until(lambda: (q := mig.query())["ram"]["dirty-sync-count"] >= 5 and q,
                          timeout=120)
        assert info["status"] == "active" and info["expected-downtime"] > 300
        assert "cpu-throttle-percentage" not in info  # only reported with auto-converge
        src_m.cancel()
        assert mig.wait(30) == S.CANCELLED
        assert dst_m.wait(30) == S.FAILED

        # The same guest with auto-converge (big steps to keep the test short).
        incoming = dst_m.incoming("tcp:127.0.0.1:0", resume=False)
        src_m.set_capability("auto-converge", True)
        src_m.set_parameters(cpu_throttle_initial=60, cpu_throttle_increment=20)
        mig = src_m.migrate(f"tcp:127.0.0.1:{incoming.port}")
        assert mig.wait(120) == S.COMPLETED, mig.error
        assert dst_m.wait(30) == S.COMPLETED, dst_m.current.error
        assert src.digest() == dst.digest()
        info = mig.query()
        assert mig.stats.peak_throttle >= 60
        assert info["cpu-throttle-percentage"] == 0 and src.throttle == 0  # lifted
        assert all(w.throttle == 0 for w in src.workloads)
        # The guest paid for it: less work than unthrottled, but some.
        assert 0 < info["x-guest-work-percent"] < 95
        rounds = mig.stats.history_dicts()
        throttled = [r for r in rounds if r["cpu-throttle"] > 0 and not r["final"]]
        assert throttled and all(r["guest-work-percent"] < 70 for r in throttled)
    finally:
        src.close()
        dst.close()


def _throttled(mig) -> bool:
    return mig.query().get("cpu-throttle-percentage", 0) > 0


@pytest.mark.parametrize("ending", ["cancel", "peer-vanishes"])
def test_throttle_is_lifted_when_the_migration_does_not_complete(ending):
    src = warm_guest()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    conn = None
    try:
        m = MigrationManager(src)
        m.set_capability("auto-converge", True)
        m.set_parameters(max_bandwidth=LINK, throttle_trigger_threshold=1,
                         cpu_throttle_initial=50)
        mig = m.migrate(f"tcp:127.0.0.1:{server.getsockname()[1]}")
        conn, _ = server.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)

        def drain_until_throttled() -> bool:
            conn.settimeout(0.05)
            try:
                conn.recv(1 << 20)
            except TimeoutError:
                pass
            return _throttled(mig)

        wait_until(drain_until_throttled, timeout=120, interval=0)
        assert src.throttle == 50 and src.running
        if ending == "cancel":
            m.cancel()
            assert mig.wait(30) == S.CANCELLED
        else:
            conn.close()
            conn = None
            assert mig.wait(30) == S.FAILED
        assert src.throttle == 0 and all(w.throttle == 0 for w in src.workloads)
        assert mig.query()["cpu-throttle-percentage"] == 0
        before = src.pages_written
        wait_until(lambda: src.pages_written > before + 1000)  # full speed again, still running
    finally:
        if conn is not None:
            conn.close()
        server.close()
        src.close()


def test_throttle_parameters_change_live():
    """QEMU reads the ladder's parameters at each step: a change reaches the running migration."""
    src = warm_guest(rate=RATE * 2)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        m = MigrationManager(src)
        m.set_capability("auto-converge", True)
        m.set_parameters(max_bandwidth=LINK, throttle_trigger_threshold=1)
        mig = m.migrate(f"tcp:127.0.0.1:{server.getsockname()[1]}")
        conn, _ = server.accept()

        def drain(pct: int):
            def check() -> bool:
                conn.settimeout(0.05)
                try:
                    conn.recv(1 << 20)
                except TimeoutError:
                    pass
                return mig.query().get("cpu-throttle-percentage") == pct
            return check

        wait_until(drain(20), timeout=120, interval=0)  # cpu-throttle-initial's default
        m.set_parameters(cpu_throttle_increment=3, max_cpu_throttle=23)
        wait_until(drain(23), timeout=120, interval=0)  # 20 + 3, not 20 + 10
        assert m.settings.parameters.max_cpu_throttle == 23
        m.cancel()
        assert mig.wait(30) == S.CANCELLED
        conn.close()
    finally:
        server.close()
        src.close()
