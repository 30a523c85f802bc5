"""An incoming ``exec:`` command that dies early is reported with its exit status.

The destination of ``-incoming exec:CMD`` reads the stream from the command's
stdout.  When the command fails, all the pipe shows is an end of file in the
middle of the stream; the destination then reaps the command and names why it
ended (status, last stderr line), or kills one that closed its output but does
not exit (``channels.EXEC_EXIT_WAIT``).  Once the whole stream is read, the
stream has decided: a failing status is only logged and a command still
running is killed at once (QEMU's behaviour).  Real commands, a real stream
from a real source; no timing: the commands that must not exit block on a
FIFO nobody opens.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import wait_until
from xbzrle import Guest
from xbzrle.migration.manager import MigrationManager
from xbzrle.migration.status import MigrationStatus as S
from xbzrle.qemu import IncompleteStreamError, receive
from xbzrle.transport import channels

RAM = 8 << 20
PAGE = 4096
CUT = 5000  # past the header and the configuration, inside the first pages
SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> Path:
    """A whole migration stream of an 8 MiB guest, as a source writes it to ``file:``."""
    path = tmp_path_factory.mktemp("incoming-exec") / "stream"
    with Guest(ram=RAM) as guest:
        with memoryview(guest.blocks["pc.ram"]) as ram:
            ram[:1 << 20] = os.urandom(1 << 20)
        manager = MigrationManager(guest)
        mig = manager.migrate(f"file:{path}")
        assert mig.wait(60) == S.COMPLETED, mig.error
    assert path.stat().st_size > CUT
    return path


def incoming(uri: str) -> tuple[str | None, bool]:
    """Receive from ``uri`` into a paused guest: the migration's error, and whether
    the guest runs afterwards."""
    with Guest(ram=RAM) as guest:
        guest.stop()
        manager = MigrationManager(guest)
        mig = manager.incoming(uri)
        assert mig.wait(60) == S.FAILED
        return mig.error, guest.running



def gone(pid: int) -> bool:
    """No such process any more, or only its exit status waiting to be collected."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def truncated(why: str) -> str:
    return f"the migration stream ended at offset {CUT} before its EOF record: {why}"


def test_the_whole_stream_through_exec_is_loaded(stream):
    """The baseline the failures below differ from: ``exec:cat`` of a whole stream."""
    with Guest(ram=RAM) as guest:
        guest.stop()
        mig = MigrationManager(guest).incoming(f"exec:cat {stream}")
        assert mig.wait(60) == S.COMPLETED, mig.error
        assert guest.running


def test_a_command_that_fails_mid_stream_is_named_with_its_status_and_stderr(stream):
    error, running = incoming(f"exec:head -c {CUT} {stream}; "
                              "echo 'lost the backup host' >&2; exit 3")
    assert error == truncated("exec: migration command exited with status 3: "
                              "lost the backup host")
    assert not running  # a half-loaded guest never runs


def test_a_command_that_fails_before_writing_anything_is_named():
    error, _ = incoming("exec:cat /nonexistent/stream")
    prefix = ("the migration stream ended at offset 0 before its EOF record: "
              "exec: migration command exited with status 1: cat: ")
    assert error is not None and error.startswith(prefix), error
    assert "/nonexistent/stream" in error  # cat's own words (in the locale's language)


def test_a_command_that_succeeds_with_part_of_a_stream_is_a_truncated_stream(stream):
    error, running = incoming(f"exec:head -c {CUT} {stream}")
    assert error == truncated("exec: migration command exited with status 0 without "
                              "writing the whole stream")
    assert not running


def test_a_command_that_closes_its_output_and_never_exits_is_killed_and_said_so(
        stream, tmp_path, monkeypatch):
    monkeypatch.setattr(channels, "EXEC_EXIT_WAIT", 0.5)
    never = tmp_path / "never"
    os.mkfifo(never)  # no writer ever: the read blocks until the kill
    error, running = incoming(f"exec:echo 'still resolving backup host' >&2; "
                              f"head -c {CUT} {stream}; exec 1>&-; read go < {never}")
    assert error == truncated("exec: migration command killed by signal 9 (it closed its "
                              "output and was still running after 0.5 s): still resolving "
                              "backup host")
    assert not running


def test_cancelling_an_incoming_command_kills_what_it_started(tmp_path):
    """The shell of ``exec:`` forks the command's programs; they hold the pipe, so
    killing the shell alone would leave the read blocked until they end."""
    pidfile = tmp_path / "child"
    with Guest(ram=RAM) as guest:
        guest.stop()
        manager = MigrationManager(guest)
        mig = manager.incoming(f"exec:sleep 1000 & echo $! > {pidfile}.tmp; "
                               f"mv {pidfile}.tmp {pidfile}; wait")
        wait_until(lambda: pidfile.exists() and mig.status == S.ACTIVE)
        child = int(pidfile.read_text())
        assert not gone(child)
        manager.cancel()
        assert mig.wait(60) == S.CANCELLED
        wait_until(lambda: gone(child))
        assert not guest.running


def test_a_short_file_is_a_truncated_stream(stream, tmp_path):
    short = tmp_path / "short"
    short.write_bytes(stream.read_bytes()[:CUT])
    error, _ = incoming(f"file:{short}")
    assert error == truncated("the file holds an incomplete stream")


def test_xbzrle_vm_reports_a_failed_incoming_command_in_one_line(stream):
    """What a user of ``xbzrle vm --incoming exec:...`` sees: one line, no traceback."""
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(
        [sys.executable, "-m", "xbzrle", "vm", "--ram", "8M", "-S", "--exit-after-migration",
         "--incoming", f"exec:head -c {CUT} {stream}; echo 'lost the backup host' >&2; "
                       "exit 3"],
        capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert r.returncode == 1, r.stdout + r.stderr
    expected = ("migration failed: " + truncated("exec: migration command exited with "
                                                 "status 3: lost the backup host"))
    assert expected in r.stdout.splitlines(), r.stdout
    assert "Traceback" not in r.stdout + r.stderr


def test_a_command_that_fails_after_the_whole_stream_only_gets_a_log_line(stream, caplog):
    """The stream (its EOF record, the digest) decides the migration, as in QEMU,
    which ignores the command's status: the guest runs, the status is logged."""
    with Guest(ram=RAM) as guest:
        guest.stop()
        mig = MigrationManager(guest).incoming(
            f"exec:cat {stream}; echo 'could not delete the copy' >&2; exit 3")
        assert mig.wait(60) == S.COMPLETED, mig.error
        assert guest.running
    assert ("exec: migration command exited with status 3: could not delete the copy "
            "after the whole stream was read (ignored)") in caplog.messages


def test_a_command_still_running_after_the_stream_is_killed_at_once(stream, tmp_path,
                                                                    monkeypatch):
    """The guest's resume waits for the channel's close: a command that lingers
    after writing the whole stream is killed with what it started, not waited for."""
    monkeypatch.setattr(channels, "EXEC_CLOSE_WAIT", 3600.0)
    monkeypatch.setattr(channels, "EXEC_EXIT_WAIT", 3600.0)
    never = tmp_path / "never"
    os.mkfifo(never)  # no writer ever: the read blocks until the kill
    pidfile = tmp_path / "child"
    with Guest(ram=RAM) as guest:
        guest.stop()
        mig = MigrationManager(guest).incoming(
            f"exec:sh -c 'echo $$ > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; exec 1>&-; "
            f"read go < {never}' & until [ -e {pidfile} ]; do sleep 0.01; done; "
            f"cat {stream}; wait")
        assert mig.wait(60) == S.COMPLETED, mig.error
        assert guest.running
    wait_until(lambda: gone(int(pidfile.read_text())))


def test_receive_names_a_command_that_failed_mid_stream(stream, tmp_path):
    """``xbzrle receive`` (extract from a live migration) reads the same channel:
    what it recovered, and why the input ended."""
    with pytest.raises(IncompleteStreamError) as info:
        receive(f"exec:head -c {CUT} {stream}; echo 'lost the backup host' >&2; exit 3",
                tmp_path / "out")
    assert str(info.value).startswith(
        f"the migration stream ended at offset {CUT} before its RAM was complete: "
        "exec: migration command exited with status 3: lost the backup host; recovered ")
