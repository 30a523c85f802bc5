"""Sizes of guest RAM: the limits of a block (parsing is :mod:`xbzrle.sizes`)."""

from __future__ import annotations

from ..errors import ParameterError
from ..sizes import parse_size

PAGE_SIZE = 4096
MIN_BLOCK_SIZE = 1 << 20
MAX_BLOCK_SIZE = 16 << 30

__all__ = ["MAX_BLOCK_SIZE", "MIN_BLOCK_SIZE", "PAGE_SIZE", "block_size", "parse_size"]

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
