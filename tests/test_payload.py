"""Payload wire format: round trips, exact sizes, the schema, detected damage to protected parts."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.bitpack import varints
from testbed.payload import (
    FORMAT_BYTES,
    FORMAT_F16,
    FORMAT_F32,
    Payload,
    PayloadError,
    PayloadSchema,
    Segment,
    SegmentSpec,
    expect_nbytes,
    float_array,
    format_bits,
    is_float_format,
    packed_format,
)

formats = st.sampled_from([FORMAT_BYTES, FORMAT_F32, FORMAT_F16, *(packed_format(b) for b in range(1, 17))])
names = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=20)
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


# A schema leaving open what a strategy's can: a stream's form and length, a histogram's
# length, an optional segment of known size and one of open size.
OPEN_SCHEMA = PayloadSchema(
    (
        SegmentSpec("w", FORMAT_F32, False, 16),
        SegmentSpec("s", None, None, None),
        SegmentSpec("s/q", FORMAT_BYTES, True, None),
        SegmentSpec("maybe", FORMAT_F16, False, 4, optional=True),
        SegmentSpec("maybe/open", FORMAT_BYTES, True, None, optional=True),
    ),
    identity="test schema",
)


def open_payload(stream: bytes = b"stream", form=(FORMAT_BYTES, True), maybe=True, maybe_open=b"xyz") -> Payload:
    segments = [
        Segment("w", np.arange(4, dtype="<f4").tobytes(), False, FORMAT_F32),
        Segment("s", stream, form[1], form[0]),
        Segment("s/q", b"histogram", True),
    ]
    if maybe:
        segments.append(Segment("maybe", b"\x00\x3c\x00\x40", False, FORMAT_F16))
    if maybe_open is not None:
        segments.append(Segment("maybe/open", maybe_open, True))
    return Payload(segments, OPEN_SCHEMA)


@settings(max_examples=200, deadline=None)
@given(segment_lists)
def test_round_trip_and_exact_size(segments: list[Segment]) -> None:
    payload = Payload(segments)
    wire = payload.to_bytes()
    assert payload.nbytes == len(wire)
    assert payload.protected_nbytes + payload.exposed_nbytes == payload.nbytes
    assert payload.exposed_nbytes == sum(s.nbytes for s in segments if not s.protected)
    assert payload.framing_nbytes == 1 + 4 + 4  # everything is fixed by a hand-built payload's own schema
    back = Payload.from_bytes(wire, payload.schema)
    assert back.segments == segments and back == payload


@settings(max_examples=200, deadline=None)
@given(
    stream=st.binary(max_size=300),
    form=st.tuples(formats, st.booleans()),
    maybe=st.booleans(),
    maybe_open=st.none() | st.binary(max_size=200),
)
def test_open_fields_round_trip(stream, form, maybe, maybe_open) -> None:
    payload = open_payload(stream, form, maybe, maybe_open)
    wire = payload.to_bytes()
    assert len(wire) == payload.nbytes
    # the documented header: version, fingerprint, then what the schema leaves open, in order
    expected_header = (
        bytes([2])
        + OPEN_SCHEMA.fingerprint
        + varints([len(stream)])
        + bytes([form[0] | (0x80 if form[1] else 0)])
        + varints([len(b"histogram")])
        + varints([1 + 4 if maybe else 0])
        + varints([0 if maybe_open is None else 1 + len(maybe_open)])
    )
    assert payload.header_bytes() == expected_header and wire.startswith(expected_header)
    assert payload.framing_nbytes == len(expected_header) + 4
    assert Payload.from_bytes(wire, OPEN_SCHEMA) == payload


def test_breakdown_sums_to_size() -> None:
    payload = sample()
    assert sum(row["bytes"] for row in payload.breakdown()) == payload.nbytes
    assert payload.breakdown()[0] == {"name": "framing", "bytes": payload.framing_nbytes, "protected": True}
    assert payload.framing_nbytes == len(payload.header_bytes()) + 4


def test_empty_payload() -> None:
    payload = Payload([])
    assert Payload.from_bytes(payload.to_bytes(), payload.schema).segments == []
    assert payload.nbytes == len(payload.to_bytes()) == 1 + 4 + 4


def test_names_are_not_on_the_wire() -> None:
    payload = sample()
    wire = payload.to_bytes()
    assert b"conv.weight" not in wire and payload.framing_nbytes == 9


@pytest.mark.parametrize("cut", [0, 3, 5, 20, -5, -1])
def test_truncated_is_a_payload_error(cut: int) -> None:
    payload = sample()
    with pytest.raises(PayloadError):
        Payload.from_bytes(payload.to_bytes()[:cut], payload.schema)


def test_truncation_inside_data_names_the_segment_or_trailer() -> None:
    payload = sample()
    wire = payload.to_bytes()
    header = len(payload.header_bytes())
    with pytest.raises(PayloadError) as info:
        Payload.from_bytes(wire[: header + 10], payload.schema)
    assert info.value.segment == "conv.weight"
    with pytest.raises(PayloadError) as info:
        Payload.from_bytes(wire[:-2], payload.schema)
    assert info.value.segment == "fc.bias/q"
    with pytest.raises(PayloadError) as info:
        Payload.from_bytes(wire + b"\x00", payload.schema)
    assert info.value.segment == "trailer"


def test_bad_version() -> None:
    payload = sample()
    wire = bytearray(payload.to_bytes())
    wire[0] ^= 0xFF
    with pytest.raises(PayloadError, match="version") as info:
        Payload.from_bytes(bytes(wire), payload.schema)
    assert info.value.segment == "header"


def test_a_payload_of_another_schema_is_refused_by_the_fingerprint() -> None:
    payload = sample()
    other = PayloadSchema(payload.schema.specs, identity="another strategy")
    assert other.fingerprint != payload.schema.fingerprint
    with pytest.raises(PayloadError, match="fingerprint") as info:
        Payload.from_bytes(payload.to_bytes(), other)
    assert info.value.segment == "header"
    # the same bytes sizes under other names, formats or protection are another schema too
    renamed = Payload([Segment(s.name + "x", s.data, s.protected, s.fmt) for s in payload.segments])
    flipped = Payload([Segment(s.name, s.data, not s.protected, s.fmt) for s in payload.segments])
    for schema in (renamed.schema, flipped.schema):
        with pytest.raises(PayloadError, match="fingerprint"):
            Payload.from_bytes(payload.to_bytes(), schema)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_corrupted_header_is_detected(data) -> None:
    payload = open_payload()
    wire = bytearray(payload.to_bytes())
    header = len(payload.header_bytes())
    position = data.draw(st.integers(0, header - 1))
    wire[position] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(PayloadError) as info:
        Payload.from_bytes(bytes(wire), OPEN_SCHEMA)
    assert info.value.segment in {"header", "trailer"} or info.value.segment in OPEN_SCHEMA.names()


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
        Payload.from_bytes(bytes(wire), payload.schema)
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
    back = Payload.from_bytes(bytes(wire), payload.schema)
    assert back.names() == payload.names()
    assert back[name].data != payload[name].data
    assert back["conv.weight/q"] == payload["conv.weight/q"]
    assert len(float_array(back["conv.weight"], 12)) == 12


def test_checksum_is_crc32_of_header_and_protected_data() -> None:
    payload = open_payload()
    wire = payload.to_bytes()
    protected = b"".join(s.data for s in payload.segments if s.protected)
    assert int.from_bytes(wire[-4:], "little") == zlib.crc32(payload.header_bytes() + protected)


def test_a_sender_that_lies_in_the_header_is_refused() -> None:
    """Header fields that contradict the schema, with the checksum recomputed: each names the segment."""
    payload = open_payload()

    def forge(header: bytes) -> bytes:
        body = b"".join(s.data for s in payload.segments)
        protected = b"".join(s.data for s in payload.segments if s.protected)
        return header + body + zlib.crc32(header + protected).to_bytes(4, "little")

    head = bytes([2]) + OPEN_SCHEMA.fingerprint
    honest = varints([6]) + bytes([0x80]) + varints([9, 5, 4])
    assert forge(head + honest) == payload.to_bytes()
    cases = {
        "s": varints([6]) + bytes([0x7F]) + varints([9, 5, 4]),  # unknown format
        "maybe": varints([6]) + bytes([0x80]) + varints([9, 4, 4]),  # optional, but of the wrong size
    }
    for segment, header in cases.items():
        with pytest.raises(PayloadError) as info:
            Payload.from_bytes(forge(head + header), OPEN_SCHEMA)
        assert info.value.segment == segment
    with pytest.raises(PayloadError) as info:  # a length running past the end
        Payload.from_bytes(forge(head + varints([1 << 40]) + bytes([0x80]) + varints([9, 5, 4])), OPEN_SCHEMA)
    assert info.value.segment == "s"
    with pytest.raises(PayloadError) as info:  # a varint that never ends
        Payload.from_bytes(forge(head + b"\xff" * 12), OPEN_SCHEMA)
    assert info.value.segment == "header"


def test_schema_checks_name_the_segment() -> None:
    schema = OPEN_SCHEMA
    good = open_payload().segments
    schema.check(good)
    schema.check([s for s in good if s.name != "maybe"])  # optional
    cases = {
        "w/anything": good + [Segment("w/anything", b"", True)],  # surplus
        "s/q": [s for s in good if s.name != "s/q"],  # missing
        "w": [good[0].replace_data(b"\x00" * 12)] + good[1:],  # wrong size
        "maybe": good[:3] + [Segment("maybe", b"\x00" * 4, True, FORMAT_F16)] + good[4:],  # wrong protection
    }
    for name, segments in cases.items():
        with pytest.raises(PayloadError) as info:
            schema.check(segments)
        assert info.value.segment == name, (name, str(info.value))
    with pytest.raises(PayloadError, match="order"):
        schema.check([good[1], good[0], *good[2:]])


def test_with_segments_keeps_the_schema_and_its_checks() -> None:
    payload = open_payload()
    damaged = payload.with_segments(
        [s.replace_data(b"\xff" * s.nbytes) if s.name == "w" else s for s in payload.segments]
    )
    assert damaged.schema is payload.schema and damaged.framing_nbytes == payload.framing_nbytes
    assert Payload.from_bytes(damaged.to_bytes(), OPEN_SCHEMA) == damaged
    with pytest.raises(ValueError, match="does not follow its schema"):
        payload.with_segments([s.replace_data(b"") if s.name == "w" else s for s in payload.segments])


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
    with pytest.raises(ValueError):
        PayloadSchema((SegmentSpec("a"), SegmentSpec("a")))
    assert format_bits(packed_format(7)) == 7 and format_bits(FORMAT_F32) is None
    assert is_float_format(FORMAT_F16) and not is_float_format(packed_format(8))


def test_float_array_checks_count_and_format() -> None:
    seg = Segment("w", np.ones(4, "<f2").tobytes(), False, FORMAT_F16)
    np.testing.assert_array_equal(float_array(seg, 4), np.ones(4, np.float32))
    with pytest.raises(PayloadError, match="holds 8 bytes, expected 10 for 5 values"):
        float_array(seg, 5)
    with pytest.raises(PayloadError, match="expected float"):
        float_array(Segment("w", b"ab", False, FORMAT_BYTES), 1)
    with pytest.raises(PayloadError, match="'w': holds 8 bytes, expected 3"):
        expect_nbytes(seg, 3)
