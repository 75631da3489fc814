"""Quantised features through a general-purpose compressor: zlib and zstd at their best levels.

The b-bit codes go to the compressor one byte each (two, little-endian, above
8 bits): byte-aligned symbols are what these compressors model well (**our
choice**; bit-packed codes compress worse). The compressed stream is
protected, since one bit error would garble the rest; scale and zero point
travel as protected side information.
"""

from __future__ import annotations

import zlib
from typing import ClassVar

import numpy as np
from pydantic import Field

from testbed.features.base import QuantisedCodec, QuantisedOptions, elements
from testbed.features.quantise import dequantise, params_segment, params_spec, read_params
from testbed.payload import FORMAT_BYTES, PayloadError, Segment, SegmentSpec


class CompressedCodes(QuantisedCodec):
    """The shared part: codes as bytes, one compressor call each way, strict size checks."""

    def compress(self, data: bytes) -> bytes:
        raise NotImplementedError

    def decompress(self, data: bytes, size: int) -> bytes:
        """Exactly ``size`` bytes from ``data``, never more (a PayloadError otherwise)."""
        raise NotImplementedError

    def _dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.bits <= 8 else "<u2")

    def specs(self, shape):
        return [SegmentSpec("features", FORMAT_BYTES, True, None), params_spec("features/q")]

    def encode_segments(self, features):
        q = self.quantise(features)
        data = self.compress(q.numpy().astype(self._dtype()).tobytes())
        return [Segment("features", data, True, FORMAT_BYTES), params_segment("features/q", q)]

    def decode_array(self, payload, shape):
        scale, zero = read_params(payload["features/q"], self.bits)
        count = elements(shape)
        raw = self.decompress(payload["features"].data, count * self._dtype().itemsize)
        codes = np.frombuffer(raw, dtype=self._dtype())
        if codes.size and int(codes.max()) >= 1 << self.bits:
            raise PayloadError("features", f"holds a code above {self.bits} bits")
        return dequantise(codes, scale, zero)


class ZlibOptions(QuantisedOptions):
    level: int = Field(default=9, ge=0, le=9)


class ZlibFeatures(CompressedCodes):
    name = "zlib"
    description = "b-bit codes, one byte each, through zlib (default level 9, its best); protected"
    Options: ClassVar = ZlibOptions

    def compress(self, data):
        return zlib.compress(data, self.options.level)

    def decompress(self, data, size):
        d = zlib.decompressobj()
        try:
            out = d.decompress(data, size)
        except zlib.error as exc:
            raise PayloadError("features", f"zlib stream: {exc}") from None
        if len(out) != size or not d.eof or d.unconsumed_tail or d.unused_data:
            raise PayloadError("features", f"zlib stream does not hold exactly {size} bytes")
        return out


class ZstdOptions(QuantisedOptions):
    level: int = Field(default=22, ge=1, le=22)  # 22: zstd's best (its --ultra levels included)


class ZstdFeatures(CompressedCodes):
    name = "zstd"
    description = "b-bit codes, one byte each, through zstd (default level 22, its best); protected"
    Options: ClassVar = ZstdOptions

    def compress(self, data):
        import zstandard

        # No checksum and no dictionary id: the payload's CRC protects the stream already.
        params = zstandard.ZstdCompressor(level=self.options.level, write_checksum=False, write_dict_id=False)
        return params.compress(data)

    def decompress(self, data, size):
        import zstandard

        try:
            # The frame declares its size, and zstd then ignores max_output_size: check it first.
            declared = zstandard.frame_content_size(data)
            if declared != size:
                raise PayloadError("features", f"zstd frame declares {declared} bytes, expected {size}")
            out = zstandard.ZstdDecompressor().decompress(data, max_output_size=size, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            raise PayloadError("features", f"zstd stream: {exc}") from None
        if len(out) != size:
            raise PayloadError("features", f"zstd stream does not hold exactly {size} bytes")
        return out
