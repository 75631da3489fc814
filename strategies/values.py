"""The value stages every strategy ends with: raw floats, or quantiser then optional rANS.

One tensor (seen as rows x values; rows are output channels when quantising
per channel) becomes up to two segments:

- ``NAME``: the values. Raw floats (float32/float16) or bit-packed b-bit
  codes are exposed to the channel. An rANS stream is protected, since one bit
  error would corrupt everything after it.
- ``NAME/q``: protected side information: per row lo and scale (float32), and
  with entropy coding a flag byte and the histogram. When rANS would not save
  bytes for a tensor (small tensors, where the histogram costs more than it
  saves) the packed codes are sent instead and the flag says so.
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
    PayloadError,
    Payload,
    Segment,
    float_array,
    format_bits,
    packed_format,
)

_RAW, _RANS = 0, 1


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


def encode_values(name: str, values: np.ndarray, coding: ValueCoding, rows: int = 1) -> list[Segment]:
    """Segments for ``values`` (any shape; quantised per row of ``rows`` when per_channel)."""
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    if coding.bits is None:
        if coding.dtype == "float16":
            return [Segment(name, flat.astype("<f2").tobytes(), False, FORMAT_F16)]
        return [Segment(name, flat.astype("<f4").tobytes(), False, FORMAT_F32)]
    rows = rows if coding.per_channel and flat.size else 1
    if not np.isfinite(flat).all():
        # A quantiser has no code for NaN or infinity: refuse rather than send garbage.
        raise ValueError(f"{name}: cannot quantise non-finite values (NaN or infinity)")
    codes, lo, scale = quantise(flat.reshape(rows, -1), coding.bits)
    side = np.stack([lo, scale], axis=1).astype("<f4").tobytes()
    packed = bitpack.pack(codes, coding.bits)
    if coding.entropy:
        histogram, stream = entropy.encode(codes)
        if len(stream) + len(histogram) < len(packed):
            return [
                Segment(name, stream, True, FORMAT_BYTES),
                Segment(f"{name}/q", side + bytes([_RANS]) + histogram, True),
            ]
        side += bytes([_RAW])
    return [
        Segment(name, packed, False, packed_format(coding.bits)),
        Segment(f"{name}/q", side, True),
    ]


def decode_values(payload: Payload, name: str, count: int, coding: ValueCoding, rows: int = 1) -> np.ndarray:
    """Inverse of :func:`encode_values`: ``count`` float32 values, flat."""
    segment = payload[name]
    if coding.bits is None:
        return float_array(segment, count)
    rows = rows if coding.per_channel and count else 1
    if count % rows:
        raise PayloadError(name, f"{count} values do not split into {rows} rows")
    side = payload[f"{name}/q"].data
    side_len = 8 * rows
    if len(side) < side_len + (1 if coding.entropy else 0):
        raise PayloadError(f"{name}/q", f"side information holds {len(side)} bytes, expected at least {side_len}")
    lo_scale = np.frombuffer(side[:side_len], dtype="<f4").reshape(rows, 2)
    method = side[side_len] if coding.entropy else _RAW
    extra = side[side_len + 1 :] if coding.entropy else side[side_len:]
    if method == _RAW:
        if extra:
            raise PayloadError(f"{name}/q", f"{len(extra)} unexpected trailing bytes")
        if format_bits(segment.fmt) != coding.bits:
            raise PayloadError(name, f"expected {coding.bits}-bit packed values, found format {segment.fmt}")
        if segment.nbytes != bitpack.packed_nbytes(count, coding.bits):
            raise PayloadError(
                name, f"holds {segment.nbytes} bytes, expected {bitpack.packed_nbytes(count, coding.bits)}"
            )
        codes = bitpack.unpack(segment.data, count, coding.bits)
    elif method == _RANS:
        try:
            codes = entropy.decode(extra, segment.data, count, 1 << coding.bits)
        except entropy.EntropyDecodeError as exc:
            raise PayloadError(name, f"rANS stream: {exc}") from None
    else:
        raise PayloadError(f"{name}/q", f"unknown value coding method {method}")
    values = dequantise(codes.reshape(rows, -1), lo_scale[:, 0], lo_scale[:, 1])
    return values.reshape(-1)
