"""Features as bit-packed b-bit codes, exposed to the channel: quantisation without entropy coding."""

from __future__ import annotations

from testbed import bitpack
from testbed.features.base import QuantisedCodec, elements
from testbed.features.quantise import dequantise, params_segment, params_spec, read_params
from testbed.payload import Segment, SegmentSpec, packed_format


class QuantisedFeatures(QuantisedCodec):
    name = "quantised"
    description = "b-bit asymmetric codes, bit-packed and exposed to the channel; scale and zero point protected"

    def specs(self, shape):
        b = self.bits
        return [SegmentSpec("features", packed_format(b), False, bitpack.packed_nbytes(elements(shape), b)),
                params_spec("features/q")]

    def encode_segments(self, features):
        q = self.quantise(features)
        packed = bitpack.pack(q.numpy(), self.bits)
        return [Segment("features", packed, False, packed_format(self.bits)), params_segment("features/q", q)]

    def decode_array(self, payload, shape):
        scale, zero = read_params(payload["features/q"], self.bits)
        codes = bitpack.unpack(payload["features"].data, elements(shape), self.bits)
        return dequantise(codes, scale, zero)
