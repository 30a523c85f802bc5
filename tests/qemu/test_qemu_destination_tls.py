"""Our TLS source into a real QEMU 7.2 TLS destination (issue 13 §4, the last interop direction).

QEMU listens with ``-object tls-creds-x509,endpoint=server,verify-peer=on``
(it demands our client certificate) and ``tls-creds`` set before
``migrate-incoming``; our source, a live ``machine="none"`` guest running
the load generator, connects with its own ``endpoint=client`` credentials
signed by the same CA and checks QEMU's certificate against the address it
dials (127.0.0.1, in the server certificate's subjectAltName) or
``tls-hostname``.  XBZRLE is on both sides and ``x-ram-digest`` off (QEMU has
no such section).  Once QEMU says ``completed`` its RAM file must equal the
source's final RAM byte for byte, and XBZRLE records must have gone out.

A plaintext source knocking at the TLS QEMU fails on its side with an error
naming the likely cause, and its guest keeps running.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from test_qemu_destination import (
    RAM,
    assert_several_xbzrle_rounds,
    migrate,
    ram_of,
    running_and_progressing,
    xbzrle_records,
)

from xbzrle.guest import Guest
from xbzrle.migration import MigrationManager

sys.path.insert(0, str(Path(__file__).parent / "interop"))
from qemu_vm import QemuDestination, qemu_missing_reason  # noqa: E402

_missing = qemu_missing_reason()
pytestmark = pytest.mark.skipif(_missing is not None, reason=_missing or "")


@pytest.fixture
def tls_destination(tmp_path, pki):
    """A QEMU 7.2 destination listening over TLS, verifying its peer's certificate."""
    dest = QemuDestination(
        tmp_path, RAM,
        extra_args=("-object", f"tls-creds-x509,id=tls0,endpoint=server,dir={pki.server},"
                               "verify-peer=on"),
        parameters={"tls-creds": "tls0"})
    yield dest
    dest.stop()


def with_client_creds(manager: MigrationManager, creds: Path, **params: object) -> None:
    manager.objects.add(f"tls-creds-x509,id=tls0,endpoint=client,dir={creds}")
    manager.set_parameters(tls_creds="tls0", **params)


@pytest.mark.parametrize("hostname", ["", "localhost"])
def test_tls_source_into_qemu_tls_destination_lands_byte_for_byte(tls_destination, pki,
                                                                  hostname):
    dest = tls_destination
    with Guest(ram=RAM, machine="none") as guest:
        guest.start_workload("loadgen")
        manager = MigrationManager(guest)
        with_client_creds(manager, pki.client, tls_hostname=hostname)
        manager = migrate(guest, f"tcp:127.0.0.1:{dest.port}", manager=manager)
        info = manager.query()
        assert_several_xbzrle_rounds(info, xbzrle_records(manager))
        assert not guest.running  # paused after completion: its RAM is final
        qemu_info = dest.wait_completed()
        assert qemu_info["status"] == "completed", dest.errors()
        assert dest.ram_bytes() == ram_of(guest, "ram")
    assert dest.errors() == ""


def test_plaintext_source_into_qemu_tls_destination_fails_and_runs_on(tls_destination, pki):
    dest = tls_destination
    with Guest(ram=RAM, machine="none") as guest:
        guest.start_workload("loadgen")
        manager = migrate(guest, f"tcp:127.0.0.1:{dest.port}")
        info = manager.query()
        assert info["status"] == "failed"
        assert "if the destination requires TLS, set tls-creds" in info["error-desc"], info
        assert running_and_progressing(guest)
        # QEMU refused the connection, not the migration: it listens on, and
        # the same guest then migrates with its credentials.
        manager = MigrationManager(guest)
        with_client_creds(manager, pki.client)
        manager = migrate(guest, f"tcp:127.0.0.1:{dest.port}", manager=manager)
        assert_several_xbzrle_rounds(manager.query(), xbzrle_records(manager))
        assert dest.wait_completed()["status"] == "completed", dest.errors()
        assert dest.ram_bytes() == ram_of(guest, "ram")
    assert "TLS handshake failed" in dest.errors()
