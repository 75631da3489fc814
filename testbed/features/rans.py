"""The paper's pipeline: asymmetric quantisation, a sparse representation, a chosen width, rANS.

After *Range Asymmetric Numeral Systems-Based Lightweight Intermediate Feature
Compression for Split Computing of Deep Neural Networks* (arXiv:2511.11664).
Only the paper's abstract is public; the steps are its, the details below are
**our choice** where marked.

1. Quantise (testbed.features.quantise): b-bit codes q with zero point z; a
   feature that was 0 has code z.
2. Sparse representation (**our choice**, an equivalent of CSR): the flat
   codes are read as rows of width N. CSR would send each row's count of
   non-zeros (row pointers) and their column indices; we send each row's
   *occupancy pattern*, the N-bit mask of its non-zero positions, which holds
   both (count = popcount, columns = set bits), and the non-zero codes in
   order. The mask is padded with zeros to a multiple of 8 positions, so a
   width N gives 8 * ceil(T / 8) / N patterns for T features.
3. Width (**our choice** of cost model, the paper's is not public): N in
   1, 2, 4, 8 minimising predicted bits + ``symbol_cost_bits`` x rANS symbols.
   The bits are predicted exactly up to the coder's rounding: the empirical
   entropy of the patterns and of the non-zero codes plus the exact size of
   both histograms; all widths' pattern counts come from one histogram of
   the 8-wide patterns. The symbol term prices decoding time: at about 25 ns a
   decoded symbol against a 10 Mb/s link (100 ns a bit) one symbol costs 0.25
   bits of airtime. ``symbol_cost_bits: 0`` picks the smallest payload. For
   zeros that fall independently, every width costs the same entropy
   (T H(mask) + nnz H(values) = T H(q), the chain rule); a wider pattern
   captures zeros that cluster, and needs fewer symbols.
4. rANS (constriction, strategies.entropy) of the patterns and of the
   non-zero codes, each with its histogram as side information.

Segments, all protected (one bit error in a stream garbles what follows):
``features/q`` (scale float32, zero point uint16, log2 N uint8: 7 bytes),
``features/mask/hist``, ``features/mask``, ``features/values/hist``,
``features/values``.
"""

from __future__ import annotations

import math
import struct
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from strategies import entropy
from testbed.features.base import QuantisedCodec, QuantisedOptions, elements
from testbed.features.quantise import PARAMS, Quantised, dequantise, read_params
from testbed.payload import FORMAT_BYTES, PayloadError, Segment, SegmentSpec

WIDTHS = (1, 2, 4, 8)
SIDE = struct.Struct("<fHB")  # scale, zero point, log2 of the width
_BIT_SHIFTS = torch.arange(8, dtype=torch.int32)
_VARINT_STEPS = np.array([1 << (7 * k) for k in range(1, 9)], dtype=np.int64)  # a varint grows a byte at each (int64: 9 at most)


class RansOptions(QuantisedOptions):
    width: Literal[1, 2, 4, 8] | None = None  # a fixed width; None: the cost model's choice
    symbol_cost_bits: float = Field(default=0.25, ge=0)


def occupancy(q: Quantised) -> tuple[np.ndarray, np.ndarray]:
    """(8-wide occupancy patterns as bytes, non-zero codes in order) on the CPU. Bit i of byte k is
    position 8k + i. Computed where the codes are: on a GPU in torch, on the CPU in numpy (the
    same bytes; numpy's packbits is several times faster there than torch's arithmetic)."""
    if q.codes.device.type != "cpu":
        return occupancy_torch(q)
    flat = q.numpy()
    mask = flat != q.zero
    return np.packbits(mask, bitorder="little"), np.compress(mask, flat).astype(np.int64)  # compress: 5x a bool index


def occupancy_torch(q: Quantised) -> tuple[np.ndarray, np.ndarray]:
    """:func:`occupancy` in torch on the codes' device; only the results come to the CPU."""
    flat = q.codes.reshape(-1)
    mask = flat != q.zero
    values = flat[mask].to(torch.int16 if q.bits < 16 else torch.int32)
    bits = torch.nn.functional.pad(mask.to(torch.int32), (0, (-flat.numel()) % 8)).reshape(-1, 8)
    packed = (bits << _BIT_SHIFTS.to(bits.device)).sum(1).to(torch.uint8)
    return packed.cpu().numpy(), values.cpu().numpy().astype(np.int64)


def patterns(packed: np.ndarray, width: int) -> np.ndarray:
    """The ``width``-wide patterns of 8-wide ones (low bits first)."""
    if width == 8:
        return packed.astype(np.int64)
    shifts = np.arange(0, 8, width, dtype=np.uint8)
    return ((packed[:, None] >> shifts) & ((1 << width) - 1)).reshape(-1).astype(np.int64)


def packed_of(pattern: np.ndarray, width: int) -> np.ndarray:
    """Inverse of :func:`patterns`."""
    if width == 8:
        return pattern.astype(np.uint8)
    shifts = np.arange(0, 8, width, dtype=np.int64)
    return (pattern.reshape(-1, 8 // width) << shifts).sum(1).astype(np.uint8)


def _varint_nbytes(values: np.ndarray) -> int:
    values = np.asarray(values, dtype=np.int64).reshape(-1, 1)
    return int(values.size + np.count_nonzero(values >= _VARINT_STEPS))


def histogram_nbytes(counts: np.ndarray) -> int:
    """Exact size of strategies.entropy's sparse histogram of these full-alphabet counts."""
    present = np.flatnonzero(counts)
    return _varint_nbytes([len(present)]) + _varint_nbytes(np.diff(present, prepend=0)) + _varint_nbytes(counts[present])


def entropy_bits(counts: np.ndarray) -> float:
    counts = counts[counts > 0].astype(np.float64)
    return float(-(counts * np.log2(counts / counts.sum())).sum()) if counts.size else 0.0


def stream_nbytes(bits: float, distinct: int) -> int:
    """What constriction's stream of ``bits`` bits of information takes (32-bit words; none if constant)."""
    return 0 if distinct <= 1 else 4 * max(1, math.ceil(bits / 32))


def width_counts(byte_counts: np.ndarray, width: int) -> np.ndarray:
    """Counts of the ``width``-wide patterns from the counts of the 8-wide ones."""
    if width == 8:
        return byte_counts
    out = np.zeros(1 << width, np.int64)
    b = np.arange(256)
    for shift in range(0, 8, width):
        np.add.at(out, (b >> shift) & ((1 << width) - 1), byte_counts)
    return out


def predict(packed: np.ndarray, values: np.ndarray, bits: int) -> dict[int, dict]:
    """Per width: predicted bytes of the coded segments (everything but the payload's framing) and
    the rANS symbols to decode. What the cost model minimises, and what the docs plot against the measured sizes."""
    value_counts = np.bincount(values, minlength=1 << bits)
    value_h = entropy_bits(value_counts)
    fixed = SIDE.size + histogram_nbytes(value_counts) + stream_nbytes(value_h, int((value_counts > 0).sum()))
    byte_counts = np.bincount(packed, minlength=256)
    out = {}
    for width in WIDTHS:
        counts = width_counts(byte_counts, width)
        h = entropy_bits(counts)
        nbytes = fixed + histogram_nbytes(counts) + stream_nbytes(h, int((counts > 0).sum()))
        out[width] = {"bytes": nbytes, "symbols": int(counts.sum()) + len(values)}
    return out


class RansFeatures(QuantisedCodec):
    name = "rans-features"
    description = ("the paper's pipeline: b-bit asymmetric codes, occupancy patterns of the zeros at a width "
                   "chosen by a cost model, rANS with histograms; all protected")
    Options: ClassVar = RansOptions

    def specs(self, shape):
        open_ = [SegmentSpec(name, FORMAT_BYTES, True, None) for name in
                 ("features/mask/hist", "features/mask", "features/values/hist", "features/values")]
        return [SegmentSpec("features/q", FORMAT_BYTES, True, SIDE.size), *open_]

    def choose_width(self, packed: np.ndarray, values: np.ndarray) -> int:
        if self.options.width is not None:
            return self.options.width
        cost = {w: 8 * p["bytes"] + self.options.symbol_cost_bits * p["symbols"]
                for w, p in predict(packed, values, self.bits).items()}
        return min(cost, key=lambda w: (cost[w], -w))

    def encode_segments(self, features):
        q = self.quantise(features)
        packed, values = occupancy(q)
        width = self.choose_width(packed, values)
        mask_hist, mask_stream = entropy.encode(patterns(packed, width))
        values_hist, values_stream = entropy.encode(values)
        side = SIDE.pack(q.scale, q.zero, int(math.log2(width)))
        return [Segment(name, data, True, FORMAT_BYTES) for name, data in (
            ("features/q", side), ("features/mask/hist", mask_hist), ("features/mask", mask_stream),
            ("features/values/hist", values_hist), ("features/values", values_stream))]

    def decode_array(self, payload, shape):
        side = payload["features/q"]
        scale, zero = read_params(side, self.bits, SIDE.size)
        log_width = side.data[PARAMS.size]
        if log_width >= len(WIDTHS):
            raise PayloadError(side.name, f"width 2^{log_width} is not one of {WIDTHS}")
        width = WIDTHS[log_width]
        count = elements(shape)
        rows = 8 * -(-count // 8) // width
        present, index = self._stream(payload, "features/mask", rows, 1 << width)
        mask = np.unpackbits(packed_of(present, width)[index] if width == 8 else packed_of(present[index], width),
                             count=count, bitorder="little").view(bool)
        positions = np.flatnonzero(mask)  # then a fancy-index store: several times faster than out[mask] =
        present, index = self._stream(payload, "features/values", len(positions), 1 << self.bits)
        # the value of each code present, computed as dequantise does (so bit-exact), then one gather
        out = np.zeros(count, np.float32)  # code z is 0.0 exactly
        out[positions] = dequantise(present, scale, zero)[index]
        return out

    @staticmethod
    def _stream(payload, name: str, count: int, alphabet: int) -> tuple[np.ndarray, np.ndarray]:
        try:
            return entropy.decode_indices(payload[f"{name}/hist"].data, payload[name].data, count, alphabet)
        except entropy.EntropyDecodeError as exc:
            raise PayloadError(name, f"rANS stream: {exc}") from None
