"""Size strings as operators type them: ``256m``, ``1G``, ``4096``."""

from __future__ import annotations

from ..errors import ParameterError

_SUFFIXES = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str | int, default_unit: str = "") -> int:
    """Parse ``512``, ``64k``, ``256M``, ``1g``, ``2T`` (binary units) into bytes.

    A bare number is in ``default_unit`` (bytes unless told otherwise, the way
    QEMU's ``migrate_set_cache_size`` reads it).
    """
    if isinstance(text, bool):
        raise ParameterError(f"invalid size {text!r}")
    if isinstance(text, int):
        value = text
    else:
        s = str(text).strip().lower()
        if s.endswith("ib"):
            s = s[:-2]
        unit = s[-1:] if s[-1:] in _SUFFIXES and not s[-1:].isdigit() else default_unit
        digits = s[:-1] if s[-1:] in _SUFFIXES and not s[-1:].isdigit() else s
        try:
            number = float(digits) if "." in digits else int(digits, 10)
        except ValueError:
            raise ParameterError(
                f"invalid size {text!r}: expected a number with an optional k/m/g/t suffix"
            ) from None
        value = int(number * _SUFFIXES[unit])
    if value < 0:
        raise ParameterError(f"invalid size {text!r}: must not be negative")
    return value


def format_size(n: int) -> str:
    """Short human form: ``268435456`` -> ``256 MiB``."""
    for unit, name in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= unit and n % unit == 0:
            return f"{n // unit} {name}"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    return f"{n} B"
