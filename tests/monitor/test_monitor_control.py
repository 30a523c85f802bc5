"""VmControl's QEMU run-state rules, on real guests in this process."""

from __future__ import annotations

import pytest

from support import refusing_destination
from xbzrle import Guest
from xbzrle.errors import MigrationStateError, ParameterError
from xbzrle.monitor.control import RUNSTATE_TRANSITIONS, RunState, VmControl


@pytest.fixture
def guest():
    g = Guest(ram=4 << 20)
    yield g
    g.close()


def recorder(control: VmControl) -> list[str]:
    events: list[str] = []
    control.subscribe(lambda name, data: events.append(name))
    return events


def test_start_stopped_guest_is_in_prelaunch_until_cont(guest):
    control = VmControl(guest, autostart=False)
    events = recorder(control)
    assert control.query_status() == {"status": "prelaunch", "singlestep": False,
                                      "running": False}
    assert not guest.running
    control.stop()  # as in QEMU, stop leaves a guest that never ran in prelaunch
    assert control.runstate == "prelaunch" and events == []
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
    assert mig.wait(10) == "cancelled"  # QEMU: an operator's cancel is not a failure
    assert not mig.thread.is_alive()
    assert control.query_migrate()["status"] == "cancelled"
    assert "error-desc" not in control.query_migrate()
    assert control.runstate == "inmigrate"  # and it may listen again
    again = control.migrate_incoming("tcp:127.0.0.1:0")
    control.cancel()
    assert again.wait(10) == "cancelled"


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


def test_run_states_have_qemus_names():
    assert [str(s) for s in RunState] == ["running", "prelaunch", "paused", "inmigrate",
                                         "finish-migrate", "postmigrate", "shutdown"]
    assert set(RUNSTATE_TRANSITIONS) == set(RunState)


@pytest.mark.parametrize("current, new", [
    (a, b) for a in RunState for b in RunState if a != b and b not in RUNSTATE_TRANSITIONS[a]])
def test_an_illegal_run_state_change_raises(guest, current, new):
    control = VmControl(guest)
    control._runstate = current  # the table alone decides; no guest behind it here
    with pytest.raises(MigrationStateError, match="illegal run state change"):
        control._set_runstate(new)
    assert control.runstate == current


def test_cont_is_refused_during_the_switch_over_with_qemus_text(guest):
    control = VmControl(guest)
    control._runstate = RunState.FINISH_MIGRATE
    with pytest.raises(MigrationStateError, match="being migrated"):
        control.cont()
    assert guest.running  # the refused command touched nothing


def test_quit_shuts_down_and_then_refuses_cont(guest):
    control = VmControl(guest, autostart=False)
    control.request_quit()
    assert control.runstate == "shutdown" and control.quit_requested.is_set()
    with pytest.raises(MigrationStateError, match="shutdown"):
        control.cont()
    assert not guest.running


@pytest.mark.parametrize("stop_first, before", [(False, "prelaunch"), (True, "paused")])
def test_a_stopped_guest_whose_migration_fails_is_stopped_again(guest, stop_first, before):
    """QEMU restores the state the guest had before finish-migrate."""
    control = VmControl(guest, autostart=stop_first)  # -S, or run and then stop
    if stop_first:
        control.stop()
    assert control.runstate == before
    with refusing_destination() as uri:
        mig = control.migrate(uri)
        assert mig.wait(30) == "failed"
    assert mig.status.is_final and "refused by the test" in mig.error
    assert control.runstate == before and not guest.running
    assert control.query_status()["status"] == before


def test_settings_go_through_control_with_params_rules(guest):
    control = VmControl(guest)
    assert control.set_cache_size((1 << 20) + 5) == 1 << 20  # the seed rounds down
    assert control.cache_size() == 1 << 20
    with pytest.raises(ParameterError, match="power of two"):
        control.set_parameters(xbzrle_cache_size=(1 << 20) + 5)  # modern QEMU refuses
    control.set_downtime(0.5)
    assert control.query_parameters()["downtime-limit"] == 500
    with pytest.raises(ParameterError, match="0 to 2000 seconds"):
        control.set_downtime(2001)
    before = control.query_capabilities()
    with pytest.raises(ParameterError, match="does not accept value 'nope'"):
        control.set_capabilities([("xbzrle", True), ("nope", True)])
    assert control.query_capabilities() == before  # all or nothing
    assert {"capability": "xbzrle", "state": False} in before
