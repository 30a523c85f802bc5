"""QEMU 7.2 reads the configuration/capabilities subsection our source writes.

Our source names ``xbzrle`` there so our destination can refuse a missing
capability early; QEMU must still load such a stream.  QEMU parses every
name in the subsection (an unknown one fails the load) and validates only
the few capabilities it lists as such, so ``xbzrle`` passes through.  The
control case, an unknown name, shows the subsection really was read.
"""

from __future__ import annotations

import shutil
import subprocess
import threading

import pytest

from xbzrle.stream import StreamWriter

QEMU = "qemu-system-x86_64"
pytestmark = pytest.mark.skipif(shutil.which(QEMU) is None,
                                reason=f"{QEMU} is not installed (scripts/test installs it)")


def load_configuration(tmp_path, capabilities: list[str]) -> str:
    """Feed QEMU a stream of just a header, a configuration and EOF; its messages.

    Read until QEMU says where the load ended: it exits on a refused stream,
    and on an accepted one it notes the missing device description and stays
    paused (``-S``), so it is stopped then.
    """
    w = StreamWriter()
    stream = tmp_path / "config.bin"
    stream.write_bytes(w.header() + w.configuration("pc-i440fx-7.2", capabilities) + w.eof())
    proc = subprocess.Popen(
        [QEMU, "-M", "pc-i440fx-7.2", "-display", "none", "-nodefaults", "-m", "16",
         "-S", "-monitor", "none", "-incoming", f"exec:cat {stream}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    lines = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "vmdescription" in line or "load of migration failed" in line:
                break
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()
    return "".join(lines)


def test_qemu_accepts_xbzrle_in_the_capabilities_subsection(tmp_path):
    stderr = load_configuration(tmp_path, ["xbzrle"])
    assert "capabilit" not in stderr.lower(), stderr
    assert "vmdescription" in stderr  # it read past the configuration, to our EOF


def test_control_an_unknown_capability_is_refused_by_qemu(tmp_path):
    stderr = load_configuration(tmp_path, ["no-such-capability"])
    assert "Received unknown capability no-such-capability" in stderr
