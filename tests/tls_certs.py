"""Test certificates for TLS migration, made with ``cryptography`` in QEMU's layout.

``make_pki(root)`` writes three directories QEMU's ``tls-creds-x509`` can
read (``dir=``): ``server/`` (ca-cert.pem, server-cert.pem, server-key.pem),
``client/`` (ca-cert.pem, client-cert.pem, client-key.pem) and ``rogue/``
(a client whose certificate another CA signed).  The extensions are the ones
GnuTLS (hence QEMU) checks: CA basic constraints and key usage, server and
client extended key usage, the server's name and address.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENT_DN = "CN=source.example.com,O=Example Org,L=London,C=GB"
ROGUE_DN = "CN=rogue.example.com,O=Example Org,L=London,C=GB"


@dataclass
class Pki:
    server: Path
    client: Path
    rogue: Path
    other_client: Path  # signed by the right CA, another identity
    client_dn: str = CLIENT_DN
    other_dn: str = "CN=other.example.com,O=Example Org,L=London,C=GB"


def _name(cn: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "GB"),
        x509.NameAttribute(NameOID.LOCALITY_NAME, "London"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Org"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write(path: Path, cert: x509.Certificate, key: rsa.RSAPrivateKey | None = None,
           key_path: Path | None = None) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None and key_path is not None:
        key_path.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()))
        key_path.chmod(0o600)


def _issue(subject: str, key, ca_cert: x509.Certificate | None, ca_key, *, ca: bool = False,
           server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer = ca_cert.subject if ca_cert is not None else _name(subject)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=True,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=True)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(ca_key if ca_key is not None else key, hashes.SHA256())


def make_pki(root: Path) -> Pki:
    ca_key, rogue_ca_key = _key(), _key()
    ca = _issue("Test CA", ca_key, None, None, ca=True)
    rogue_ca = _issue("Rogue CA", rogue_ca_key, None, None, ca=True)
    dirs = {name: root / name for name in ("server", "client", "rogue", "other")}
    for path in dirs.values():
        path.mkdir(parents=True)
        _write(path / "ca-cert.pem", ca)
    server_key = _key()
    _write(dirs["server"] / "server-cert.pem",
           _issue("localhost", server_key, ca, ca_key, server=True), server_key,
           dirs["server"] / "server-key.pem")
    for name, cn, issuer, issuer_key in (
            ("client", "source.example.com", ca, ca_key),
            ("rogue", "rogue.example.com", rogue_ca, rogue_ca_key),
            ("other", "other.example.com", ca, ca_key)):
        key = _key()
        _write(dirs[name] / "client-cert.pem", _issue(cn, key, issuer, issuer_key), key,
               dirs[name] / "client-key.pem")
    return Pki(dirs["server"], dirs["client"], dirs["rogue"], dirs["other"])
