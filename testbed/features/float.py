"""Features as floats (float32 or float16), exposed to the channel: the uncompressed baseline."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from testbed.features.base import FeatureCodec, FeatureCodecOptions, elements
from testbed.payload import FORMAT_F16, FORMAT_F32, Segment, SegmentSpec, float_array

_FORMATS = {"float32": (FORMAT_F32, "<f4"), "float16": (FORMAT_F16, "<f2")}


class FloatOptions(FeatureCodecOptions):
    dtype: Literal["float32", "float16"] = "float32"


class FloatFeatures(FeatureCodec):
    name = "float"
    description = "the features as float32 or float16 values, exposed to the channel"
    Options: ClassVar = FloatOptions

    def specs(self, shape):
        fmt, dtype = _FORMATS[self.options.dtype]
        return [SegmentSpec("features", fmt, False, elements(shape) * np.dtype(dtype).itemsize)]

    def encode_segments(self, features):
        fmt, dtype = _FORMATS[self.options.dtype]
        values = features.detach().float().cpu().numpy().reshape(-1)
        return [Segment("features", values.astype(dtype).tobytes(), False, fmt)]

    def decode_array(self, payload, shape):
        return float_array(payload["features"], elements(shape))
