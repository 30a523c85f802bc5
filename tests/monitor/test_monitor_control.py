"""VmControl's QEMU run-state rules, on real guests in this process."""

from __future__ import annotations

import pytest

from xbzrle import Guest
from xbzrle.errors import MigrationStateError
from xbzrle.monitor.control import VmControl


@pytest.fixture
def guest():
    g = Guest(ram=4 << 20)
    yield g
    g.close()


def recorder(control: VmControl) -> list[str]:
    events: list[str] = []
    control.subscribe(lambda name, data: events.append(name))
    return events


def test_start_stopped_guest_is_paused_until_cont(guest):
    control = VmControl(guest, autostart=False)
    events = recorder(control)
    assert control.query_status() == {"status": "paused", "singlestep": False,
                                      "running": False}
    assert not guest.running
    control.cont()
    assert guest.running and control.runstate == "running"
    assert events == ["RESUME"]


def test_waiting_destination_stop_and_cont_only_toggle_autostart(guest):
    control = VmControl(guest, incoming="defer")
    events = recorder(control)
    assert control.runstate == "inmigrate" and not guest.running
    control.stop()
    assert control.autostart is False
    control.cont()
    assert control.autostart is True
    assert not guest.running and events == []  # nothing runs before the RAM arrives
    with pytest.raises(MigrationStateError, match="waiting for an incoming migration"):
        control.migrate("tcp:127.0.0.1:1")


def test_deferred_incoming_listens_once(guest):
    control = VmControl(guest, incoming="defer")
    assert control.query_migrate() == {}
    mig = control.migrate_incoming("tcp:127.0.0.1:0")
    info = control.query_migrate()
    assert info["socket-address"] == [{"type": "inet", "host": "127.0.0.1",
                                       "port": str(mig.port)}]
    with pytest.raises(MigrationStateError, match="already been started"):
        control.migrate_incoming("tcp:127.0.0.1:0")
    control.cancel()  # quitting a waiting destination must not hang on its accept()
    mig.wait(10)
    assert not mig.thread.is_alive()


def test_incoming_needs_incoming_on_the_command_line(guest):
    with pytest.raises(MigrationStateError, match="-incoming"):
        VmControl(guest).migrate_incoming("tcp:127.0.0.1:0")


def test_pmemsave_spans_blocks_back_to_back(tmp_path):
    with Guest(blocks={"a": "1M", "b": "1M"}) as g:
        control = VmControl(g)
        with memoryview(g.blocks["a"]) as a, memoryview(g.blocks["b"]) as b:
            a[-4:] = b"tail"
            b[:4] = b"head"
        out = tmp_path / "span"
        control.pmemsave((1 << 20) - 4, 8, str(out))
        assert out.read_bytes() == b"tailhead"
