"""Behaviour of the XBZRLE codec that callers rely on, for every backend."""

from __future__ import annotations

import mmap
from array import array

import pytest

import xbzrle
from xbzrle import DecodeError
from xbzrle.codec import implementations

IMPLEMENTATIONS = implementations()

# The example of the seed's docs/xbzrle.txt.
SEED_OLD = bytes(1001) + bytes.fromhex("05060708090a0b0c0d0e0f101112136800006b006d") + bytes(3074)
SEED_NEW = bytes(1001) + bytes.fromhex("0102030405060708090a0b0c0d0e0f680000670069") + bytes(3074)
SEED_DELTA = bytes.fromhex("e9070f0102030405060708090a0b0c0d0e0f030167010169")


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def impl(request):
    return IMPLEMENTATIONS[request.param]


def changed(page: bytes, *positions: int) -> bytes:
    out = bytearray(page)
    for pos in positions:
        out[pos] ^= 0xFF
    return bytes(out)


PAGE = bytes(range(256)) * 16


# ---- encoding ----


def test_seed_example_is_byte_exact(impl):
    assert len(SEED_OLD) == len(SEED_NEW) == 4096
    assert impl.encode(SEED_OLD, SEED_NEW) == SEED_DELTA
    assert impl.decode(SEED_DELTA, SEED_OLD) == SEED_NEW


def test_identical_pages_encode_to_nothing(impl):
    assert impl.encode(PAGE, PAGE) == b""
    assert impl.encode(PAGE, PAGE, limit=0) == b""
    assert impl.decode(b"", PAGE) == PAGE


def test_first_zero_run_may_be_empty_and_no_trailing_zero_run(impl):
    new = changed(PAGE, 0)
    assert impl.encode(PAGE, new) == bytes([0, 1, new[0]])
    new = changed(PAGE, 4095)
    assert impl.encode(PAGE, new) == bytes([0xFF, 0x1F, 1, new[4095]])


def test_runs_are_maximal(impl):
    new = changed(PAGE, 10, 11, 12, 20)
    assert impl.encode(PAGE, new) == bytes([10, 3, *new[10:13], 7, 1, new[20]])


@pytest.mark.parametrize("size", [1, 2, 63, 64, 65, 100, 255, 256, 257, 4095, 4097, 16384])
def test_round_trip_on_any_page_size(impl, size):
    old = (PAGE * 5)[:size]
    positions = sorted({0, size // 3, size // 2, size - 1})
    new = changed(old, *positions)
    delta = impl.encode(old, new, limit=10**6)
    assert delta
    assert impl.decode(delta, old) == new


def test_limit_is_the_longest_accepted_encoding(impl):
    new = changed(PAGE, *range(0, 4096, 97))
    delta = impl.encode(PAGE, new, limit=10**9)
    assert impl.encode(PAGE, new, limit=len(delta)) == delta
    assert impl.encode(PAGE, new, limit=len(delta) - 1) is None
    assert impl.encode(PAGE, new, limit=0) is None


def test_default_limit_is_the_page_length(impl):
    every_second = changed(PAGE, *range(0, 4096, 2))  # 3 bytes per 2 page bytes
    assert impl.encode(PAGE, every_second) is None
    everything = bytes(b ^ 1 for b in PAGE)  # empty zero run, one run: 1 + 2 + 4096 bytes
    assert impl.encode(PAGE, everything) is None
    assert impl.encode(PAGE, everything, limit=4098) is None
    assert impl.encode(PAGE, everything, limit=4099) == b"\x00\x80\x20" + everything


def test_runs_longer_than_14_bits_cannot_be_encoded(impl):
    old = bytes(16384)
    assert impl.encode(old, b"\x01" * 16384, limit=10**6) is None
    new = b"\x00" + b"\x01" * 16383
    assert impl.encode(old, new, limit=10**6) == b"\x01\xff\x7f" + new[1:]


def test_limit_must_be_a_non_negative_integer(impl):
    with pytest.raises(ValueError, match="limit"):
        impl.encode(PAGE, PAGE, limit=-1)
    with pytest.raises(TypeError):
        impl.encode(PAGE, PAGE, limit=1.5)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (b"", b"", "page of 0 bytes"),
        (bytes(16385), bytes(16385), "page of 16385 bytes"),
        (bytes(4096), bytes(4095), "differ in length"),
    ],
)
def test_page_size_errors(impl, old, new, message):
    with pytest.raises(ValueError, match=message):
        impl.encode(old, new)


def test_decode_needs_a_page_of_valid_size(impl):
    with pytest.raises(ValueError, match="page of 0 bytes"):
        impl.decode(b"", b"")
    with pytest.raises(ValueError, match="page of 16385 bytes"):
        impl.decode_into(b"", bytearray(16385))


# ---- strict decoding ----

MALFORMED = [
    # (delta, page length, offset, reason)
    (b"\x05", 16, 0, "truncated zero run length"),
    (b"\x00\x01\xaa\x01", 16, 3, "truncated zero run length"),
    (b"\x80\x80\x01\x01\xaa", 16, 0, "zero run length over two bytes"),
    (b"\x00\x01\xaa\x00\x01\xbb", 16, 3, "zero run of length 0 (only the first run may be empty)"),
    (b"\x00\x01\xaa\x80\x00\x01\xbb", 16, 3, "zero run of length 0"),
    (b"\x11\x01\xaa", 16, 0, "zero run past the page end"),
    (b"\x10\x01\xaa", 16, 1, "non-zero run past the page end"),
    (b"\x05\x01", 16, 1, "truncated non-zero run length"),
    (b"\x10", 16, 0, "truncated zero run length"),
    (b"\x00\x80\x80", 16, 1, "non-zero run length over two bytes"),
    (b"\x00\x00\xaa", 16, 1, "non-zero run of length 0"),
    (b"\x0f\x02\xaa\xbb", 16, 1, "non-zero run past the page end"),
    (b"\x00\x03\xaa\xbb", 16, 1, "non-zero run data past the end of the delta"),
    (b"\x00\x01\xaa\x01\x01", 16, 4, "truncated non-zero run length"),
]


@pytest.mark.parametrize(("delta", "page_len", "offset", "reason"), MALFORMED)
def test_malformed_deltas_raise_decode_error_naming_offset_and_reason(
    impl, delta, page_len, offset, reason
):
    page = bytearray(range(page_len))
    with pytest.raises(DecodeError) as caught:
        impl.decode_into(delta, page)
    assert caught.value.offset == offset
    assert str(caught.value).startswith(f"XBZRLE delta at offset {offset}: ")
    assert reason in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert page == bytearray(range(page_len))  # nothing written


def test_decoder_accepts_what_qemu_accepts(impl):
    page = bytes(16)
    assert impl.decode(b"\x80\x00\x01\xaa", page) == b"\xaa" + bytes(15)  # 2-byte zero length
    assert impl.decode(b"\x00\x81\x00\xaa", page) == b"\xaa" + bytes(15)  # 2-byte length 1
    assert impl.decode(b"\x0f\x01\xaa", page) == bytes(15) + b"\xaa"  # up to the last byte
    assert impl.decode(b"\x00\x01\xaa\x01\x01\xbb", page) == b"\xaa\x00\xbb" + bytes(13)


def test_no_partial_write_when_a_later_run_is_bad(impl):
    page = bytearray(PAGE)
    with pytest.raises(DecodeError):
        impl.decode_into(b"\x00\x02\x01\x02\x05\x01\x03\x00\x01\x07", page)
    assert page == PAGE


def test_decode_into_refuses_read_only_pages(impl):
    with pytest.raises(TypeError):
        impl.decode_into(b"", bytes(64))
    with pytest.raises(TypeError):
        impl.decode_into(b"", memoryview(bytes(64)))


def test_decoding_stays_inside_the_page(impl):
    backing = bytearray(4096 + 64)
    backing[4096:] = b"\xcc" * 64
    page = memoryview(backing)[:4096]
    impl.decode_into(b"\xff\x1f\x01\x11", page)  # writes the very last byte
    assert backing[4095] == 0x11
    with pytest.raises(DecodeError):
        impl.decode_into(b"\xff\x1f\x02\x11\x22", page)  # one byte past the end
    assert backing[4096:] == b"\xcc" * 64


# ---- buffer kinds ----


def buffer_kinds(data: bytes):
    np = pytest.importorskip("numpy")
    mapped = mmap.mmap(-1, len(data))
    mapped.write(data)
    return [
        bytes(data),
        bytearray(data),
        memoryview(bytearray(data)),
        mapped,
        np.frombuffer(data, dtype=np.uint8).copy(),
        np.frombuffer(data, dtype=np.uint32).copy().reshape(16, -1),
    ]


def test_every_buffer_kind_is_accepted(impl):
    new = changed(PAGE, 5, 3000)
    delta = impl.encode(PAGE, new)
    for old_buf, new_buf in zip(buffer_kinds(PAGE), buffer_kinds(new), strict=True):
        assert impl.encode(old_buf, new_buf) == delta
        assert impl.decode(memoryview(delta), old_buf) == new
        if not isinstance(old_buf, bytes):
            impl.decode_into(delta, old_buf)
            assert bytes(memoryview(old_buf).cast("B")) == new
        assert impl.is_zero(new_buf) is False


def test_is_zero(impl):
    assert impl.is_zero(bytes(4096)) is True
    assert impl.is_zero(b"") is True
    for size in (1, 100, 4096, 4099):
        for pos in {0, size // 2, size - 1}:
            assert impl.is_zero(changed(bytes(size), pos)) is False


# ---- batches ----


def page_set():
    """Five pages: unchanged, sparse, overflow, first byte, last byte."""
    old = PAGE * 5
    new = bytearray(old)
    new[4096 + 100] ^= 1
    new[4096 + 2000 : 4096 + 2010] = bytes(10)
    new[2 * 4096 : 3 * 4096 : 2] = bytes(b ^ 0x55 for b in old[2 * 4096 : 3 * 4096 : 2])
    new[3 * 4096] ^= 0x80
    new[5 * 4096 - 1] ^= 0x80
    return old, bytes(new)


def test_encode_pages_reports_each_page(impl):
    old, new = page_set()
    deltas, lengths = impl.encode_pages(old, new)
    assert isinstance(lengths, array) and lengths.typecode == "i"
    singles = [impl.encode(old[p : p + 4096], new[p : p + 4096]) for p in range(0, len(old), 4096)]
    assert list(lengths) == [-1 if d is None else len(d) for d in singles]
    assert lengths[0] == 0 and lengths[2] == -1
    assert deltas == b"".join(d for d in singles if d)


@pytest.mark.parametrize("kind", ["array", "list", "tuple", "numpy64", "numpy32"])
def test_decode_pages_round_trip(impl, kind):
    old, new = page_set()
    deltas, lengths = impl.encode_pages(old, new)
    if kind.startswith("numpy"):
        np = pytest.importorskip("numpy")
        lengths = np.array(lengths, dtype=np.int64 if kind == "numpy64" else np.int32)
    elif kind != "array":
        lengths = {"list": list, "tuple": tuple}[kind](lengths)
    pages = bytearray(old)
    impl.decode_pages(deltas, lengths, pages)
    expected = bytearray(new)
    expected[2 * 4096 : 3 * 4096] = old[2 * 4096 : 3 * 4096]  # overflow: left alone
    assert pages == expected


def test_decode_pages_validates_everything_before_writing(impl):
    old, new = page_set()
    deltas, lengths = impl.encode_pages(old, new)
    bad = bytearray(deltas)
    bad[-2] = 0  # the last page's non-zero run length becomes 0
    pages = bytearray(old)
    with pytest.raises(DecodeError) as caught:
        impl.decode_pages(bytes(bad), lengths, pages)
    assert caught.value.page == 4
    assert str(caught.value).startswith(f"XBZRLE delta of page 4 at offset {caught.value.offset}:")
    assert "non-zero run of length 0" in str(caught.value)
    assert pages == old


@pytest.mark.parametrize(
    ("lengths", "message"),
    [([0, 0], "2 lengths for 3 pages"), ([0, -2, 0], "lengths\\[1\\] is -2"),
     ([0, 3, 0], "lengths\\[1\\] is 3 but only 0 bytes of deltas remain")],
)
def test_decode_pages_checks_lengths(impl, lengths, message):
    with pytest.raises(ValueError, match=message):
        impl.decode_pages(b"", lengths, bytearray(3 * 4096))


def test_batches_need_whole_pages_of_a_valid_size(impl):
    with pytest.raises(ValueError, match="whole pages"):
        impl.encode_pages(bytes(5000), bytes(5000))
    with pytest.raises(ValueError, match="page_size of 16385"):
        impl.encode_pages(bytes(16385), bytes(16385), page_size=16385)
    with pytest.raises(ValueError, match="page_size of 0"):
        impl.decode_pages(b"", [], bytearray(), page_size=0)
    with pytest.raises(ValueError, match="differ in length"):
        impl.encode_pages(bytes(4096), bytes(8192))
    with pytest.raises(TypeError):
        impl.decode_pages(b"", [0], bytes(4096))
    deltas, lengths = impl.encode_pages(b"", b"")
    assert deltas == b"" and list(lengths) == []


def test_batches_with_small_pages(impl):
    old = PAGE
    new = changed(PAGE, *range(0, 4096, 33))
    deltas, lengths = impl.encode_pages(old, new, page_size=64)
    assert len(lengths) == 64
    pages = bytearray(old)
    impl.decode_pages(deltas, lengths, pages, page_size=64)
    assert pages == new


# ---- ULEB128 ----

ULEB_KNOWN = [
    (0, "00"),
    (1, "01"),
    (127, "7f"),
    (128, "8001"),
    (1001, "e907"),
    (16383, "ff7f"),
    (16384, "808001"),
    (2**63, "80808080808080808001"),
    (2**64 - 1, "ffffffffffffffffff01"),
]


@pytest.mark.parametrize(("value", "encoded"), ULEB_KNOWN)
def test_uleb128_known_values(impl, value, encoded):
    assert impl.uleb128_encode(value) == bytes.fromhex(encoded)
    data = b"\xaa" + bytes.fromhex(encoded) + b"\xbb"
    assert impl.uleb128_decode(data, 1) == (value, 1 + len(encoded) // 2)


def test_uleb128_refuses_values_it_cannot_hold(impl):
    with pytest.raises(ValueError, match="non-negative"):
        impl.uleb128_encode(-1)
    with pytest.raises(ValueError, match="64 bits"):
        impl.uleb128_encode(2**64)
    with pytest.raises(TypeError):
        impl.uleb128_encode(1.0)


@pytest.mark.parametrize(
    ("data", "pos", "message"),
    [
        (b"", 0, "truncated"),
        (b"\x80\x80", 0, "truncated"),
        (b"\x01\xff", 1, "truncated"),
        (bytes.fromhex("ffffffffffffffffff02"), 0, "value over 64 bits"),
        (bytes.fromhex("ffffffffffffffffff8101"), 0, "value over 64 bits"),
    ],
)
def test_uleb128_decode_errors(impl, data, pos, message):
    with pytest.raises(DecodeError, match=f"ULEB128 at offset {pos}: {message}") as caught:
        impl.uleb128_decode(data, pos)
    assert caught.value.offset == pos


def test_uleb128_decode_position_must_be_inside(impl):
    with pytest.raises(ValueError, match="outside"):
        impl.uleb128_decode(b"\x01", 2)
    with pytest.raises(ValueError, match="outside"):
        impl.uleb128_decode(b"\x01", -1)


# ---- the package surface ----


def test_package_exports_the_live_codec():
    assert xbzrle.encode(SEED_OLD, SEED_NEW) == SEED_DELTA
    assert xbzrle.backend == xbzrle.codec.current_backend()
    assert xbzrle.backend == "python" or xbzrle.backend.startswith("c/")
    for name in ("encode", "decode", "decode_into", "encode_pages", "decode_pages",
                 "uleb128_encode", "uleb128_decode", "backend"):
        assert name in xbzrle.__all__


def test_compiled_core_refuses_a_page_that_shares_memory_with_its_delta():
    core = IMPLEMENTATIONS.get("c") or pytest.skip("no compiled core")
    page = bytearray(64)
    with pytest.raises(ValueError, match="share memory"):
        core.decode_into(memoryview(page)[:4], memoryview(page))
