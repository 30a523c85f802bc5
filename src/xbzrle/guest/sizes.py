"""Sizes of guest RAM: parsing ``"256M"``-style strings and the limits.

Suffixes are binary, as in QEMU (``1G`` is 2**30 bytes).
"""

from __future__ import annotations

import re

from ..errors import ParameterError

PAGE_SIZE = 4096
MIN_BLOCK_SIZE = 1 << 20
MAX_BLOCK_SIZE = 16 << 30

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", re.IGNORECASE)


def parse_size(value: int | str) -> int:
    """Bytes in ``value``: an int, or a string like ``"64M"``, ``"1.5G"``, ``"4096"``."""
    if isinstance(value, bool):
        raise ParameterError(f"size {value!r} is not a number of bytes")
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        raise ParameterError(f"size {value!r} is neither an int nor a string like '256M'")
    match = _SIZE.fullmatch(value)
    if match is None:
        raise ParameterError(f"size {value!r} is not a number with an optional k/M/G/T suffix")
    number, unit = match.groups()
    scale = _UNITS[unit.lower()]
    if "." in number:
        whole, fraction = number.split(".")
        numerator = int(whole + fraction) * scale
        denominator = 10 ** len(fraction)
        if numerator % denominator:
            raise ParameterError(f"size {value!r} is not a whole number of bytes")
        return numerator // denominator
    return int(number) * scale


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
