"""Live migration: source, destination, state machine, parameters, statistics.

The pure modules (params, status, stats, uri, sizes) import without the
compiled core; the I/O ones (source, destination, manager) load it.
"""

from ..transport.uri import MigrationURI, parse_uri
from .params import CAPABILITIES, Parameters, Settings
from .status import MigrationStatus

__all__ = [
    "CAPABILITIES",
    "MigrationManager",
    "MigrationStatus",
    "MigrationURI",
    "Parameters",
    "Settings",
    "parse_uri",
]


def __getattr__(name: str):
    if name == "MigrationManager":
        from .manager import MigrationManager

        return MigrationManager
    raise AttributeError(name)
