"""The value stages every strategy ends with: raw floats, or quantiser then optional rANS.

One tensor (seen as rows x values; rows are output channels when quantising
per channel) becomes up to two segments:

- ``NAME``: the values. Raw floats (float32/float16) or bit-packed b-bit
  codes are exposed to the channel. An rANS stream is protected, since one bit
  error would corrupt everything after it.
- ``NAME/q``: protected side information: per row lo and scale (float32),
  then, for an rANS stream, its histogram. When rANS would not save bytes for
  a tensor (small tensors, where the histogram costs more than it saves) the
  packed codes are sent instead; the format of ``NAME`` (in the payload
  header, see :func:`value_specs`) says which.

Unequal error protection (``protection: {msb: m}``, packed codes only): the top
m bit-planes of every code are protected, the rest exposed. ``NAME/msb``
(protected) holds the top m bits of each code bit-packed, ``NAME`` (exposed)
the low b - m bits; m >= b protects the whole ``NAME``. Both ends know m, so the
sizes stay fixed: ceil(n m / 8) + ceil(n (b - m) / 8) bytes for n codes.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from strategies import entropy
from strategies.quantiser import dequantise, quantise
from testbed import bitpack
from testbed.payload import (
    FORMAT_BYTES,
    FORMAT_F16,
    FORMAT_F32,
    Payload,
    PayloadError,
    Segment,
    SegmentSpec,
    expect_nbytes,
    float_array,
    packed_format,
)

_FLOAT_FORMATS = {"float32": (FORMAT_F32, "<f4"), "float16": (FORMAT_F16, "<f2")}


class MsbProtection(BaseModel):
    """Unequal error protection of packed codes: the top ``msb`` bit-planes protected, the rest exposed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    msb: int = Field(ge=0, le=16)


class ValueCoding(BaseModel):
    """How values are put on the wire. ``bits`` absent means raw floats of ``dtype``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bits: int | None = Field(default=None, ge=2, le=16)
    dtype: Literal["float32", "float16"] = "float32"
    per_channel: bool = False
    entropy: bool = False
    protection: MsbProtection | None = None

    @model_validator(mode="after")
    def _entropy_needs_bits(self):
        if self.entropy and self.bits is None:
            raise ValueError("entropy coding needs quantised values: set bits")
        if self.protection is not None and (self.bits is None or self.entropy):
            raise ValueError("protection: {msb: m} splits packed codes: it needs bits and no entropy coding")
        return self

    @property
    def msb(self) -> int:
        """Bit-planes of each packed code that are protected (0..bits)."""
        return 0 if self.protection is None or self.bits is None else min(self.protection.msb, self.bits)


def _code_specs(name: str, count: int, coding: ValueCoding) -> list[SegmentSpec]:
    """The segments of ``count`` packed b-bit codes: exposed, or split by ``protection``."""
    b, m = coding.bits, coding.msb
    if m == 0 or m == b:
        return [SegmentSpec(name, packed_format(b), m == b, bitpack.packed_nbytes(count, b))]
    return [
        SegmentSpec(name, packed_format(b - m), False, bitpack.packed_nbytes(count, b - m)),
        SegmentSpec(f"{name}/msb", packed_format(m), True, bitpack.packed_nbytes(count, m)),
    ]


def _code_segments(name: str, codes: np.ndarray, coding: ValueCoding) -> list[Segment]:
    b, m = coding.bits, coding.msb
    if m == 0 or m == b:
        return [Segment(name, bitpack.pack(codes, b), m == b, packed_format(b))]
    codes = codes.astype(np.uint16, copy=False)
    low = codes & np.uint16((1 << (b - m)) - 1)
    return [
        Segment(name, bitpack.pack(low, b - m), False, packed_format(b - m)),
        Segment(f"{name}/msb", bitpack.pack(codes >> np.uint16(b - m), m), True, packed_format(m)),
    ]


def _read_codes(payload: Payload, name: str, count: int, coding: ValueCoding) -> np.ndarray:
    """The b-bit codes of ``name`` (sizes checked with the schema: ``_code_specs``)."""
    b, m = coding.bits, coding.msb
    segment = payload[name]
    if m == 0 or m == b:
        expect_nbytes(segment, bitpack.packed_nbytes(count, b), f" for {count} {b}-bit codes")
        return bitpack.unpack(segment.data, count, b)
    top = payload[f"{name}/msb"]
    expect_nbytes(segment, bitpack.packed_nbytes(count, b - m), f" for {count} {b - m}-bit low parts")
    expect_nbytes(top, bitpack.packed_nbytes(count, m), f" for {count} {m}-bit top parts")
    low = bitpack.unpack(segment.data, count, b - m).astype(np.uint16)
    return (bitpack.unpack(top.data, count, m).astype(np.uint16) << np.uint16(b - m)) | low


def _quantiser_rows(count: int, rows: int, coding: ValueCoding) -> int:
    return rows if coding.per_channel and count else 1


def value_specs(name: str, count: int, coding: ValueCoding, rows: int = 1) -> list[SegmentSpec]:
    """The segments :func:`encode_values` writes for ``count`` values, as the schema knows them.

    Everything is fixed by the coding and the count, except with entropy coding:
    whether ``NAME`` is a protected rANS stream or exposed packed codes, and
    the lengths of the stream and of the histogram in ``NAME/q``, are open.
    """
    if coding.bits is None:
        fmt, dtype = _FLOAT_FORMATS[coding.dtype]
        return [SegmentSpec(name, fmt, False, count * np.dtype(dtype).itemsize)]
    side = 8 * _quantiser_rows(count, rows, coding)
    if coding.entropy:
        return [SegmentSpec(name, None, None, None), SegmentSpec(f"{name}/q", FORMAT_BYTES, True, None)]
    return [*_code_specs(name, count, coding), SegmentSpec(f"{name}/q", FORMAT_BYTES, True, side)]


def encode_values(name: str, values: np.ndarray, coding: ValueCoding, rows: int = 1) -> list[Segment]:
    """Segments for ``values`` (any shape; quantised per row of ``rows`` when per_channel)."""
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    if coding.bits is None:
        fmt, dtype = _FLOAT_FORMATS[coding.dtype]
        return [Segment(name, flat.astype(dtype).tobytes(), False, fmt)]
    rows = _quantiser_rows(flat.size, rows, coding)
    if not np.isfinite(flat).all():
        # A quantiser has no code for NaN or infinity: refuse rather than send garbage.
        raise ValueError(f"{name}: cannot quantise non-finite values (NaN or infinity)")
    codes, lo, scale = quantise(flat.reshape(rows, -1), coding.bits)
    side = np.stack([lo, scale], axis=1).astype("<f4").tobytes()
    if coding.entropy:
        histogram, stream = entropy.encode(codes)
        if len(stream) + len(histogram) < bitpack.packed_nbytes(codes.size, coding.bits):
            return [Segment(name, stream, True, FORMAT_BYTES), Segment(f"{name}/q", side + histogram, True)]
    return [*_code_segments(name, codes, coding), Segment(f"{name}/q", side, True)]


def decode_values(payload: Payload, name: str, count: int, coding: ValueCoding, rows: int = 1) -> np.ndarray:
    """Inverse of :func:`encode_values`: ``count`` float32 values, flat.

    Sizes the schema fixes were checked with it (``Strategy.decode``); what
    the schema leaves open (entropy coding) is checked here.
    """
    segment = payload[name]
    if coding.bits is None:
        return float_array(segment, count)
    rows = _quantiser_rows(count, rows, coding)
    side = payload[f"{name}/q"]
    side_len = 8 * rows
    if side.nbytes < side_len:
        raise PayloadError(side.name, f"holds {side.nbytes} bytes, expected at least {side_len}")
    lo_scale = np.frombuffer(side.data[:side_len], dtype="<f4").reshape(rows, 2)
    lo, span = lo_scale[:, 0].astype(np.float64), ((1 << coding.bits) - 1) * lo_scale[:, 1].astype(np.float64)
    limit = np.finfo(np.float32).max
    if not np.all((span >= 0) & (span <= limit) & (np.abs(lo) <= limit) & (np.abs(lo + span) <= limit)):
        # NaN fails every test. The quantiser never writes such a range; a lying sender could.
        raise PayloadError(side.name, "quantiser range is negative or not finite in float32")
    if segment.fmt == packed_format(coding.bits - (0 if coding.msb == coding.bits else coding.msb)):
        expect_nbytes(side, side_len, " (no histogram with packed codes)")
        codes = _read_codes(payload, name, count, coding)
    elif coding.entropy and segment.fmt == FORMAT_BYTES and segment.protected:
        try:
            codes = entropy.decode(side.data[side_len:], segment.data, count, 1 << coding.bits)
        except entropy.EntropyDecodeError as exc:
            raise PayloadError(name, f"rANS stream: {exc}") from None
    else:
        expected = f"{coding.bits}-bit packed codes" + (" or a protected rANS stream" if coding.entropy else "")
        raise PayloadError(name, f"expected {expected}, found format {segment.fmt}")
    values = dequantise(codes.reshape(rows, -1), lo_scale[:, 0], lo_scale[:, 1])
    return values.reshape(-1)
