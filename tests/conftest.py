"""Shared fixtures."""

import pytest


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """CA, server, client, rogue and other-client certificates in QEMU's layout (tls_certs)."""
    from tls_certs import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))


def _compiled_codec():
    from xbzrle.codec import implementations

    return implementations().get("c")


@pytest.fixture(params=_compiled_codec().simd_paths() if _compiled_codec() else [])
def simd_path(request):
    """Each SIMD path the compiled core supports on this CPU, selected for the test."""
    core = _compiled_codec()
    live = core.simd_path()
    core.select_simd(request.param)
    yield request.param
    core.select_simd(live)
