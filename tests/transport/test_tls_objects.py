"""QEMU's object syntax for TLS and authorization, and the identity a certificate gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from xbzrle.errors import ParameterError
from xbzrle.transport.tls import (
    AuthzList,
    TlsCredsX509,
    distinguished_name,
    object_from_options,
    split_options,
)


def test_split_options_doubles_commas_as_qemu_does():
    kind, opts = split_options("authz-simple,id=a,identity=CN=x,,O=Example,, Inc,,C=GB")
    assert kind == "authz-simple"
    assert opts == {"id": "a", "identity": "CN=x,O=Example, Inc,C=GB"}


@pytest.mark.parametrize("spec, message", [
    ("tls-creds-x509,id=t,dir=/x,endpoint=middle", "'server' or 'client'"),
    ("tls-creds-x509,dir=/x", "'id' is missing"),
    ("tls-creds-x509,id=t", "'dir' is missing"),
    ("tls-creds-x509,id=t,dir=/x,verify-peer=maybe", "on/off"),
    ("tls-creds-x509,id=t,dir=/x,colour=blue", "unknown option"),
    ("tls-creds-x509,id=t,id=u,dir=/x", "given twice"),
    ("tls-creds-psk,id=t", "not supported"),
    ("authz-simple,id=a", "'identity' is missing"),
    ("authz-list,id=a,rules.0.match=CN=x", "policy=allow|deny"),
    ("authz-list,id=a,rules.0.match=x,rules.0.policy=allow,rules.0.format=regex", "'glob'"),
    ("authz-list,id=a,policy=maybe", "'allow' or 'deny'"),
    ("authz-list,id=a,rules.x.match=y", "unknown option"),
    ("authz-list,id=a,nonsense", "KEY=VALUE"),
])
def test_bad_object_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ParameterError, match=message):
        object_from_options(spec)


def test_tls_creds_defaults_match_qemu():
    creds = object_from_options("tls-creds-x509,id=tls0,dir=/etc/pki/qemu")
    assert creds == TlsCredsX509("tls0", "client", Path("/etc/pki/qemu"), verify_peer=True)
    off = object_from_options("tls-creds-x509,id=t,endpoint=server,dir=/d,verify-peer=off")
    assert isinstance(off, TlsCredsX509) and not off.verify_peer and off.endpoint == "server"


def test_missing_certificate_files_are_named(tmp_path):
    creds = object_from_options(f"tls-creds-x509,id=t,endpoint=server,dir={tmp_path}")
    assert isinstance(creds, TlsCredsX509)
    with pytest.raises(ParameterError, match="ca-cert.pem"):
        creds.context()


def test_authz_list_first_matching_rule_wins_then_the_policy():
    authz = object_from_options(
        "authz-list,id=a,policy=deny,"
        "rules.0.match=CN=bad.example.com,,O=Ex,rules.0.policy=deny,"
        "rules.1.match=CN=*.example.com,,O=Ex,rules.1.policy=allow,rules.1.format=glob")
    assert isinstance(authz, AuthzList)
    assert authz.is_allowed("CN=good.example.com,O=Ex")
    assert not authz.is_allowed("CN=bad.example.com,O=Ex")
    assert not authz.is_allowed("CN=good.example.org,O=Ex")
    everyone = object_from_options("authz-list,id=b,policy=allow")
    assert isinstance(everyone, AuthzList) and everyone.is_allowed("anything")


def test_authz_simple_allows_exactly_its_identity():
    authz = object_from_options("authz-simple,id=a,identity=CN=x,,C=GB")
    assert isinstance(authz, AuthzList)
    assert authz.is_allowed("CN=x,C=GB") and not authz.is_allowed("CN=x,C=GBR")


def test_distinguished_name_is_rfc4514_most_specific_first():
    cert = {"subject": ((("countryName", "GB"),), (("organizationName", "Example, Inc"),),
                        (("commonName", "host"),))}
    assert distinguished_name(cert) == "CN=host,O=Example\\, Inc,C=GB"


def test_pki_identity_is_what_authz_rules_are_written_against(pki):
    import socket
    import ssl
    import threading

    server = object_from_options(f"tls-creds-x509,id=s,endpoint=server,dir={pki.server}")
    client = object_from_options(f"tls-creds-x509,id=c,endpoint=client,dir={pki.client}")
    assert isinstance(server, TlsCredsX509) and isinstance(client, TlsCredsX509)
    a, b = socket.socketpair()
    seen: list[str] = []

    def serve() -> None:
        with server.context().wrap_socket(a, server_side=True) as s:
            seen.append(distinguished_name(s.getpeercert()))

    t = threading.Thread(target=serve)
    t.start()
    with client.context().wrap_socket(b, server_hostname="localhost") as c:
        assert isinstance(c, ssl.SSLSocket)
    t.join(10)
    assert seen == [pki.client_dn]
