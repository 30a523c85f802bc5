"""The error hierarchy of xbzrle.

Every error the package raises on purpose derives from one root, so callers
can catch ``XbzrleError`` and know it is ours.  As h11 splits local from
remote protocol errors, the tree splits what the *caller* got wrong from
what the *peer* sent::

    XbzrleError
    ├── PeerError                                  bad input from the other side
    │   ├── DecodeError      (also ValueError)     malformed XBZRLE delta or ULEB128
    │   └── StreamError      (also ValueError)     malformed or truncated migration stream
    ├── UsageError                                 the caller's request is refused
    │   ├── ParameterError   (also ValueError)     a bad parameter, size or capability
    │   ├── MigrationStateError                    illegal in the current state
    │   └── CommandError                           a monitor command refused (HMP/QMP)
    ├── TransportError       (also OSError)        the peer vanished or could not be reached
    └── Cancelled                                  the operator cancelled the operation

Peer input errors are ``ValueError`` too, because they are bad values: code
that already catches ``ValueError`` keeps working.  :func:`qmp_class` and
:func:`exit_code` are the one table from an error to what QMP and the
command line report.
"""

from __future__ import annotations


class XbzrleError(Exception):
    """Root of every error raised by xbzrle."""


class PeerError(XbzrleError):
    """Input from a peer (a stream, a delta) that does not hold up."""


class DecodeError(PeerError, ValueError):
    """An XBZRLE delta or ULEB128 number that a strict decoder rejects.

    ``offset`` is the byte offset in the delta where the problem was found;
    ``page``, set only by the batch decoders (``decode_pages``), the index of
    the page whose delta it is.
    """

    page: int  # declared for type checkers; absent unless a batch decoder sets it

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


class StreamError(PeerError, ValueError):
    """A migration stream that does not parse; ``offset`` is its byte offset."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


class UsageError(XbzrleError):
    """A local request that is refused: fix the call, not the peer."""


class ParameterError(UsageError, ValueError):
    """A parameter, size or capability value that is refused."""


class MigrationStateError(UsageError):
    """A request that the migration's (or the VM's) current state does not allow."""


class CommandError(UsageError):
    """A monitor command refused; ``error_class`` is the QMP class to report."""

    def __init__(self, message: str, error_class: str = "GenericError") -> None:
        super().__init__(message)
        self.error_class = error_class


class TransportError(XbzrleError, OSError):
    """A connection that failed, or a peer that vanished mid-migration."""


class Cancelled(XbzrleError):
    """The operator cancelled the operation (``migrate_cancel``, Ctrl-C)."""


EXIT_FAILURE = 1
"""Command-line exit status of a runtime failure (the peer, the network...)."""
EXIT_USAGE = 2
"""Command-line exit status of a refused option or value (argparse's own)."""


def qmp_class(exc: BaseException) -> str:
    """The QMP ``error.class`` for ``exc``: QEMU reports almost all as GenericError."""
    return getattr(exc, "error_class", "GenericError")


def exit_code(exc: BaseException) -> int:
    """The command-line exit status for ``exc``: 2 for a bad value, else 1."""
    return EXIT_USAGE if isinstance(exc, ParameterError) else EXIT_FAILURE
