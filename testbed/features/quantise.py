"""Asymmetric b-bit quantisation of a feature tensor with an integer zero point (torch, any device).

From *Range Asymmetric Numeral Systems-Based Lightweight Intermediate Feature
Compression for Split Computing of Deep Neural Networks* (arXiv:2511.11664):
s = (max - min) / (2^b - 1), z = round(-min / s), q = clamp(round(x / s) + z, 0, 2^b - 1),
x_hat = (q - z) * s. **Our choice**: the range is first widened to hold 0
(min <= 0 <= max), so that z lies in 0..2^b-1 and 0.0 has an exact code, z:
the sparse step counts on zeros staying zeros. ReLU features have min = 0
already, where this changes nothing. A constant-zero tensor has s = 0 and z = 0.

The parameters travel as 6 bytes of protected side information: s (float32)
and z (uint16). Written in torch so that the same code quantises on a GPU
where the features are (the codecs move only the codes to the CPU).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np
import torch

from testbed.payload import FORMAT_BYTES, PayloadError, Segment, SegmentSpec, expect_nbytes

PARAMS = struct.Struct("<fH")  # scale, zero point


@dataclass(frozen=True)
class Quantised:
    codes: torch.Tensor  # int32 codes in 0..2^bits-1, the shape of the features, on their device
    scale: float  # a float32 value
    zero: int
    bits: int

    def params(self) -> bytes:
        return PARAMS.pack(self.scale, self.zero)

    def numpy(self) -> np.ndarray:
        """The codes as a flat uint16 array on the CPU."""
        return self.codes.reshape(-1).to(torch.int32).cpu().numpy().astype(np.uint16)


def quantise(features: torch.Tensor, bits: int) -> Quantised:
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in 1..16, got {bits}")
    x = features.detach().to(torch.float32)
    levels = (1 << bits) - 1
    lo = hi = 0.0
    if x.numel():
        low, high = (float(v) for v in torch.aminmax(x))  # NaN propagates: one pass checks finiteness too
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError("cannot quantise non-finite features (NaN or infinity)")
        lo, hi = min(low, 0.0), max(high, 0.0)
    scale = float(np.float32((hi - lo) / levels))
    if scale == 0.0:
        return Quantised(torch.zeros_like(x, dtype=torch.int32), 0.0, 0, bits)
    zero = int(min(max(round(-lo / scale), 0), levels))
    codes = torch.clamp(torch.round(x / scale) + zero, 0, levels).to(torch.int32)
    return Quantised(codes, scale, zero, bits)


def dequantise(codes: np.ndarray, scale: float, zero: int) -> np.ndarray:
    return ((codes.astype(np.float32) - np.float32(zero)) * np.float32(scale)).astype(np.float32)


def params_spec(name: str) -> SegmentSpec:
    return SegmentSpec(name, FORMAT_BYTES, True, PARAMS.size)


def params_segment(name: str, q: Quantised) -> Segment:
    return Segment(name, q.params(), True, FORMAT_BYTES)


def read_params(segment: Segment, bits: int, size: int | None = None) -> tuple[float, int]:
    """(scale, zero) from the first bytes of ``segment`` (exactly ``size`` bytes long if given)."""
    if size is not None:
        expect_nbytes(segment, size)
    elif segment.nbytes < PARAMS.size:
        raise PayloadError(segment.name, f"holds {segment.nbytes} bytes, expected at least {PARAMS.size}")
    scale, zero = PARAMS.unpack_from(segment.data)
    if not (0 <= scale * ((1 << bits) - 1) <= np.finfo(np.float32).max):  # NaN fails too
        raise PayloadError(segment.name, f"quantiser scale {scale} is negative or its range not finite in float32")
    if zero > (1 << bits) - 1:
        raise PayloadError(segment.name, f"zero point {zero} is outside {bits}-bit codes")
    return float(scale), int(zero)
