"""Sizes: the page size, RAM block limits, and sizes as operators type them.

``PAGE_SIZE`` is the one page size of the package (QEMU's x86 target page,
which its stream format and our compiled core assume).  Sizes are typed as
``256m``, ``1G``, ``1.5k``, ``4096``; the suffixes are QEMU's (``B``, ``K``,
``M``, ``G``, ``T``, ``P``, ``E``, any case, binary: ``1G`` is 2**30 bytes), a
fraction is accepted when it gives a whole number of bytes (``1.5k`` is 1536,
``0.5`` is refused), and sizes stop at QEMU's 2**64 - 1.  One parser serves
the command line, the monitors and the guest.
"""

from __future__ import annotations

import re

from .errors import ParameterError

PAGE_SIZE = 4096
"""Bytes per guest page: QEMU's TARGET_PAGE_SIZE on x86."""
MIN_BLOCK_SIZE = 1 << 20
MAX_BLOCK_SIZE = 16 << 30

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
          "p": 1 << 50, "e": 1 << 60}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:([kmgtpe])(?:i?b)?|(b))?\s*", re.IGNORECASE)
MAX_SIZE = (1 << 64) - 1
"""QEMU's largest size (a uint64_t)."""
SIZE_HINT = "a number with an optional K, M, G, T, P or E suffix"


def parse_size(value: int | str, default_unit: str = "") -> int:
    """Bytes in ``value``: an int, or a string like ``"64M"``, ``"1.5G"``, ``"4096"``.

    A bare number is in ``default_unit`` (bytes unless told otherwise, the way
    ``migrate_set_speed`` reads megabytes).
    """
    if isinstance(value, bool):
        raise ParameterError(f"size {value!r} is not a number of bytes")
    if isinstance(value, int):
        if value < 0:
            raise ParameterError(f"size {value} must not be negative")
        return value
    if not isinstance(value, str):
        raise ParameterError(f"size {value!r} is neither an int nor a string like '256M'")
    match = _SIZE.fullmatch(value)
    if match is None:
        raise ParameterError(f"size {value!r} is not {SIZE_HINT}")
    number, unit, byte_unit = match.groups()
    scale = _UNITS[(unit or byte_unit or default_unit).lower()]
    if "." in number:
        whole, fraction = number.split(".")
        numerator = int(whole + fraction) * scale
        denominator: int = 10 ** len(fraction)  # int ** int is typed Any (a negative power)
        if numerator % denominator:
            raise ParameterError(f"size {value!r} is not a whole number of bytes")
        size = numerator // denominator
    else:
        size = int(number) * scale
    if size > MAX_SIZE:
        raise ParameterError(f"size {value!r} is larger than 16 EiB - 1")
    return size


def format_size(n: int) -> str:
    """Short human form: ``268435456`` -> ``256 MiB``."""
    for unit, name in ((1 << 60, "EiB"), (1 << 50, "PiB"), (1 << 40, "TiB"),
                       (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= unit and n % unit == 0:
            return f"{n // unit} {name}"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    return f"{n} B"


def block_size(value: int | str, name: str = "RAM block") -> int:
    """A RAM block size in bytes, checked: 1 MiB..16 GiB and a whole number of pages."""
    size = parse_size(value)
    if not MIN_BLOCK_SIZE <= size <= MAX_BLOCK_SIZE:
        raise ParameterError(
            f"{name}: size {size} bytes is outside 1 MiB..16 GiB ({value!r})"
        )
    if size % PAGE_SIZE:
        raise ParameterError(f"{name}: size {size} is not a multiple of the {PAGE_SIZE} B page")
    return size
