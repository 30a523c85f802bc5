"""Which QEMU this process speaks like (QMP greeting, ``query-version``, ``info version``)."""

from __future__ import annotations

#: The QEMU release whose monitors we imitate.
QEMU_VERSION = {"micro": 0, "minor": 2, "major": 7}


def package_version() -> str:
    """``"xbzrle X.Y"``: the ``package`` string of QMP's version replies."""
    from .. import __version__

    return f"xbzrle {__version__}"
