"""QMP against real ``xbzrle vm`` processes, driven by ``qemu.qmp`` unchanged:
the seed's usage scenario on two processes, events, errors, ``-incoming defer``."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from monitor_support import VmProcess
from xbzrle import __version__

qmp = pytest.importorskip("qemu.qmp")

RAM = "32M"
MiB = 1 << 20


@pytest.fixture
def spawn(tmp_path):
    procs: list[VmProcess] = []

    def start(name: str, *args: str) -> tuple[VmProcess, str]:
        sock = str(tmp_path / f"{name}.qmp")
        vm = VmProcess(tmp_path, name, "--qmp", f"unix:{sock},server,nowait", *args)
        procs.append(vm)
        vm.wait_stderr(r"qmp on unix:")
        return vm, sock

    yield start
    for vm in procs:
        vm.kill()


async def connect(name: str, sock: str) -> qmp.QMPClient:
    client = qmp.QMPClient(name)
    await client.connect(sock)
    return client


async def wait_status(client: qmp.QMPClient, *final: str, timeout: float = 60) -> dict:
    async def poll() -> dict:
        while True:
            info = await client.execute("query-migrate")
            if info.get("status") in final:
                return info
            await asyncio.sleep(0.1)

    return await asyncio.wait_for(poll(), timeout)


def incoming_port(info: dict) -> int:
    return int(info["socket-address"][0]["port"])


def test_seed_usage_scenario_over_qmp(spawn, tmp_path):
    dst_vm, dst_sock = spawn("dst", "--ram", RAM, "--workload", "loadgen", "-S",
                             "--incoming", "tcp:127.0.0.1:0")
    src_vm, src_sock = spawn("src", "--ram", RAM, "--workload", "loadgen")

    async def scenario() -> None:
        src = await connect("src", src_sock)
        dst = await connect("dst", dst_sock)
        src_events, dst_events = qmp.EventListener(), qmp.EventListener()
        src.register_listener(src_events)
        dst.register_listener(dst_events)
        greeting = src.greeting._raw
        assert greeting == {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7},
                                                "package": f"xbzrle {__version__}"},
                                    "capabilities": ["oob"]}}

        # Both sides support xbzrle; both enable it (and QMP events).
        for side in (src, dst):
            caps = await side.execute("query-migrate-capabilities")
            assert {"capability": "xbzrle", "state": False} in caps
            await side.execute("migrate-set-capabilities", {"capabilities": [
                {"capability": "xbzrle", "state": True}, {"capability": "events", "state": True}]})
            caps = await side.execute("query-migrate-capabilities")
            assert {"capability": "xbzrle", "state": True} in caps
        await src.execute("migrate-set-cache-size", {"value": 16 * MiB + 12345})  # rounds down
        assert await src.execute("query-migrate-cache-size") == 16 * MiB
        await src.execute("migrate-set-parameters", {"max-bandwidth": 8 * MiB})
        params = await src.execute("query-migrate-parameters")
        assert params["xbzrle-cache-size"] == 16 * MiB and params["max-bandwidth"] == 8 * MiB

        port = incoming_port(await dst.execute("query-migrate"))
        assert await dst.execute("query-status") == {"status": "inmigrate", "singlestep": False,
                                                     "running": False}
        await src.execute("migrate", {"uri": f"tcp:127.0.0.1:{port}"})
        with pytest.raises(qmp.ExecuteError, match="There's a migration process in progress"):
            await src.execute("migrate-set-capabilities", {"capabilities": [
                {"capability": "xbzrle", "state": False}]})
        info = await wait_status(src, "completed", "failed", "cancelled")
        assert info["status"] == "completed", info
        cache = info["xbzrle-cache"]
        assert cache["cache-size"] == 16 * MiB
        assert cache["pages"] > 0 and cache["bytes"] > 0
        assert 0 <= cache["cache-miss-rate"] <= 1 and cache["overflow"] >= 0
        # ours: microseconds inside the encoder, which ran on every cache hit
        assert isinstance(cache["x-encode-time"], int) and cache["x-encode-time"] > 0
        assert info["ram"]["dirty-sync-count"] >= 2
        assert (await src.execute("query-status"))["status"] == "postmigrate"
        dst_info = await wait_status(dst, "completed", "failed")
        assert dst_info["status"] == "completed", dst_info
        assert (await dst.execute("query-status"))["status"] == "paused"  # -S

        # Both guests are stopped now: their RAM must be identical.
        for side, name in ((src, "src"), (dst, "dst")):
            await side.execute("pmemsave", {"val": 0, "size": 32 * MiB,
                                            "filename": str(tmp_path / f"{name}.ram")})
        assert (tmp_path / "src.ram").read_bytes() == (tmp_path / "dst.ram").read_bytes()

        await dst.execute("cont")
        assert (await dst.execute("query-status"))["running"] is True

        got = [(e["event"], e.get("data")) for e in src_events.clear()]
        statuses = [d["status"] for n, d in got if n == "MIGRATION"]
        assert statuses == ["setup", "active", "device", "completed"]
        passes = [d["pass"] for n, d in got if n == "MIGRATION_PASS"]
        assert passes and passes == sorted(passes) and passes[0] == 1
        assert ("STOP", None) in got
        assert got.index(("STOP", None)) < got.index(("MIGRATION", {"status": "device"}))
        dst_got = [(e["event"], e.get("data")) for e in dst_events.clear()]
        assert ("MIGRATION", {"status": "completed"}) in dst_got
        assert dst_got[-1] == ("RESUME", None)  # from our 'cont', not before it (-S)
        for event in src_events.history:
            assert set(event["timestamp"]) == {"seconds", "microseconds"}

        for side in (src, dst):
            await side.execute("quit")
            with contextlib.suppress(EOFError):  # the VM hangs up, as QEMU does
                await side.disconnect()

    asyncio.run(asyncio.wait_for(scenario(), 120))
    assert src_vm.proc.wait(20) == 0
    assert dst_vm.proc.wait(20) == 0


def test_deferred_incoming_without_xbzrle_fails_on_both_sides(spawn):
    dst_vm, dst_sock = spawn("dst", "--ram", RAM, "--workload", "loadgen", "--incoming", "defer")
    src_vm, src_sock = spawn("src", "--ram", RAM, "--workload", "loadgen")

    async def scenario() -> None:
        src = await connect("src", src_sock)
        dst = await connect("dst", dst_sock)
        src_events = qmp.EventListener()
        src.register_listener(src_events)
        assert await dst.execute("query-migrate") == {}
        await dst.execute("migrate-incoming", {"uri": "tcp:127.0.0.1:0"})
        with pytest.raises(qmp.ExecuteError, match="already been started"):
            await dst.execute("migrate-incoming", {"uri": "tcp:127.0.0.1:0"})
        port = incoming_port(await dst.execute("query-migrate"))
        await src.execute("migrate-set-capabilities", {"capabilities": [
            {"capability": "xbzrle", "state": True}]})
        await src.execute("migrate-set-parameters", {"max-bandwidth": 8 * MiB})
        await src.execute("migrate", {"uri": f"tcp:127.0.0.1:{port}"})
        src_info = await wait_status(src, "completed", "failed")
        dst_info = await wait_status(dst, "completed", "failed")
        assert src_info["status"] == dst_info["status"] == "failed"
        assert "xbzrle" in dst_info["error-desc"].lower()
        assert "xbzrle" in src_info["error-desc"].lower()
        assert "refused" in src_info["error-desc"]
        assert (await src.execute("query-status"))["status"] == "running"
        text = await src.execute("human-monitor-command",
                                 {"command-line": "info migrate"})
        assert "Migration status: failed" in text
        names = {e["event"] for e in src_events.history}
        assert not names & {"MIGRATION", "MIGRATION_PASS"}  # 'events' capability is off
        for side in (src, dst):
            await side.disconnect()

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_several_monitors_at_once_see_the_same_vm(spawn, tmp_path):
    hmp_sock = str(tmp_path / "hmp.sock")
    vm, sock = spawn("vm", "--ram", "8M", "--qmp", "tcp:127.0.0.1:0",
                     "--monitor", f"unix:{hmp_sock}")
    port = int(vm.wait_stderr(r"qmp on tcp:127\.0\.0\.1:(\d+)").group(1))
    vm.wait_stderr("monitor on unix:")

    async def scenario() -> None:
        a = await connect("a", sock)
        b = await connect("b", ("127.0.0.1", port))
        listener = qmp.EventListener()
        b.register_listener(listener)
        await a.execute("stop")
        assert (await b.execute("query-status"))["status"] == "paused"
        event = await asyncio.wait_for(listener.get(), 10)
        assert event["event"] == "STOP"
        reader, writer = await asyncio.open_unix_connection(hmp_sock)
        await reader.readuntil(b"(xbzrle) ")
        writer.write(b"info status\n")
        assert await reader.readuntil(b"(xbzrle) ") == b"VM status: paused\n(xbzrle) "
        writer.write(b"cont\n")
        await reader.readuntil(b"(xbzrle) ")
        event = await asyncio.wait_for(listener.get(), 10)
        assert event["event"] == "RESUME"
        writer.close()
        await a.disconnect()
        await b.disconnect()

    asyncio.run(asyncio.wait_for(scenario(), 60))
