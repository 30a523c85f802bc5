"""Live migration: source, destination, state machine, parameters, statistics.

The pure modules (params, status, stats, uri, sizes) import without the
compiled core; the I/O ones (source, destination, manager) load it.
"""

from typing import TYPE_CHECKING

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


if TYPE_CHECKING:  # loaded lazily at run time (it needs the compiled core)
    from .manager import MigrationManager


def __getattr__(name: str) -> object:
    if name == "MigrationManager":
        from .manager import MigrationManager

        return MigrationManager
    raise AttributeError(name)
