"""The library never prints on its own; the command line shows its records on request."""

from __future__ import annotations

import subprocess
import sys


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)


def test_library_warnings_go_nowhere_without_the_applications_logging():
    # Without the NullHandler, Python's last-resort handler would print this warning.
    r = run("import xbzrle, logging; "
            "logging.getLogger('xbzrle.migration.source').warning('migration failed: x')")
    assert r.returncode == 0 and r.stderr == ""


def test_an_application_that_configures_logging_sees_them():
    r = run("import logging; logging.basicConfig(level=logging.INFO); import xbzrle; "
            "logging.getLogger('xbzrle.migration.source').info('migration status: active')")
    assert "migration status: active" in r.stderr


def test_cli_verbosity_flags():
    base = ("import logging, sys; from xbzrle.cli import setup_logging; "
            "setup_logging(int(sys.argv[1]), sys.argv[2] == 'q'); "
            "log = logging.getLogger('xbzrle.x'); log.info('info-line'); "
            "log.warning('warning-line')")
    default = subprocess.run([sys.executable, "-c", base, "0", "-"], capture_output=True,
                             text=True, timeout=60)
    verbose = subprocess.run([sys.executable, "-c", base, "1", "-"], capture_output=True,
                             text=True, timeout=60)
    quiet = subprocess.run([sys.executable, "-c", base, "0", "q"], capture_output=True,
                           text=True, timeout=60)
    assert default.stderr == "xbzrle.x: warning-line\n"
    assert verbose.stderr == "xbzrle.x: info-line\nxbzrle.x: warning-line\n"
    assert quiet.stderr == ""
