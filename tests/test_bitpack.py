"""Bit-packing: exact sizes ceil(n*b/8), round trips for every width, documented bit order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed import bitpack


@settings(max_examples=300, deadline=None)
@given(bits=st.integers(1, 16), data=st.data())
def test_round_trip_and_exact_size(bits: int, data) -> None:
    n = data.draw(st.integers(0, 300))
    values = np.array(data.draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=n, max_size=n)), dtype=np.uint16)
    packed = bitpack.pack(values, bits)
    assert len(packed) == (n * bits + 7) // 8 == bitpack.packed_nbytes(n, bits)
    np.testing.assert_array_equal(bitpack.unpack(packed, n, bits), values)


def reference_pack(values: list[int], bits: int) -> bytes:
    """The documented bit order, one Python integer at a time: value i at bits [i*b, (i+1)*b)."""
    stream = sum(v << (i * bits) for i, v in enumerate(values))
    return stream.to_bytes((len(values) * bits + 7) // 8, "little")


@settings(max_examples=300, deadline=None)
@given(bits=st.integers(1, 16), data=st.data())
def test_matches_the_reference_bit_order(bits: int, data) -> None:
    values = data.draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=40))
    assert bitpack.pack(np.array(values, dtype=np.uint16), bits) == reference_pack(values, bits)


@pytest.mark.parametrize("bits", range(1, 17))
def test_large_random_round_trip(bits: int) -> None:
    rng = np.random.default_rng(bits)
    values = rng.integers(0, 1 << bits, size=10_007, dtype=np.uint32).astype(np.uint16)
    packed = bitpack.pack(values, bits)
    assert len(packed) == -(-10_007 * bits // 8)
    np.testing.assert_array_equal(bitpack.unpack(packed, 10_007, bits), values)


def test_bit_order_is_little_endian() -> None:
    # value i occupies bits [i*b, (i+1)*b), least significant bit first
    assert bitpack.pack(np.array([1, 0, 0, 0, 0, 0, 0, 1]), 1) == bytes([0b10000001])
    assert bitpack.pack(np.array([0b101, 0b011]), 3) == bytes([0b011101])
    assert bitpack.pack(np.array([0x1234]), 16) == b"\x34\x12"
    assert bitpack.pack(np.array([0x3, 0xA]), 4) == bytes([0xA3])


@pytest.mark.parametrize("bits", [0, 17])
def test_bad_width_is_refused(bits: int) -> None:
    with pytest.raises(ValueError, match="bit width"):
        bitpack.pack(np.zeros(3, np.uint16), bits)
    with pytest.raises(ValueError, match="bit width"):
        bitpack.unpack(b"\x00", 1, bits)


def test_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot hold exactly"):
        bitpack.unpack(b"\x00\x00\x00", 3, 3)  # 9 bits need 2 bytes, not 3
    with pytest.raises(ValueError, match="cannot hold exactly"):
        bitpack.unpack(b"\x00", 3, 3)


# ---- varints ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=20))
def test_varints_round_trip_and_length(values: list[int]) -> None:
    buf = bitpack.varints(values)
    assert len(buf) == sum(max(1, -(-v.bit_length() // 7)) for v in values)  # 7 bits a byte
    assert bitpack.read_varints(buf, 0, len(values)) == (values, len(buf))


def test_varint_layout_is_leb128() -> None:
    assert bitpack.varints([0, 1, 127, 128, 300]) == bytes([0x00, 0x01, 0x7F, 0x80, 0x01, 0xAC, 0x02])
    assert bitpack.read_varints(b"\x05\xac\x02\x07", 1, 2) == ([300, 7], 4)


def test_bad_varints_are_varint_errors() -> None:
    with pytest.raises(bitpack.VarintError, match="truncated"):
        bitpack.read_varints(b"\x80\x80", 0, 1)
    with pytest.raises(bitpack.VarintError, match="truncated"):
        bitpack.read_varints(b"\x01", 0, 2)
    with pytest.raises(bitpack.VarintError, match="longer than 10 bytes"):
        bitpack.read_varints(b"\xff" * 11 + b"\x01", 0, 1)
    with pytest.raises(ValueError, match="unsigned"):
        bitpack.varints([-1])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60), st.integers(0, 62), st.integers(0, 40))
def test_the_vectorised_varint_reader_agrees_with_the_loop_on_any_bytes(buf: bytes, pos: int, count: int) -> None:
    def outcome(read):
        try:
            values, end = read(buf, pos, count)
            return [int(v) for v in values], end
        except bitpack.VarintError as exc:
            return str(exc)

    assert outcome(bitpack.read_varint_array) == outcome(bitpack.read_varints)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=40))
def test_the_vectorised_varint_reader_reads_what_varints_wrote(values: list[int]) -> None:
    read, end = bitpack.read_varint_array(bitpack.varints(values), 0, len(values))
    assert [int(v) for v in read] == values and end == len(bitpack.varints(values))
