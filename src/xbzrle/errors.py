"""The error hierarchy of xbzrle.

Every error the package raises on purpose derives from one root, so callers
can catch ``XbzrleError`` and know it is ours::

    XbzrleError
    ├── DecodeError          (also ValueError)  malformed XBZRLE delta or ULEB128
    ├── StreamError          (also ValueError)  malformed or truncated migration stream
    ├── ParameterError       (also ValueError)  a bad parameter, size or capability
    ├── MigrationStateError                     the request is illegal in the current state
    └── TransportError       (also OSError)     the peer vanished or could not be reached

Peer input errors are ``ValueError`` too, because they are bad values: code
that already catches ``ValueError`` keeps working.
"""

from __future__ import annotations


class XbzrleError(Exception):
    """Root of every error raised by xbzrle."""


class DecodeError(XbzrleError, ValueError):
    """An XBZRLE delta or ULEB128 number that a strict decoder rejects.

    ``offset`` is the byte offset in the delta where the problem was found.
    """

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


class StreamError(XbzrleError, ValueError):
    """A migration stream that does not parse; ``offset`` is its byte offset."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


class ParameterError(XbzrleError, ValueError):
    """A parameter, size or capability value that is refused."""


class MigrationStateError(XbzrleError):
    """A request that the migration's current state does not allow."""


class TransportError(XbzrleError, OSError):
    """A connection that failed, or a peer that vanished mid-migration."""
