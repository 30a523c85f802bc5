"""TLS for the migration channel, with QEMU's objects: ``tls-creds-x509`` and ``authz-*``.

QEMU configures TLS with objects named on its command line and referred to
by migration parameters::

    --object tls-creds-x509,id=tls0,endpoint=server,dir=/etc/pki/qemu,verify-peer=on
    --object authz-list,id=auth0,rules.0.match=CN=src.example.com,,O=Example,rules.0.policy=allow
    migrate_set_parameter tls-creds tls0
    migrate_set_parameter tls-authz auth0

``dir`` holds QEMU's file names: ``ca-cert.pem`` always, then
``server-cert.pem``/``server-key.pem`` (endpoint=server) or
``client-cert.pem``/``client-key.pem`` (endpoint=client; optional unless
the server verifies its peers).  ``verify-peer`` defaults to on, as in QEMU:
a server then demands a client certificate signed by the CA, a client checks
the server's against ``tls-hostname`` (or the host of the URI).

An authorization object matches the client certificate's distinguished name
written as RFC 4514 (and GnuTLS, hence QEMU) write it, most specific part
first: ``CN=src.example.com,O=Example,C=GB``.  In QEMU's option syntax a
comma inside a value is doubled.

Pure configuration plus :mod:`ssl` contexts; the sockets are wrapped by
:mod:`.connect`.
"""

from __future__ import annotations

import fnmatch
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast, overload

from ..errors import ParameterError, TransportError

CA_CERT = "ca-cert.pem"
SERVER_CERT, SERVER_KEY = "server-cert.pem", "server-key.pem"
CLIENT_CERT, CLIENT_KEY = "client-cert.pem", "client-key.pem"

OBJECT_TYPES = ("tls-creds-x509", "authz-simple", "authz-list")

_ON = ("on", "yes", "true")
_OFF = ("off", "no", "false")
# RFC 4514 short names (those GnuTLS prints); others keep their OpenSSL long name.
_SHORT = {"commonName": "CN", "countryName": "C", "localityName": "L",
          "stateOrProvinceName": "ST", "organizationName": "O",
          "organizationalUnitName": "OU", "streetAddress": "STREET",
          "domainComponent": "DC", "userId": "UID", "emailAddress": "EMAIL"}


def split_options(text: str) -> tuple[str, dict[str, str]]:
    """QEMU's ``type,key=value,...`` with ``,,`` for a literal comma: ``(type, {key: value})``."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        end = text.find(",", i)
        if end < 0:
            current.append(text[i:])
            break
        current.append(text[i:end])
        if text.startswith(",,", end):
            current.append(",")
            i = end + 2
            continue
        parts.append("".join(current))
        current = []
        i = end + 1
    parts.append("".join(current))
    kind, options = parts[0], {}
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise ParameterError(f"object option {part!r} of {kind!r}: expected KEY=VALUE")
        if key in options:
            raise ParameterError(f"object option {key!r} of {kind!r} given twice")
        options[key] = value
    return kind, options


def _flag(kind: str, key: str, value: str) -> bool:
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ParameterError(f"Parameter '{key}' of {kind} expects on/off, got {value!r}")


@dataclass(frozen=True)
class TlsCredsX509:
    """QEMU's ``tls-creds-x509`` object: certificates from ``dir`` for one endpoint."""

    id: str
    endpoint: str
    dir: Path
    verify_peer: bool = True

    def __post_init__(self) -> None:
        if self.endpoint not in ("server", "client"):
            raise ParameterError(
                f"Parameter 'endpoint' expects 'server' or 'client', got {self.endpoint!r}")

    @overload
    def _file(self, name: str, required: Literal[True] = True) -> str: ...
    @overload
    def _file(self, name: str, required: bool) -> str | None: ...
    def _file(self, name: str, required: bool = True) -> str | None:
        path = self.dir / name
        if path.is_file():
            return str(path)
        if required:
            raise ParameterError(f"tls-creds-x509 '{self.id}': cannot find {path}")
        return None

    def context(self) -> ssl.SSLContext:
        """An :class:`ssl.SSLContext` for this endpoint (files read now: errors show early)."""
        server = self.endpoint == "server"
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ca = self._file(CA_CERT, required=self.verify_peer)
            if ca is not None:
                ctx.load_verify_locations(ca)
            if server:
                # No TLS 1.3 session tickets: a source never reads its migration channel
                # (QEMU without a return path), and unread tickets make its close a TCP
                # reset, which drops the end of the stream before we read it.
                ctx.num_tickets = 0
                ctx.options |= ssl.OP_NO_TICKET
                ctx.load_cert_chain(self._file(SERVER_CERT), self._file(SERVER_KEY))
                ctx.verify_mode = ssl.CERT_REQUIRED if self.verify_peer else ssl.CERT_NONE
            else:
                cert = self._file(CLIENT_CERT, required=False)
                key = self._file(CLIENT_KEY, required=False)
                if cert is not None and key is not None:
                    ctx.load_cert_chain(cert, key)
                if not self.verify_peer:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
        except (OSError, ssl.SSLError) as exc:
            raise ParameterError(f"tls-creds-x509 '{self.id}': {exc}") from exc
        return ctx


@dataclass(frozen=True)
class AuthzRule:
    match: str
    allow: bool
    glob: bool = False

    def matches(self, identity: str) -> bool:
        if self.glob:
            return fnmatch.fnmatchcase(identity, self.match)
        return identity == self.match


@dataclass(frozen=True)
class AuthzList:
    """QEMU's ``authz-list`` (rules, first match wins, else ``policy``) and ``authz-simple``."""

    id: str
    rules: tuple[AuthzRule, ...] = field(default_factory=tuple)
    allow_by_default: bool = False

    def is_allowed(self, identity: str) -> bool:
        for rule in self.rules:
            if rule.matches(identity):
                return rule.allow
        return self.allow_by_default


TlsObject = TlsCredsX509 | AuthzList


def object_from_options(spec: str) -> TlsObject:
    """Build an object from ``--object`` text (QEMU's syntax); ParameterError if malformed."""
    kind, opts = split_options(spec)
    if kind not in OBJECT_TYPES:
        raise ParameterError(
            f"object type {kind!r} is not supported: expected one of {', '.join(OBJECT_TYPES)}")
    obj_id = opts.pop("id", "")
    if not obj_id:
        raise ParameterError(f"Parameter 'id' is missing from {kind}")
    if kind == "tls-creds-x509":
        endpoint = opts.pop("endpoint", "client")
        directory = opts.pop("dir", "")
        if not directory:
            raise ParameterError(f"tls-creds-x509 '{obj_id}': Parameter 'dir' is missing")
        verify = _flag(kind, "verify-peer", opts.pop("verify-peer", "on"))
        _no_more(kind, opts)
        return TlsCredsX509(obj_id, endpoint, Path(directory), verify)
    rules: list[AuthzRule] = []
    if kind == "authz-simple" or "identity" in opts:
        identity = opts.pop("identity", "")
        if not identity:
            raise ParameterError(f"{kind} '{obj_id}': Parameter 'identity' is missing")
        rules.append(AuthzRule(identity, allow=True))
    policy = opts.pop("policy", "deny") if kind == "authz-list" else "deny"
    if policy not in ("allow", "deny"):
        raise ParameterError(f"Parameter 'policy' expects 'allow' or 'deny', got {policy!r}")
    rules.extend(_rules(kind, obj_id, opts))
    _no_more(kind, opts)
    return AuthzList(obj_id, tuple(rules), allow_by_default=policy == "allow")


def _rules(kind: str, obj_id: str, opts: dict[str, str]) -> list[AuthzRule]:
    """``rules.N.match``/``policy``/``format`` options, in N order; consumed from ``opts``."""
    indexed: dict[int, dict[str, str]] = {}
    for key in [k for k in opts if k.startswith("rules.")]:
        _, index, attr = (key.split(".", 2) + ["", ""])[:3]
        if not index.isdigit() or attr not in ("match", "policy", "format"):
            raise ParameterError(f"{kind} '{obj_id}': unknown option {key!r}")
        indexed.setdefault(int(index), {})[attr] = opts.pop(key)
    rules = []
    for number in sorted(indexed):
        rule = indexed[number]
        if "match" not in rule or rule.get("policy") not in ("allow", "deny"):
            raise ParameterError(
                f"{kind} '{obj_id}': rules.{number} needs match= and policy=allow|deny")
        fmt = rule.get("format", "exact")
        if fmt not in ("exact", "glob"):
            raise ParameterError(f"{kind} '{obj_id}': rules.{number}.format expects "
                                 f"'exact' or 'glob', got {fmt!r}")
        rules.append(AuthzRule(rule["match"], rule["policy"] == "allow", fmt == "glob"))
    return rules


def _no_more(kind: str, opts: Mapping[str, str]) -> None:
    if opts:
        raise ParameterError(f"{kind}: unknown option(s) {', '.join(sorted(opts))}")


def distinguished_name(peercert: Mapping[str, object]) -> str:
    """The subject of ``SSLSocket.getpeercert()`` as RFC 4514 text (``CN=...,O=...,C=...``)."""
    # getpeercert()'s subject: a tuple of RDNs, each a tuple of (attribute, value) pairs
    subject = cast("tuple[tuple[tuple[str, str], ...], ...]", peercert.get("subject") or ())
    rdns = []
    for rdn in reversed(tuple(subject)):
        rdns.append("+".join(f"{_SHORT.get(k, k)}={_escape(v)}" for k, v in rdn))
    return ",".join(rdns)


def _escape(value: str) -> str:
    out = "".join("\\" + ch if ch in ',+"\\<>;=' else ch for ch in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


def check_authz(authz: AuthzList | None, sock: ssl.SSLSocket) -> str | None:
    """The peer's distinguished name, or TransportError if ``authz`` refuses it."""
    cert = sock.getpeercert()
    identity = distinguished_name(cert) if cert else None
    if authz is None:
        return identity
    if identity is None:
        raise TransportError(f"TLS client sent no certificate, which tls-authz "
                             f"'{authz.id}' requires")
    if not authz.is_allowed(identity):
        raise TransportError(f"TLS client '{identity}' is not authorized by '{authz.id}'")
    return identity
