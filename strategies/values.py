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


class ValueCoding(BaseModel):
    """How values are put on the wire. ``bits`` absent means raw floats of ``dtype``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bits: int | None = Field(default=None, ge=2, le=16)
    dtype: Literal["float32", "float16"] = "float32"
    per_channel: bool = False
    entropy: bool = False

    @model_validator(mode="after")
    def _entropy_needs_bits(self):
        if self.entropy and self.bits is None:
            raise ValueError("entropy coding needs quantised values: set bits")
        return self


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
    return [
        SegmentSpec(name, packed_format(coding.bits), False, bitpack.packed_nbytes(count, coding.bits)),
        SegmentSpec(f"{name}/q", FORMAT_BYTES, True, side),
    ]


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
    packed = bitpack.pack(codes, coding.bits)
    if coding.entropy:
        histogram, stream = entropy.encode(codes)
        if len(stream) + len(histogram) < len(packed):
            return [Segment(name, stream, True, FORMAT_BYTES), Segment(f"{name}/q", side + histogram, True)]
    return [Segment(name, packed, False, packed_format(coding.bits)), Segment(f"{name}/q", side, True)]


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
    if segment.fmt == packed_format(coding.bits):
        expect_nbytes(side, side_len, " (no histogram with packed codes)")
        expect_nbytes(segment, bitpack.packed_nbytes(count, coding.bits), f" for {count} {coding.bits}-bit codes")
        codes = bitpack.unpack(segment.data, count, coding.bits)
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
