"""Who may migrate: the process's TLS objects and what each side demands of a connection.

``--object tls-creds-x509,...`` and ``--object authz-list,...`` (QEMU's
syntax) land in an :class:`ObjectRegistry`; the migration parameters
``tls-creds``, ``tls-hostname``, ``tls-authz``, ``x-handshake-timeout`` and
``x-stall-timeout`` pick from it when a migration starts:

- the source connects over TLS with the ``endpoint=client`` credentials and
  fails a write that makes no progress for ``x-stall-timeout`` ms;
- the destination admits a connection only after its TLS handshake (with
  the ``endpoint=server`` credentials), its client certificate passing
  ``tls-authz`` and a valid stream header, all within
  ``x-handshake-timeout`` ms; anything else is refused and the listener
  waits on for the real source.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

from ..errors import ParameterError
from ..stream.parser import HEADER_SIZE, header_problem
from ..transport.connect import Admission, ConnectOptions
from ..transport.tls import AuthzList, TlsCredsX509, TlsObject, object_from_options
from .params import Parameters


class ObjectRegistry:
    """The ``--object``\\ s of one process, by id."""

    def __init__(self) -> None:
        self._objects: dict[str, TlsObject] = {}

    def add(self, spec: str | TlsObject) -> TlsObject:
        """Add an object from QEMU's option text (or built already); ids are unique."""
        obj = object_from_options(spec) if isinstance(spec, str) else spec
        if obj.id in self._objects:
            raise ParameterError(f"an object with id '{obj.id}' already exists")
        if isinstance(obj, TlsCredsX509):
            obj.context()  # unreadable certificates fail here, not at migration time
        self._objects[obj.id] = obj
        return obj

    def __contains__(self, obj_id: str) -> bool:
        return obj_id in self._objects

    def creds(self, obj_id: str, endpoint: str) -> ssl.SSLContext:
        obj = self._objects.get(obj_id)
        if not isinstance(obj, TlsCredsX509):
            raise ParameterError(f"No TLS credentials with id '{obj_id}'")
        if obj.endpoint != endpoint:
            raise ParameterError(
                f"Expected TLS credentials for a {endpoint} endpoint ('{obj_id}' is "
                f"endpoint={obj.endpoint})")
        return obj.context()

    def authz(self, obj_id: str) -> AuthzList:
        obj = self._objects.get(obj_id)
        if not isinstance(obj, AuthzList):
            raise ParameterError(f"No authorization object with id '{obj_id}'")
        return obj


def _seconds(ms: int) -> float | None:
    return ms / 1000 if ms else None


def source_transport(objects: ObjectRegistry, params: Parameters) -> ConnectOptions:
    """Keyword arguments for :func:`xbzrle.transport.connect` from the parameters."""
    tls = objects.creds(params.tls_creds, "client") if params.tls_creds else None
    return {"tls": tls, "tls_hostname": params.tls_hostname,
            "stall_timeout": _seconds(params.x_stall_timeout)}


def admission(objects: ObjectRegistry, params: Parameters,
              on_refused: Callable[[str], None] | None = None) -> Admission:
    """What the destination demands of an incoming connection."""
    if params.tls_authz and not params.tls_creds:
        raise ParameterError("tls-authz needs tls-creds: only a TLS client has an identity")
    return Admission(
        timeout=_seconds(params.x_handshake_timeout),
        tls=objects.creds(params.tls_creds, "server") if params.tls_creds else None,
        authz=objects.authz(params.tls_authz) if params.tls_authz else None,
        prefix_size=HEADER_SIZE, check=header_problem, on_refused=on_refused)
