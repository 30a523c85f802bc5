"""The destination refuses a missing xbzrle capability before any page moves.

The source names ``xbzrle`` in the configuration section's capabilities
subsection (QEMU's own mechanism); a destination with the capability off
fails right there, with the command to type, and the source guest runs on.
"""

from __future__ import annotations

import time

import pytest

from xbzrle.errors import StreamError
from xbzrle.guest import Guest
from xbzrle.migration.destination import check_capabilities
from xbzrle.migration.manager import MigrationManager
from xbzrle.migration.status import MigrationStatus as S
from xbzrle.stream import StreamWriter
from xbzrle.stream import records as ev
from xbzrle.stream.parser import StreamParser


def configuration_of(data: bytes) -> ev.Configuration:
    parser = StreamParser()
    parser.feed(data)
    return next(e for e in parser.events() if isinstance(e, ev.Configuration))


def test_the_capability_travels_in_the_configuration_section():
    w = StreamWriter()
    config = configuration_of(w.header() + w.configuration("xbzrle-vm", ["xbzrle"])
                              + w.section_start(0, "ram", 0, 4))
    assert config.capabilities == ("xbzrle",)
    with pytest.raises(StreamError, match="migrate_set_capability xbzrle on"):
        check_capabilities(config.capabilities, xbzrle=False)
    check_capabilities(config.capabilities, xbzrle=True)
    check_capabilities((), xbzrle=True)  # a plain source into an XBZRLE destination is fine


def test_destination_without_the_capability_fails_before_any_page():
    with Guest(ram="64M") as src, Guest(ram="64M") as dst:
        dst.stop()
        dst_m = MigrationManager(dst)  # xbzrle left off here
        incoming = dst_m.incoming("tcp:127.0.0.1:0")
        src.start_workload("dense")
        src_m = MigrationManager(src)
        src_m.set_capability("xbzrle", True)
        # 1 MiB/s: the first pass alone would take a minute, so a failure now is early.
        src_m.set_parameters(max_bandwidth=1 << 20)
        mig = src_m.migrate(f"tcp:127.0.0.1:{incoming.port}")
        assert mig.wait(30) == S.FAILED
        assert dst_m.wait(10) == S.FAILED
        assert "migrate_set_capability xbzrle on" in incoming.error
        assert "migrate_set_capability xbzrle on" in mig.error
        assert mig.stats.history == []  # not even the first pass ended
        loaded = incoming.stats.totals
        assert loaded.zero + loaded.normal + loaded.xbzrle == 0  # no page reached the RAM
        before = src.pages_written
        deadline = time.monotonic() + 10
        while src.pages_written == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert src.running and src.pages_written > before
