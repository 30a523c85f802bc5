"""The human monitor through a real console: ``xbzrle vm --monitor stdio``
with pipes, typing the seed's commands and reading what they print."""

from __future__ import annotations

import re

import pytest

from monitor_support import VmProcess, wait_until

RAM = "32M"


@pytest.fixture
def spawn(tmp_path):
    procs: list[VmProcess] = []

    def start(name: str, *args: str) -> VmProcess:
        vm = VmProcess(tmp_path, name, "--monitor", "stdio", *args, stdin_pipe=True)
        procs.append(vm)
        banner = vm.read_until_prompt()
        assert "type 'help' for more information" in banner
        return vm

    yield start
    for vm in procs:
        vm.kill()


def incoming_port(dst: VmProcess) -> int:
    """The port the destination chose, read from ``info migrate`` as an operator would."""
    out = dst.type("info migrate")
    return int(re.search(r"tcp:127\.0\.0\.1:(\d+)", out).group(1))


def field(report: str, name: str) -> str:
    return re.search(rf"^{re.escape(name)}: (.*)$", report, re.M).group(1)


def test_seed_usage_scenario_typed_into_two_consoles(spawn, tmp_path):
    dst = spawn("dst", "--ram", RAM, "--workload", "loadgen", "-S",
                "--incoming", "tcp:127.0.0.1:0")
    src = spawn("src", "--ram", RAM, "--workload", "loadgen")

    # On the incoming side, after it is already listening:
    assert dst.type("migrate_set_capability xbzrle on") == ""
    assert dst.type("info migrate_capabilities").splitlines()[0] == "xbzrle: on"
    assert dst.type("info status") == "VM status: paused (inmigrate)\n"
    port = incoming_port(dst)

    # On the outgoing side:
    assert src.type("migrate_set_capability xbzrle on") == ""
    assert src.type("migrate_set_cache_size 16m") == ""
    assert src.type("info migrate_cache_size") == "xbzrle cache size: 16384 kbytes\n"
    assert src.type("migrate_set_speed 8m") == ""  # a slow first round: xbzrle gets work
    assert src.type(f"migrate -d tcp:127.0.0.1:{port}") == ""
    report = wait_until(lambda: (r := src.type("info migrate"))
                        and "Migration status: completed" in r and r, timeout=60)

    assert report.splitlines()[0] == "globals:"  # QEMU 7.2's layout
    assert field(report, "cache size") == f"{16 << 20} bytes"
    assert int(field(report, "xbzrle pages").split()[0]) > 0
    assert int(field(report, "xbzrle transferred").split()[0]) > 0
    for name in ("xbzrle cache miss", "xbzrle cache miss rate", "xbzrle encoding rate",
                 "xbzrle overflow"):
        field(report, name)
    assert re.fullmatch(r"[1-9]\d* us", field(report, "xbzrle encode time"))  # ours
    assert src.type("info status") == "VM status: paused (postmigrate)\n"

    # -S: the destination holds the migrated RAM, paused; both dumps are equal.
    wait_until(lambda: "completed" in dst.type("info migrate"))
    assert dst.type("info status") == "VM status: paused\n"
    src_dump, dst_dump = tmp_path / "src.ram", tmp_path / "dst.ram"
    size = 32 << 20
    assert src.type(f"pmemsave 0 {size} {src_dump}") == ""
    assert dst.type(f"pmemsave 0x0 32M {dst_dump}") == ""
    assert src_dump.stat().st_size == size
    assert src_dump.read_bytes() == dst_dump.read_bytes()

    assert dst.type("cont") == ""
    assert dst.type("info status") == "VM status: running\n"
    dst.proc.stdin.write(b"quit\n")
    dst.proc.stdin.flush()
    assert dst.proc.wait(20) == 0


def test_foreground_migrate_shows_progress_until_done(spawn):
    dst = spawn("dst", "--ram", RAM, "--workload", "loadgen", "--incoming", "tcp:127.0.0.1:0")
    src = spawn("src", "--ram", RAM, "--workload", "loadgen")
    port = incoming_port(dst)
    for console in (src, dst):
        console.type("migrate_set_capability xbzrle on")
    src.type("migrate_set_parameter max-bandwidth 8")  # MB/s, as QEMU reads a bare number
    out = src.type(f"migrate tcp:127.0.0.1:{port}", timeout=60)
    lines = out.splitlines()
    assert lines[-1].startswith("migration completed: total time ")
    assert any(line.startswith("migration active: ") for line in lines[:-1])
    wait_until(lambda: dst.type("info status") == "VM status: running\n")


def test_destination_without_xbzrle_fails_clearly_on_both_sides(spawn):
    dst = spawn("dst", "--ram", RAM, "--workload", "loadgen", "--incoming", "tcp:127.0.0.1:0")
    src = spawn("src", "--ram", RAM, "--workload", "loadgen")
    port = incoming_port(dst)
    src.type("migrate_set_capability xbzrle on")
    src.type("migrate_set_speed 8m")
    out = src.type(f"migrate tcp:127.0.0.1:{port}", timeout=60)
    assert out.splitlines()[-1].startswith("Error: migration failed: ")
    assert "xbzrle" in out.splitlines()[-1].lower()
    src_report = src.type("info migrate")
    assert "Migration status: failed" in src_report
    dst_report = wait_until(lambda: (r := dst.type("info migrate")) and "failed" in r and r)
    status = field(dst_report, "Migration status")  # QEMU 7.2: "failed (reason)"
    assert status.startswith("failed (") and "migrate_set_capability xbzrle on" in status
    assert "transferred ram" not in dst_report
    assert src.type("info status") == "VM status: running\n"  # the source guest runs on


def test_help_lists_every_command_once_with_one_line_each(spawn):
    vm = spawn("vm", "--ram", "4M")
    lines = vm.type("help").splitlines()
    names = [line.split()[0] for line in lines]
    for command in ("info", "migrate_set_capability", "migrate_set_cache_size",
                    "migrate_set_parameter", "migrate_set_speed", "migrate_set_downtime",
                    "migrate", "migrate_incoming", "migrate_cancel", "stop", "cont", "quit",
                    "pmemsave", "help"):
        assert names.count(command) == 1
    assert all(" -- " in line for line in lines)
    info = vm.type("info")
    for sub in ("status", "migrate", "migrate_capabilities", "migrate_parameters",
                "migrate_cache_size"):
        assert f"info {sub} -- " in info


def test_start_stopped_then_cont(spawn):
    vm = spawn("vm", "--ram", "4M", "--workload", "idle", "-S")
    assert vm.type("info status") == "VM status: paused (prelaunch)\n"  # QEMU's words
    assert vm.type("cont") == ""
    assert vm.type("info status") == "VM status: running\n"
    assert vm.type("stop") == ""
    assert vm.type("info status") == "VM status: paused\n"


def test_errors_are_printed_and_the_console_goes_on(spawn):
    vm = spawn("vm", "--ram", "8M")
    assert vm.type("frobnicate") == "unknown command: 'frobnicate'\n"
    assert vm.type("migrate_set_capability xbzrle maybe").startswith("Error: Expected 'on'")
    assert vm.type("migrate_set_capability warp on").startswith("Error: ")
    assert "power of two" in vm.type("migrate_set_parameter xbzrle-cache-size 3m")
    assert "no larger than guest RAM" in vm.type("migrate_set_cache_size 1g")
    # The seed's command rounds down, and says so.
    assert vm.type("migrate_set_cache_size 3m") == (
        "cache size set to 2 MiB (rounded down to a power of two)\n")
    assert vm.type("info migrate_cache_size") == "xbzrle cache size: 2048 kbytes\n"
    assert vm.type("migrate_set_parameter downtime-limit 50") == ""
    assert "downtime-limit: 50 ms" in vm.type("info migrate_parameters")
    assert vm.type("migrate_incoming tcp:127.0.0.1:0").startswith("Error: ")
    assert vm.type("info status") == "VM status: running\n"


def test_help_marks_the_seeds_commands_as_legacy_and_lists_them_last(spawn):
    vm = spawn("vm", "--ram", "4M")
    lines = vm.type("help").splitlines()
    legacy = [line.split()[0] for line in lines if line.endswith("(legacy, QEMU < 6.0)")]
    assert legacy == ["migrate_set_cache_size", "migrate_set_downtime", "migrate_set_speed"]
    assert [line.split()[0] for line in lines[-3:]] == legacy
    info = vm.type("info").splitlines()
    assert [ln for ln in info if "legacy" in ln] == [
        "info migrate_cache_size -- show current migration xbzrle cache size "
        "(legacy, QEMU < 6.0)"]
    # ... and they still work.
    assert vm.type("migrate_set_speed 8m") == ""
    assert "max-bandwidth: 8388608 bytes/second" in vm.type("info migrate_parameters")
