import subprocess
import sys

import pytest

import xbzrle
from xbzrle import errors


@pytest.mark.parametrize(
    "cls, also",
    [
        (xbzrle.DecodeError, ValueError),
        (xbzrle.StreamError, ValueError),
        (xbzrle.ParameterError, ValueError),
        (xbzrle.TransportError, OSError),
        (xbzrle.MigrationStateError, xbzrle.XbzrleError),
    ],
)
def test_every_error_has_one_root_and_its_builtin_meaning(cls, also):
    err = cls("boom")
    assert isinstance(err, xbzrle.XbzrleError)
    assert isinstance(err, also)
    assert str(err) == "boom"


@pytest.mark.parametrize("cls, branch", [
    (errors.DecodeError, errors.PeerError),
    (errors.StreamError, errors.PeerError),
    (errors.ParameterError, errors.UsageError),
    (errors.MigrationStateError, errors.UsageError),
    (errors.CommandError, errors.UsageError),
    (errors.TransportError, errors.XbzrleError),
    (errors.Cancelled, errors.XbzrleError),
])
def test_the_tree_splits_local_misuse_from_peer_input(cls, branch):
    assert issubclass(cls, branch)
    local, remote = issubclass(cls, errors.UsageError), issubclass(cls, errors.PeerError)
    assert not (local and remote)


def test_every_error_class_in_the_package_joins_the_tree():
    """Monitors and migrations raise the tree's classes, not private ones."""
    import xbzrle.cli.demo
    import xbzrle.migration.source
    import xbzrle.monitor.hmp
    import xbzrle.monitor.qmp
    import xbzrle.monitor.qmp_commands

    for module in (xbzrle.monitor.hmp, xbzrle.monitor.qmp_commands, xbzrle.monitor.qmp,
                   xbzrle.migration.source, xbzrle.cli.demo):
        for name, value in vars(module).items():
            if isinstance(value, type) and issubclass(value, BaseException):
                assert issubclass(value, errors.XbzrleError) or value.__module__ == "builtins", \
                    f"{module.__name__}.{name}"
    assert not hasattr(xbzrle.monitor.qmp_commands, "QmpCommandError")
    assert not hasattr(xbzrle.monitor.hmp, "HmpUsageError")
    assert xbzrle.migration.source.Cancelled is errors.Cancelled


def test_one_table_maps_errors_to_qmp_classes_and_exit_codes():
    assert errors.qmp_class(errors.CommandError("x", "CommandNotFound")) == "CommandNotFound"
    assert errors.qmp_class(errors.ParameterError("x")) == "GenericError"
    assert errors.qmp_class(errors.MigrationStateError("x")) == "GenericError"
    assert errors.exit_code(errors.ParameterError("x")) == errors.EXIT_USAGE == 2
    for exc in (errors.StreamError("x"), errors.TransportError("x"), errors.Cancelled(),
                errors.MigrationStateError("x"), errors.CommandError("x")):
        assert errors.exit_code(exc) == errors.EXIT_FAILURE == 1


def test_qmp_replies_use_the_tables_class():
    from xbzrle.monitor.qmp import QmpSession

    class NoCommands:
        def lookup(self, name):
            raise errors.CommandError(f"The command {name} has not been found",
                                      "CommandNotFound")

    session = QmpSession(NoCommands(), "test")
    reply = session.handle('{"execute": "query-status", "id": 1}')
    assert reply == {"error": {"class": "CommandNotFound", "desc":
                               "Expecting capabilities negotiation with 'qmp_capabilities'"},
                     "id": 1}


@pytest.mark.parametrize("argv, code, text", [
    (["vm", "--monitor", "stdio", "--qmp", "stdio"], 2, "only one monitor can use stdio"),
    (["vm", "--monitor", "bogus:place"], 2, "bogus"),
])
def test_the_cli_prints_one_line_and_the_tables_exit_code(argv, code, text):
    r = subprocess.run([sys.executable, "-m", "xbzrle", *argv], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == code, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"xbzrle {argv[0]}: ") and text in lines[0]
    assert "Traceback" not in r.stderr
