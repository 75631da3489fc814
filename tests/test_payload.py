"""Payload wire format: round trips, exact sizes, detected damage to protected parts."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.payload import (
    FORMAT_BYTES,
    FORMAT_F16,
    FORMAT_F32,
    Payload,
    PayloadError,
    Segment,
    float_array,
    format_bits,
    packed_format,
)

formats = st.sampled_from([FORMAT_BYTES, FORMAT_F32, FORMAT_F16, *(packed_format(b) for b in range(1, 17))])
names = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=20).filter(
    lambda s: 0 < len(s.encode("utf-8")) <= 255
)
segment_lists = st.lists(
    st.builds(Segment, name=names, data=st.binary(max_size=300), protected=st.booleans(), fmt=formats),
    max_size=8,
    unique_by=lambda s: s.name,
)


def sample() -> Payload:
    return Payload(
        [
            Segment("conv.weight", np.arange(12, dtype="<f4").tobytes(), False, FORMAT_F32),
            Segment("conv.weight/q", b"side-information", True),
            Segment("fc.bias", bytes(range(40)), False, packed_format(5)),
            Segment("fc.bias/q", b"\x01\x02\x03\x04", True),
        ]
    )


@settings(max_examples=200, deadline=None)
@given(segment_lists)
def test_round_trip_and_exact_size(segments: list[Segment]) -> None:
    payload = Payload(segments)
    wire = payload.to_bytes()
    assert payload.nbytes == len(wire)
    assert payload.protected_nbytes + payload.exposed_nbytes == payload.nbytes
    assert payload.exposed_nbytes == sum(s.nbytes for s in segments if not s.protected)
    back = Payload.from_bytes(wire)
    assert back.segments == segments


def test_breakdown_sums_to_size() -> None:
    payload = sample()
    assert sum(row["bytes"] for row in payload.breakdown()) == payload.nbytes
    assert payload.framing_nbytes == len(payload.header_bytes()) + 4


def test_empty_payload() -> None:
    payload = Payload([])
    assert Payload.from_bytes(payload.to_bytes()).segments == []
    assert payload.nbytes == len(payload.to_bytes()) == 4 + 1 + 4 + 4


@pytest.mark.parametrize("cut", [0, 3, 5, 20, -5, -1])
def test_truncated_is_a_payload_error(cut: int) -> None:
    wire = sample().to_bytes()
    with pytest.raises(PayloadError):
        Payload.from_bytes(wire[:cut])


def test_truncation_inside_data_names_the_segment_or_trailer() -> None:
    wire = sample().to_bytes()
    header = len(sample().header_bytes())
    with pytest.raises(PayloadError) as info:
        Payload.from_bytes(wire[: header + 10])
    assert info.value.segment == "conv.weight"
    with pytest.raises(PayloadError) as info:
        Payload.from_bytes(wire[:-2])
    assert info.value.segment == "trailer"


def test_bad_magic() -> None:
    wire = bytearray(sample().to_bytes())
    wire[0] ^= 0xFF
    with pytest.raises(PayloadError) as info:
        Payload.from_bytes(bytes(wire))
    assert info.value.segment == "header"


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_corrupted_header_is_detected(data) -> None:
    payload = sample()
    wire = bytearray(payload.to_bytes())
    header = len(payload.header_bytes())
    position = data.draw(st.integers(4, header - 1))
    wire[position] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(PayloadError) as info:
        Payload.from_bytes(bytes(wire))
    assert info.value.segment in {"header", "trailer"} or info.value.segment in payload.names()


def offsets(payload: Payload) -> dict[str, int]:
    pos, out = len(payload.header_bytes()), {}
    for s in payload.segments:
        out[s.name] = pos
        pos += s.nbytes
    return out


@pytest.mark.parametrize("name", ["conv.weight/q", "fc.bias/q"])
def test_corrupted_protected_segment_is_detected(name: str) -> None:
    payload = sample()
    wire = bytearray(payload.to_bytes())
    wire[offsets(payload)[name] + 1] ^= 0x10
    with pytest.raises(PayloadError, match="protected") as info:
        Payload.from_bytes(bytes(wire))
    assert info.value.segment == "trailer"
    assert "checksum" in str(info.value)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_corrupted_exposed_data_decodes(data) -> None:
    payload = sample()
    wire = bytearray(payload.to_bytes())
    name = data.draw(st.sampled_from(["conv.weight", "fc.bias"]))
    start = offsets(payload)[name]
    position = data.draw(st.integers(start, start + payload[name].nbytes - 1))
    wire[position] ^= 1 << data.draw(st.integers(0, 7))
    back = Payload.from_bytes(bytes(wire))
    assert back.names() == payload.names()
    assert back[name].data != payload[name].data
    assert back["conv.weight/q"] == payload["conv.weight/q"]
    assert len(float_array(back["conv.weight"], 12)) == 12


def test_checksums_are_crc32() -> None:
    payload = sample()
    wire = payload.to_bytes()
    protected = b"".join(s.data for s in payload.segments if s.protected)
    assert int.from_bytes(wire[-4:], "little") == zlib.crc32(protected)


def test_segment_lookup_and_validation() -> None:
    payload = sample()
    with pytest.raises(PayloadError) as info:
        payload["missing"]
    assert info.value.segment == "missing"
    assert "fc.bias" in payload and payload.get("nope") is None
    with pytest.raises(ValueError):
        Payload([Segment("a", b"", True), Segment("a", b"", False)])
    with pytest.raises(ValueError):
        Segment("", b"", True)
    with pytest.raises(ValueError):
        Segment("x", b"", True, fmt=99)
    assert format_bits(packed_format(7)) == 7 and format_bits(FORMAT_F32) is None


def test_float_array_checks_count_and_format() -> None:
    seg = Segment("w", np.ones(4, "<f2").tobytes(), False, FORMAT_F16)
    np.testing.assert_array_equal(float_array(seg, 4), np.ones(4, np.float32))
    with pytest.raises(PayloadError, match="expected 10"):
        float_array(seg, 5)
    with pytest.raises(PayloadError, match="expected float"):
        float_array(Segment("w", b"ab", False, FORMAT_BYTES), 1)
