"""Capabilities, parameters, sizes, URIs and the state machine: pure logic."""

import pytest

from xbzrle.errors import MigrationStateError, ParameterError
from xbzrle.migration.params import Settings, pow2floor
from xbzrle.migration.status import MigrationStatus, check_transition
from xbzrle.sizes import format_size, parse_size
from xbzrle.transport.uri import parse_uri

MiB = 1 << 20


@pytest.mark.parametrize(
    "text, expected",
    [("4096", 4096), ("64k", 64 << 10), ("256m", 256 * MiB), ("256M", 256 * MiB),
     ("1g", 1 << 30), ("1G", 1 << 30), ("2t", 2 << 40), ("1.5k", 1536), ("512MiB", 512 * MiB),
     (123, 123)],
)
def test_sizes_parse_like_the_monitor(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "12q", "-5", "m", True])
def test_bad_sizes_are_refused(text):
    with pytest.raises(ParameterError):
        parse_size(text)


def test_format_size():
    assert format_size(256 * MiB) == "256 MiB"
    assert format_size(4096) == "4 KiB"


def test_pow2floor():
    assert [pow2floor(v) for v in (1, 2, 3, 4097, 300 * MiB)] == [1, 2, 2, 4096, 256 * MiB]


def test_defaults_match_qemu():
    s = Settings(ram_size=1 << 30)
    assert s.parameters.to_qmp() == {
        "xbzrle-cache-size": 64 * MiB, "max-bandwidth": 128 * MiB, "downtime-limit": 300,
        "throttle-trigger-threshold": 50, "cpu-throttle-initial": 20,
        "cpu-throttle-increment": 10, "cpu-throttle-tailslow": False, "max-cpu-throttle": 99,
        "x-throttle-raw-bytes": False, "x-overflow-backoff": True,
        "tls-creds": "", "tls-hostname": "", "tls-authz": "",
        "x-handshake-timeout": 10_000, "x-stall-timeout": 60_000}
    assert s.query_capabilities()[0] == {"capability": "xbzrle", "state": False}
    assert {"capability": "auto-converge", "state": False} in s.query_capabilities()


def test_capabilities():
    s = Settings(ram_size=1 << 30)
    s.set_capability("xbzrle", True)
    assert s.capability("xbzrle") is True
    with pytest.raises(ParameterError, match="does not accept value 'nope'"):
        s.set_capability("nope", True)


def test_ram_digest_capability_is_on_by_default_and_can_be_turned_off():
    s = Settings(ram_size=1 << 30)
    assert {"capability": "x-ram-digest", "state": True} in s.query_capabilities()
    s.set_capability("x-ram-digest", False)
    assert s.capability("x-ram-digest") is False
    assert Settings(ram_size=1 << 30).capability("x-ram-digest") is True  # per process


def test_seed_cache_command_rounds_down_parameter_refuses():
    s = Settings(ram_size=1 << 30)
    assert s.check_cache_size(300 * MiB, round_down=True) == 256 * MiB
    with pytest.raises(ParameterError, match="power of two no less than the target page size"):
        s.set_parameters(xbzrle_cache_size=300 * MiB)
    s.set_parameters(**{"xbzrle-cache-size": 256 * MiB})
    assert s.parameters.xbzrle_cache_size == 256 * MiB


@pytest.mark.parametrize("bad", [0, -1, 100, 2 << 30])
def test_cache_size_limits_named(bad):
    s = Settings(ram_size=1 << 30)
    with pytest.raises(ParameterError, match="xbzrle-cache-size"):
        s.check_cache_size(bad, round_down=True)


def test_set_parameters_is_all_or_nothing():
    s = Settings(ram_size=1 << 30)
    with pytest.raises(ParameterError, match="downtime-limit"):
        s.set_parameters(max_bandwidth=1000, downtime_limit=-1)
    assert s.parameters.max_bandwidth == 128 * MiB
    with pytest.raises(ParameterError, match="unexpected"):
        s.set_parameters(colour=3)
    with pytest.raises(ParameterError, match="integer"):
        s.set_parameters(max_bandwidth="fast")


@pytest.mark.parametrize(
    "text, scheme, host, port, path",
    [("tcp:localhost:4444", "tcp", "localhost", 4444, ""),
     ("tcp:0:4444", "tcp", "0", 4444, ""),
     ("tcp:[::1]:5000", "tcp", "::1", 5000, ""),
     ("unix:/tmp/m.sock", "unix", "", 0, "/tmp/m.sock"),
     ("file:/tmp/out.bin", "file", "", 0, "/tmp/out.bin")],
)
def test_uris(text, scheme, host, port, path):
    uri = parse_uri(text)
    assert (uri.scheme, uri.host, uri.port, uri.path) == (scheme, host, port, path)
    assert str(uri) == text


def test_exec_uri_keeps_the_command():
    assert parse_uri("exec:cat > /tmp/x").command == "cat > /tmp/x"


@pytest.mark.parametrize("text", ["http://x", "tcp:", "tcp:host", "tcp:host:99999",
                                  "tcp:host:port", "nonsense", "tcp:[::1]5"])
def test_bad_uris(text):
    with pytest.raises(ParameterError):
        parse_uri(text)


def test_state_machine():
    S = MigrationStatus
    check_transition(S.NONE, S.SETUP)
    check_transition(S.ACTIVE, S.CANCELLING)
    check_transition(S.CANCELLING, S.CANCELLED)
    with pytest.raises(MigrationStateError):
        check_transition(S.COMPLETED, S.ACTIVE)
    with pytest.raises(MigrationStateError):
        check_transition(S.NONE, S.ACTIVE)
    assert S.ACTIVE.is_running and not S.COMPLETED.is_running


@pytest.mark.parametrize(("name", "lowest", "highest", "text"), [
    ("throttle-trigger-threshold", 1, 100,
     "Parameter 'throttle_trigger_threshold' expects an integer in the range of 1 to 100"),
    ("cpu-throttle-initial", 1, 99,
     "Parameter 'cpu_throttle_initial' expects an integer in the range of 1 to 99"),
    ("cpu-throttle-increment", 1, 99,
     "Parameter 'cpu_throttle_increment' expects an integer in the range of 1 to 99"),
    ("max-cpu-throttle", 20, 99,
     "Parameter 'max_cpu_throttle' expects an integer in the range of cpu_throttle_initial "
     "to 99"),
])
def test_throttle_parameters_have_qemus_ranges_and_texts(name, lowest, highest, text):
    s = Settings(ram_size=1 << 30)
    for good in (lowest, highest):
        s.set_parameters(**{name: good})
        assert s.parameters.to_qmp()[name] == good
    for bad in (lowest - 1, highest + 1):
        with pytest.raises(ParameterError) as info:
            s.set_parameters(**{name: bad})
        assert str(info.value) == text
    assert s.parameters.to_qmp()[name] == highest  # a refused value changes nothing
    with pytest.raises(ParameterError, match="expects an integer"):
        s.set_parameters(**{name: "ten"})


def test_max_cpu_throttle_is_judged_against_the_initial_it_comes_with():
    s = Settings(ram_size=1 << 30)
    s.set_parameters(max_cpu_throttle=40)
    with pytest.raises(ParameterError, match="max_cpu_throttle"):
        s.set_parameters(cpu_throttle_initial=50)  # would leave max below initial
    s.set_parameters(cpu_throttle_initial=50, max_cpu_throttle=60)  # together: fine
    assert (s.parameters.cpu_throttle_initial, s.parameters.max_cpu_throttle) == (50, 60)


@pytest.mark.parametrize("name", ["cpu-throttle-tailslow", "x-throttle-raw-bytes",
                                  "x-overflow-backoff"])
def test_throttle_switches_are_booleans(name):
    s = Settings(ram_size=1 << 30)
    s.set_parameters(**{name: True})
    assert s.parameters.to_qmp()[name] is True
    s.set_parameters(**{name: False})
    assert s.parameters.to_qmp()[name] is False
    with pytest.raises(ParameterError, match="expects a boolean"):
        s.set_parameters(**{name: 1})


def test_auto_converge_is_a_capability():
    s = Settings(ram_size=1 << 30)
    s.set_capability("auto-converge", True)
    assert s.capability("auto-converge") is True
