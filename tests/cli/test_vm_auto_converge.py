"""Auto-converge through both monitors of real ``xbzrle vm`` processes:
QMP driven by ``qemu.qmp`` unchanged, HMP typed into a console."""

from __future__ import annotations

import asyncio
import contextlib
import re

import pytest

from monitor_support import VmProcess, wait_until

qmp = pytest.importorskip("qemu.qmp")

RAM = "16M"
MiB = 1 << 20
DEFAULTS = {"throttle-trigger-threshold": 50, "cpu-throttle-initial": 20,
            "cpu-throttle-increment": 10, "cpu-throttle-tailslow": False,
            "max-cpu-throttle": 99, "x-throttle-raw-bytes": False, "x-overflow-backoff": True}


@pytest.fixture
def spawn(tmp_path):
    procs: list[VmProcess] = []

    def start(name: str, *args: str, console: bool = False) -> tuple[VmProcess, str]:
        sock = str(tmp_path / f"{name}.qmp")
        if console:
            vm = VmProcess(tmp_path, name, "--monitor", "stdio", *args, stdin_pipe=True)
            procs.append(vm)
            vm.read_until_prompt()
            return vm, ""
        vm = VmProcess(tmp_path, name, "--qmp", f"unix:{sock},server,nowait", *args)
        procs.append(vm)
        vm.wait_stderr(r"qmp on unix:")
        return vm, sock

    yield start
    for vm in procs:
        vm.kill()


async def poll_migrate(client, predicate, timeout: float = 60) -> dict:
    async def poll() -> dict:
        while True:
            info = await client.execute("query-migrate")
            if predicate(info):
                return info
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), timeout)


def test_qmp_parameters_capability_and_query_shapes(spawn):
    _, dst_sock = spawn("dst", "--ram", RAM, "--workload", "sparse", "-S",
                        "--incoming", "tcp:127.0.0.1:0")
    _, src_sock = spawn("src", "--ram", RAM, "--workload", "sparse", "--rate", "20000")

    async def scenario() -> None:
        src, dst = qmp.QMPClient("src"), qmp.QMPClient("dst")
        await src.connect(src_sock)
        await dst.connect(dst_sock)
        params = await src.execute("query-migrate-parameters")
        assert {k: params[k] for k in DEFAULTS} == DEFAULTS
        caps = await src.execute("query-migrate-capabilities")
        assert {"capability": "auto-converge", "state": False} in caps

        for name, bad, text in [
            ("throttle-trigger-threshold", 0, "'throttle_trigger_threshold' expects an integer "
             "in the range of 1 to 100"),
            ("cpu-throttle-initial", 100, "'cpu_throttle_initial' expects an integer in the "
             "range of 1 to 99"),
            ("cpu-throttle-increment", 0, "'cpu_throttle_increment' expects an integer in the "
             "range of 1 to 99"),
            ("max-cpu-throttle", 10, "'max_cpu_throttle' expects an integer in the range of "
             "cpu_throttle_initial to 99"),
        ]:
            with pytest.raises(qmp.ExecuteError) as info:
                await src.execute("migrate-set-parameters", {name: bad})
            assert str(info.value) == f"Parameter {text}"
        with pytest.raises(qmp.ExecuteError, match="Invalid parameter type for "
                           "'cpu-throttle-tailslow', expected: bool"):
            await src.execute("migrate-set-parameters", {"cpu-throttle-tailslow": 1})
        assert {k: (await src.execute("query-migrate-parameters"))[k] for k in DEFAULTS} \
            == DEFAULTS  # nothing refused was kept

        await src.execute("migrate-set-capabilities", {"capabilities": [
            {"capability": "auto-converge", "state": True}]})
        await src.execute("migrate-set-parameters", {
            "throttle-trigger-threshold": 1, "cpu-throttle-initial": 40,
            "cpu-throttle-tailslow": True, "max-bandwidth": 2 * MiB})
        port = (await dst.execute("query-migrate"))["socket-address"][0]["port"]
        await src.execute("migrate", {"uri": f"tcp:127.0.0.1:{port}"})
        info = await poll_migrate(src, lambda i: i.get("status") == "active")
        assert isinstance(info["cpu-throttle-percentage"], int)
        # Live: a parameter set during the migration is accepted and shown.
        await src.execute("migrate-set-parameters", {"max-cpu-throttle": 60})
        assert (await src.execute("query-migrate-parameters"))["max-cpu-throttle"] == 60
        info = await poll_migrate(src, lambda i: i.get("cpu-throttle-percentage", 0) >= 40,
                                  timeout=120)
        assert info["cpu-throttle-percentage"] <= 60
        assert 0 <= info["x-guest-work-percent"]
        await src.execute("migrate_cancel")
        info = await poll_migrate(src, lambda i: i.get("status") == "cancelled")
        assert info["cpu-throttle-percentage"] == 0
        for side in (src, dst):
            await side.execute("quit")
            with contextlib.suppress(EOFError):
                await side.disconnect()

    asyncio.run(asyncio.wait_for(scenario(), 180))


def test_hmp_parameters_and_info_migrate(spawn):
    dst, _ = spawn("dst", "--ram", RAM, "--workload", "sparse", "-S",
                   "--incoming", "tcp:127.0.0.1:0", console=True)
    src, _ = spawn("src", "--ram", RAM, "--workload", "sparse", "--rate", "20000", console=True)
    shown = src.type("info migrate_parameters")
    for line in ["throttle-trigger-threshold: 50", "cpu-throttle-initial: 20",
                 "cpu-throttle-increment: 10", "cpu-throttle-tailslow: off",
                 "max-cpu-throttle: 99", "x-throttle-raw-bytes: off",
                 "x-overflow-backoff: on"]:
        assert line in shown.splitlines()
    assert src.type("migrate_set_parameter cpu-throttle-initial 0") == (
        "Error: Parameter 'cpu_throttle_initial' expects an integer in the range of 1 to 99\n")
    assert src.type("migrate_set_parameter cpu-throttle-tailslow maybe").startswith(
        "Error: Expected 'on' or 'off'")
    assert src.type("migrate_set_parameter max-cpu-throttle many").startswith("Error: ")
    assert src.type("migrate_set_parameter cpu-throttle-tailslow on") == ""
    assert src.type("migrate_set_parameter throttle-trigger-threshold 1") == ""
    assert src.type("migrate_set_parameter cpu-throttle-initial 30") == ""
    shown = src.type("info migrate_parameters").splitlines()
    assert "cpu-throttle-tailslow: on" in shown and "cpu-throttle-initial: 30" in shown
    assert src.type("migrate_set_capability auto-converge on") == ""
    assert "auto-converge: on" in src.type("info migrate_capabilities").splitlines()
    assert src.type("migrate_set_speed 2m") == ""
    port = wait_until(lambda: re.search(
        r"tcp:127\.0\.0\.1:(\d+)", dst.type("info migrate"))).group(1)
    assert src.type(f"migrate -d tcp:127.0.0.1:{port}") == ""
    report = wait_until(lambda: (r := src.type("info migrate"))
                        and "cpu throttle percentage: 30" in r and r, timeout=120)
    assert "Migration status: active" in report
    assert "guest work: " in report
    assert src.type("migrate_set_parameter cpu-throttle-increment 5") == ""  # live
    assert src.type("migrate_cancel") == ""
    report = wait_until(lambda: (r := src.type("info migrate"))
                        and "Migration status: cancelled" in r and r, timeout=60)
    assert "cpu throttle percentage: 0" in report
