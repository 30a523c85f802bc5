"""The HMP console on a real pseudo-terminal, as a QEMU user types into it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")
PROMPT = r"\(xbzrle\) "
UP = "\x1b[A"


@pytest.fixture
def home(tmp_path):
    return tmp_path


def console(home: Path, *args: str, color: bool = False) -> pexpect.spawn:
    env = dict(os.environ, HOME=str(home), PYTHONPATH=SRC, TERM="xterm", NO_COLOR="1")
    if color:  # rich draws its progress bar
        del env["NO_COLOR"]
    child = pexpect.spawn(sys.executable, ["-m", "xbzrle", "vm", "--monitor", "stdio", *args],
                          env=env, encoding="utf-8", timeout=30, dimensions=(40, 200))
    child.expect("type 'help' for more information")
    child.expect(PROMPT)
    return child


def quit_console(child: pexpect.spawn) -> None:
    child.sendline("quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_up_recalls_the_last_command_and_history_is_kept(home):
    child = console(home, "--ram", "16M", "--workload", "idle")
    child.sendline("info status")
    child.expect("VM status: running")
    child.expect(PROMPT)
    child.send(UP)
    child.expect("info status")  # the line is back, editable
    child.send("\r")
    child.expect("VM status: running")
    child.expect(PROMPT)
    quit_console(child)
    history = (home / ".xbzrle_history").read_text().splitlines()
    assert history[-3:] == ["info status", "info status", "quit"]
    # A new console starts with that history.
    child = console(home, "--ram", "16M", "--workload", "idle")
    child.send(UP + UP)
    child.expect("info status")
    child.send("\r")
    child.expect("VM status: running")
    child.expect(PROMPT)
    quit_console(child)


def test_tab_completes_info_subcommands_commands_and_capabilities(home):
    child = console(home, "--ram", "16M", "--workload", "idle")
    child.send("info mig\t")  # completes the common part and lists the candidates
    child.expect(r"\r\nmigrate\s+migrate_capabilities\s+migrate_parameters\s*\r\n")
    child.expect(PROMPT + "info migrate")
    child.send("_ca\t\r")
    child.expect(r"xbzrle: off")
    child.expect(PROMPT)
    child.send("migrate_set_cap\txb\t")
    child.expect("migrate_set_capability xbzrle ")
    child.send("o\t")
    child.expect(r"off\s+on")
    child.send("n\r")
    child.expect(PROMPT)
    child.sendline("info migrate_capabilities")
    child.expect("xbzrle: on")
    child.expect(PROMPT)
    quit_console(child)


@pytest.fixture
def destination():
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.Popen(
        [sys.executable, "-m", "xbzrle", "vm", "--ram", "64M", "--workload", "idle",
         "--incoming", "tcp:127.0.0.1:0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, env=env)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "incoming migration on " in line:
            yield line.rsplit(" ", 1)[1].strip()
            break
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("color", [False, True], ids=["plain-lines", "rich-bar"])
def test_ctrl_c_cancels_a_foreground_migrate_and_the_guest_runs_on(home, destination, color):
    child = console(home, "--ram", "64M", "--workload", "dense", color=color)
    child.sendline("migrate_set_parameter max-bandwidth 1m")  # a minute at least
    child.expect(PROMPT)
    child.sendline(f"migrate {destination}")
    child.expect(r"round 1:\s+\d+% of 64.0 MiB")  # progress of the first pass
    if color:
        child.expect("━")  # rich's bar, redrawn in place
    child.sendintr()
    child.expect("cancelling the migration")
    child.expect("migration cancelled")
    child.expect(PROMPT)
    child.sendline("info status")
    child.expect("VM status: running")
    child.expect(PROMPT)
    child.sendline("info migrate")
    child.expect("Migration status: cancelled")
    child.expect(PROMPT)
    quit_console(child)


def test_an_async_failure_reprints_the_prompt_and_the_typed_line(home):
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        child = console(home, "--ram", "32M", "--workload", "sparse")
        child.sendline(f"migrate -d tcp:127.0.0.1:{port}")
        child.expect(PROMPT)
        peer, _ = server.accept()
        child.send("info sta")  # typed, not entered, when the migration fails
        child.expect("info sta")
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        peer.close()  # a reset: the source's next write fails
        child.expect("Error: migration failed: ")
        child.expect(PROMPT + "info sta")  # the prompt and the line are back
        child.send("tus\r")
        child.expect("VM status: running")
        child.expect(PROMPT)
        quit_console(child)
