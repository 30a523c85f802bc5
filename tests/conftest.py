"""Shared fixtures."""

import pytest


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """CA, server, client, rogue and other-client certificates in QEMU's layout (tls_certs)."""
    from tls_certs import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))
