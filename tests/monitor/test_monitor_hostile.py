"""Issue 13 §3: monitors that one client cannot tie up or fool.

Each input once did harm: a duplicate key ran the second command, a long
integer killed the session, shlex took 10 s for an 800 KB line, a client
that never read its replies grew the process.
"""

from __future__ import annotations

import json
import shlex
import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support import wait_until
from xbzrle import Guest
from xbzrle.monitor.control import VmControl
from xbzrle.monitor.endpoint import parse_endpoint
from xbzrle.monitor.hmp import MAX_LINE, LineReader, TooLong, run_captured, split_words
from xbzrle.monitor.jsonstream import JsonSplitter
from xbzrle.monitor.qmp import QmpSession, encode
from xbzrle.monitor.qmp_commands import QmpCommands
from xbzrle.monitor.server import MAX_QUEUED, MonitorServer

RAM = 8 << 20


@pytest.fixture
def control():
    guest = Guest(ram=RAM)
    yield VmControl(guest)
    guest.close()


@pytest.fixture
def session(control):
    s = QmpSession(QmpCommands(control, hmp=lambda line: run_captured(control, line)), "t")
    s.receive(b'{"execute": "qmp_capabilities"}')
    return s


def ask(session: QmpSession, raw: bytes) -> dict:
    [reply] = session.receive(raw)
    return json.loads(reply)


def test_duplicate_keys_are_an_error_and_nothing_runs(session, control):
    reply = ask(session, b'{"execute":"query-status","execute":"stop"}')
    assert reply["error"]["class"] == "GenericError"
    assert "duplicate key 'execute'" in reply["error"]["desc"]
    assert control.guest.running
    reply = ask(session, b'{"execute":"stop","arguments":{"a":1,"a":2}}')
    assert "duplicate key 'a'" in reply["error"]["desc"] and control.guest.running


def test_a_huge_integer_gets_an_error_and_the_session_goes_on(session):
    reply = ask(session, b'{"execute":"query-status","id":' + b"9" * 5000 + b"}")
    assert "out of range" in reply["error"]["desc"]
    assert ask(session, b'{"execute":"query-status"}')["return"]["status"] == "running"


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_numbers_are_refused(session, token):
    reply = ask(session, b'{"execute":"query-status","id":' + token + b"}")
    assert reply["error"]["class"] == "GenericError"
    assert "id" not in reply


def test_64_bit_integers_stay_integers(session):
    reply = ask(session, b'{"execute":"query-status","id":18446744073709551615}')
    assert reply["id"] == 18446744073709551615


def test_replies_never_carry_nan_or_infinity():
    line = encode({"return": {"rate": float("inf"), "list": [float("nan"), 0.5]}})
    assert json.loads(line, parse_constant=lambda c: pytest.fail(c)) == {
        "return": {"rate": None, "list": [None, 0.5]}}


def test_a_10_mb_human_monitor_command_is_refused_at_once(session):
    line = "info " + "x" * (10 << 20)
    reply = ask(session, json.dumps({"execute": "human-monitor-command",
                                     "arguments": {"command-line": line}}).encode())
    assert f"at most {MAX_LINE}" in reply["return"]
    assert ask(session, b'{"execute":"query-status"}')["return"]["status"] == "running"


def test_an_800_kb_console_line_is_refused_and_the_console_goes_on(control):
    out = run_captured(control, "x " * 400_000)
    assert f"at most {MAX_LINE}" in out
    assert "running" in run_captured(control, "info status")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab \\\"'\t")), max_size=40))
def test_split_words_is_shlex_without_its_cost(line):
    try:
        expected = shlex.split(line)
    except ValueError as exc:
        with pytest.raises(ValueError, match=str(exc)):
            split_words(line)
    else:
        assert split_words(line) == expected


def test_line_reader_drops_an_over_long_line_whole():
    reader = LineReader(limit=16)
    assert reader.feed(b"info status\nx" * 1) == ["info status"]
    assert reader.feed(b"y" * 100) == []
    out = reader.feed(b"zz\ninfo\r\n")
    assert isinstance(out[0], TooLong) and out[0].size == 103 and out[1:] == ["info"]


def test_json_splitter_cuts_a_10_mb_message_whole():
    big = b'{"execute":"x","arguments":{"s":"' + b"\\\"a" * (3 << 20) + b'"}}'
    [text] = JsonSplitter().feed(big)
    assert json.loads(text)["arguments"]["s"] == '"a' * (3 << 20)


def _client(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.settimeout(30)
    return sock


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def test_a_client_that_never_reads_is_disconnected_others_are_served(control, tmp_path):
    server = MonitorServer(control, "t")
    path = str(tmp_path / "qmp.sock")
    server.listen(parse_endpoint(f"unix:{path},server,nowait"), "qmp")
    greedy, polite = _client(path), _client(path)
    try:
        for sock in (greedy, polite):
            _read_line(sock)
            sock.sendall(b'{"execute":"qmp_capabilities"}')
            _read_line(sock)
        request = b'{"execute":"human-monitor-command","arguments":{"command-line":"help"}}'
        reply_size = len(_read_line(polite) if polite.sendall(request) is None else b"")
        count = 4 * MAX_QUEUED // reply_size + 1000
        stop = threading.Event()

        def flood() -> None:
            try:
                for _ in range(count):
                    greedy.sendall(request)
                    if stop.is_set():
                        return
            except OSError:
                return  # disconnected, as it should be

        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        wait_until(lambda: not flooder.is_alive(), 120, message="the flood was never cut off")
        greedy.settimeout(30)
        received = 0
        try:
            while chunk := greedy.recv(1 << 20):  # what was sent before the cut, then EOF
                received += len(chunk)
        except ConnectionResetError:
            pass  # the server closed with the rest of our requests unread
        assert received < count * reply_size
        polite.sendall(b'{"execute":"query-status"}')
        assert json.loads(_read_line(polite))["return"]["status"] == "running"
    finally:
        stop.set()
        greedy.close()
        polite.close()
        server.close()


def test_the_console_over_a_socket_refuses_a_10_mb_line(control, tmp_path):
    server = MonitorServer(control, "t")
    path = str(tmp_path / "hmp.sock")
    server.listen(parse_endpoint(f"unix:{path},server,nowait"), "hmp")
    sock = _client(path)
    try:
        data = b""
        while not data.endswith(b"(xbzrle) "):
            data += sock.recv(65536)
        sock.sendall(b"info " + b"x" * (10 << 20) + b"\ninfo status\n")
        data = b""
        while b"running" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        assert f"bytes: at most {MAX_LINE}".encode() in data
    finally:
        sock.close()
        server.close()
