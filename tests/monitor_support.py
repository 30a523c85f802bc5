"""Helpers for the tests that start real ``xbzrle vm`` processes."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import xbzrle
from support import wait_until  # noqa: F401  (re-exported for the monitor tests)

SRC = str(Path(xbzrle.__file__).resolve().parent.parent)
PROMPT = b"(xbzrle) "


class VmProcess:
    """One ``xbzrle vm`` child; stderr goes to a file we can poll."""

    def __init__(self, tmp_path: Path, name: str, *args: str, stdin_pipe: bool = False) -> None:
        self.name = name
        self.err_path = tmp_path / f"{name}.err"
        env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xbzrle", "vm", *args],
            stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=self.err_path.open("wb"), env=env)

    def stderr_text(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_stderr(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.stderr_text())
            if match:
                return match
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"{self.name}: no {pattern!r} on stderr:\n{self.stderr_text()}")

    # -- a console on stdio ------------------------------------------------------------
    def read_until_prompt(self, timeout: float = 30.0) -> str:
        """Everything printed up to the next prompt (prompt excluded)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        data = b""
        deadline = time.monotonic() + timeout
        while not data.endswith(PROMPT):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no prompt; got {data!r}\n{self.stderr_text()}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(f"{self.name}: console closed; got {data!r}\n"
                                         f"{self.stderr_text()}")
                data += chunk
        return data[: -len(PROMPT)].decode()

    def type(self, line: str, timeout: float = 30.0) -> str:
        """Type one command line and return what it printed."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        return self.read_until_prompt(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
