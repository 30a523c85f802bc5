"""Sizes as QEMU reads them: every suffix, fractions that give whole bytes, 64-bit cap."""

import pytest

from xbzrle.errors import ParameterError
from xbzrle.sizes import MAX_SIZE, format_size, parse_size


@pytest.mark.parametrize(("text", "expected"), [
    ("1b", 1), ("1B", 1), ("2K", 2 << 10), ("3M", 3 << 20), ("4G", 4 << 30), ("5T", 5 << 40),
    ("6P", 6 << 50), ("7E", 7 << 60), ("1.5k", 1536), ("0.5M", 512 << 10), ("1.25G", 5 << 28),
    ("15.999999999999999999E", None), ("64MiB", 64 << 20), ("2kb", 2048),
])
def test_qemu_suffixes_and_fractions(text, expected):
    if expected is None:  # a fraction of a byte is refused, not rounded
        with pytest.raises(ParameterError, match="whole number of bytes"):
            parse_size(text)
    else:
        assert parse_size(text) == expected


def test_sizes_stop_at_qemus_uint64():
    assert parse_size("15E") == 15 << 60
    assert parse_size(str(MAX_SIZE)) == MAX_SIZE
    with pytest.raises(ParameterError, match="larger"):
        parse_size("16E")


@pytest.mark.parametrize("text", ["1.5", "0.1k", "1x", "1KK", "E", "1.k"])
def test_malformed_sizes(text):
    with pytest.raises(ParameterError):
        parse_size(text)


def test_format_size_large_units():
    assert format_size(2 << 50) == "2 PiB"
    assert format_size(1 << 60) == "1 EiB"
