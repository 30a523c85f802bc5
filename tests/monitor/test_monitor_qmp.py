"""QMP protocol rules on a real guest, without sockets: greeting, negotiation,
ids, errors and their classes, event gating, and each command's checks."""

from __future__ import annotations

import json

import pytest

from xbzrle import Guest
from xbzrle.monitor.control import VmControl
from xbzrle.monitor.hmp import run_captured
from xbzrle.monitor.qmp import QmpSession
from xbzrle.monitor.qmp_commands import QmpCommands

RAM = 8 << 20


@pytest.fixture
def control():
    guest = Guest(ram=RAM)
    yield VmControl(guest)
    guest.close()


def new_session(control: VmControl) -> QmpSession:
    return QmpSession(QmpCommands(control, hmp=lambda line: run_captured(control, line)),
                      "xbzrle test")


@pytest.fixture
def session(control):
    s = new_session(control)
    assert ask(s, {"execute": "qmp_capabilities"}) == {"return": {}}
    return s


def ask(session: QmpSession, request: object) -> dict:
    raw = request if isinstance(request, bytes) else json.dumps(request).encode()
    [reply] = session.receive(raw)
    assert reply.endswith(b"\r\n") and reply.count(b"\n") == 1  # one object per line
    return json.loads(reply)


def run(session: QmpSession, name: str, **arguments: object) -> object:
    reply = ask(session, {"execute": name, "arguments": arguments, "id": name})
    assert reply["id"] == name
    if "error" in reply:
        raise AssertionError(reply["error"])
    return reply["return"]


def error(session: QmpSession, name: str, **arguments: object) -> tuple[str, str]:
    reply = ask(session, {"execute": name, "arguments": arguments})
    return reply["error"]["class"], reply["error"]["desc"]


def test_greeting_is_qemu_shaped(control):
    greeting = json.loads(new_session(control).greeting())
    assert greeting == {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7},
                                            "package": "xbzrle test"},
                                "capabilities": ["oob"]}}


def test_nothing_but_qmp_capabilities_before_negotiation(control):
    s = new_session(control)
    reply = ask(s, {"execute": "query-status", "id": 7})
    assert reply == {"error": {"class": "CommandNotFound", "desc":
                               "Expecting capabilities negotiation with 'qmp_capabilities'"},
                     "id": 7}
    assert s.event("STOP", None) is None  # no events in negotiation mode
    assert ask(s, {"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}) == {
        "return": {}}
    assert s.oob
    assert ask(s, {"execute": "qmp_capabilities"})["error"]["class"] == "CommandNotFound"
    assert json.loads(s.event("STOP", None))["event"] == "STOP"


def test_unknown_capability_in_negotiation_is_refused(control):
    s = new_session(control)
    reply = ask(s, {"execute": "qmp_capabilities", "arguments": {"enable": ["warp"]}})
    assert reply["error"]["class"] == "GenericError"
    assert not s.negotiated


@pytest.mark.parametrize("msg_id", ["x", 3, [1, {"a": None}], None])
def test_any_id_is_echoed(session, msg_id):
    assert ask(session, {"execute": "query-migrate", "id": msg_id}) == {"return": {},
                                                                         "id": msg_id}


@pytest.mark.parametrize(("raw", "desc"), [
    (b"[1, 2]", "QMP input must be a JSON object"),
    (b'{"arguments": {}}', "QMP input lacks member 'execute'"),
    (b'{"execute": 1}', "QMP input member 'execute' must be a string"),
    (b'{"execute": "stop", "arguments": []}', "QMP input member 'arguments' must be an object"),
    (b'{"execute": "stop", "colour": 1}', "QMP input member 'colour' is unexpected"),
    (b'{"execute": "stop",}', "JSON parse error"),
])
def test_malformed_requests_get_generic_errors(session, raw, desc):
    reply = ask(session, raw)
    assert reply["error"]["class"] == "GenericError"
    assert reply["error"]["desc"].startswith(desc)


def test_unknown_command_and_bad_arguments(session):
    assert error(session, "frobnicate") == ("CommandNotFound",
                                            "The command frobnicate has not been found")
    assert error(session, "migrate") == ("GenericError", "Parameter 'uri' is missing")
    assert error(session, "migrate", uri=5) == (
        "GenericError", "Invalid parameter type for 'uri', expected: string")
    assert error(session, "query-status", verbose=True) == (
        "GenericError", "Parameter 'verbose' is unexpected")
    assert error(session, "migrate-set-cache-size", value=True)[0] == "GenericError"


def test_exec_oob_needs_oob_enabled(session):
    reply = ask(session, {"exec-oob": "query-status", "id": 1})
    assert reply["error"]["class"] == "GenericError" and "out-of-band" in reply["error"]["desc"]


def test_query_commands_lists_every_issue_command(session):
    names = {c["name"] for c in run(session, "query-commands")}
    assert {"qmp_capabilities", "query-commands", "query-status", "query-migrate",
            "query-migrate-capabilities", "migrate-set-capabilities",
            "query-migrate-parameters", "migrate-set-parameters", "migrate-set-cache-size",
            "query-migrate-cache-size", "migrate", "migrate-incoming", "migrate_cancel",
            "stop", "cont", "quit", "pmemsave", "human-monitor-command"} <= names


def test_capabilities_are_set_all_or_nothing(session):
    assert error(session, "migrate-set-capabilities", capabilities=[
        {"capability": "xbzrle", "state": True}, {"capability": "warp", "state": True}])[0] \
        == "GenericError"
    caps = run(session, "query-migrate-capabilities")
    assert {"capability": "xbzrle", "state": False} in caps
    run(session, "migrate-set-capabilities", capabilities=[
        {"capability": "xbzrle", "state": True}, {"capability": "events", "state": True}])
    caps = run(session, "query-migrate-capabilities")
    assert {"capability": "xbzrle", "state": True} in caps
    assert {"capability": "events", "state": True} in caps


def test_ram_digest_capability_through_qmp_and_hmp(session):
    assert {"capability": "x-ram-digest", "state": True} in run(
        session, "query-migrate-capabilities")
    run(session, "migrate-set-capabilities",
        capabilities=[{"capability": "x-ram-digest", "state": False}])
    assert {"capability": "x-ram-digest", "state": False} in run(
        session, "query-migrate-capabilities")
    hmp = "human-monitor-command"
    assert run(session, hmp, **{"command-line": "migrate_set_capability x-ram-digest on"}) == ""
    shown = run(session, hmp, **{"command-line": "info migrate_capabilities"})
    assert "x-ram-digest: on" in str(shown).splitlines()


def test_cache_size_rules(session):
    run(session, "migrate-set-cache-size", value=3 << 20)  # the seed's command rounds down
    assert run(session, "query-migrate-cache-size") == 2 << 20
    _, desc = error(session, "migrate-set-parameters", **{"xbzrle-cache-size": 3 << 20})
    assert "power of two" in desc  # the modern parameter refuses
    for bad in (0, -4096, 100):
        _, desc = error(session, "migrate-set-cache-size", value=bad)
        assert "page size" in desc and "4096" in desc
    _, desc = error(session, "migrate-set-parameters", **{"xbzrle-cache-size": 2 * RAM})
    assert "guest RAM" in desc and str(RAM) in desc
    run(session, "migrate-set-parameters", **{"xbzrle-cache-size": 4 << 20})
    assert run(session, "query-migrate-parameters")["xbzrle-cache-size"] == 4 << 20


def test_parameters_and_legacy_speed_downtime(session):
    run(session, "migrate-set-parameters", **{"max-bandwidth": 1 << 20, "downtime-limit": 50})
    run(session, "migrate_set_speed", value=2 << 20)
    run(session, "migrate_set_downtime", value=0.25)
    params = run(session, "query-migrate-parameters")
    assert params["max-bandwidth"] == 2 << 20 and params["downtime-limit"] == 250
    _, desc = error(session, "migrate-set-parameters", **{"downtime-limit": -1})
    assert "downtime-limit" in desc
    _, desc = error(session, "migrate-set-parameters", **{"max-postcopy-bandwidth": 1})
    assert desc == "Parameter 'max-postcopy-bandwidth' is unexpected"


def test_stop_cont_emit_events_and_change_status(session, control):
    events = []
    control.subscribe(lambda name, data: events.append(session.event(name, data)))
    run(session, "stop")
    assert run(session, "query-status") == {"status": "paused", "singlestep": False,
                                            "running": False}
    run(session, "stop")  # already paused: no second STOP
    run(session, "cont")
    assert run(session, "query-status")["running"] is True
    decoded = [json.loads(e) for e in events]
    assert [e["event"] for e in decoded] == ["STOP", "RESUME"]
    assert all("data" not in e and set(e["timestamp"]) == {"seconds", "microseconds"}
               for e in decoded)


def test_migrate_incoming_needs_incoming_on_the_command_line(session):
    _, desc = error(session, "migrate-incoming", uri="tcp:127.0.0.1:0")
    assert "-incoming" in desc


def test_pmemsave_writes_guest_ram(session, control, tmp_path):
    with memoryview(control.guest.blocks["pc.ram"]) as ram:
        ram[8192:8200] = b"xbzrle!!"
    out = tmp_path / "dump"
    run(session, "pmemsave", val=8192, size=4096, filename=str(out))
    assert out.read_bytes() == b"xbzrle!!" + bytes(4088)
    _, desc = error(session, "pmemsave", val=RAM - 10, size=4096, filename=str(out))
    assert "Invalid addr" in desc


def test_human_monitor_command_returns_the_console_text(session):
    assert run(session, "human-monitor-command", **{"command-line": "info status"}) == \
        "VM status: running\n"
    assert run(session, "human-monitor-command", **{"command-line": "bogus"}) == \
        "unknown command: 'bogus'\n"
