"""Checks on the PNG files the plot commands write."""

from __future__ import annotations

import struct
from pathlib import Path

import matplotlib.image

from xbzrle.cli.plot import DPI, HEIGHT_IN, WIDTH_IN


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def assert_valid_png(path: Path) -> None:
    assert png_size(path) == (WIDTH_IN * DPI, HEIGHT_IN * DPI)
    pixels = matplotlib.image.imread(path)  # decodes every row: a truncated file fails
    assert pixels.shape[:2] == (HEIGHT_IN * DPI, WIDTH_IN * DPI)
    assert pixels.std() > 0.05  # something was drawn, not a blank canvas
