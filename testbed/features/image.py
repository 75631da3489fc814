"""Sending the input images instead of features: PNG (lossless) and JPEG (quality q), one file per image.

For the split point ``input`` (features of shape B x C x H x W with C = 1 or 3).
The normalised images are mapped back to 8 bits per channel by min-max
quantisation over the batch (strategies.quantiser, one row per channel;
**our choice**: for 8-bit source images whose batch spans 0..255 in each
channel, as MNIST and CIFAR-10 batches do, this recovers the pixels), then
each image is one PNG or JPEG file (Pillow). The files and the 8 bytes per
channel of range are protected.
"""

from __future__ import annotations

import io
from typing import ClassVar

import numpy as np
from pydantic import Field

from strategies.quantiser import dequantise, quantise
from testbed.features.base import FeatureCodec, FeatureCodecOptions
from testbed.payload import FORMAT_BYTES, PayloadError, Segment, SegmentSpec, expect_nbytes

_MODES = {1: "L", 3: "RGB"}


class ImageCodec(FeatureCodec):
    format: ClassVar[str] = ""  # Pillow's format name

    def save_options(self) -> dict:
        return {}

    def _check_shape(self, shape) -> tuple[int, int, int, int]:
        if len(shape) != 4 or shape[1] not in _MODES:
            raise ValueError(f"{self.name} sends images (the split point 'input'): B x 1|3 x H x W, not {tuple(shape)}")
        return tuple(shape)

    def specs(self, shape):
        batch, channels, _, _ = self._check_shape(shape)
        return [SegmentSpec("features/q", FORMAT_BYTES, True, 8 * channels),
                *(SegmentSpec(f"features/{i}", FORMAT_BYTES, True, None) for i in range(batch))]

    def encode_segments(self, features):
        from PIL import Image

        batch, channels, h, w = self._check_shape(features.shape)
        x = features.detach().float().cpu().numpy()
        rows = x.transpose(1, 0, 2, 3).reshape(channels, -1)  # one quantiser row per channel
        codes, lo, scale = quantise(rows, 8)
        pixels = codes.reshape(channels, batch, h, w).transpose(1, 2, 3, 0).astype(np.uint8)
        segments = [Segment("features/q", np.stack([lo, scale], axis=1).astype("<f4").tobytes(), True)]
        for i in range(batch):
            image = Image.fromarray(pixels[i, :, :, 0] if channels == 1 else pixels[i], _MODES[channels])
            out = io.BytesIO()
            image.save(out, format=self.format, **self.save_options())
            segments.append(Segment(f"features/{i}", out.getvalue(), True))
        return segments

    def decode_array(self, payload, shape):
        batch, channels, h, w = self._check_shape(shape)
        side = payload["features/q"]
        expect_nbytes(side, 8 * channels)
        lo_scale = np.frombuffer(side.data, dtype="<f4").reshape(channels, 2)
        lo, top = lo_scale[:, 0].astype(np.float64), lo_scale[:, 0] + 255.0 * lo_scale[:, 1].astype(np.float64)
        limit = np.finfo(np.float32).max
        if not np.all((lo_scale[:, 1] >= 0) & (np.abs(lo) <= limit) & (np.abs(top) <= limit)):  # NaN fails too
            raise PayloadError(side.name, "pixel range is negative or not finite in float32")
        pixels = np.empty((channels, batch, h, w), np.uint16)
        for i in range(batch):
            pixels[:, i] = self._image(payload[f"features/{i}"], channels, h, w)
        values = dequantise(pixels.reshape(channels, -1), lo_scale[:, 0], lo_scale[:, 1])
        return values.reshape(channels, batch, h, w).transpose(1, 0, 2, 3).reshape(-1)

    def _image(self, segment: Segment, channels: int, h: int, w: int) -> np.ndarray:
        from PIL import Image

        try:  # Pillow raises many kinds of error on a damaged file; any of them is a bad segment
            image = Image.open(io.BytesIO(segment.data), formats=[self.format])
            if image.size != (w, h) or image.mode != _MODES[channels]:  # checked before decoding the pixels
                raise PayloadError(segment.name, f"{image.mode} image of {image.size}, expected {_MODES[channels]} {w}x{h}")
            array = np.asarray(image.convert(_MODES[channels]))
        except PayloadError:
            raise
        except Exception as exc:  # noqa: BLE001 - untrusted input through a third-party decoder
            raise PayloadError(segment.name, f"not a {self.format} image ({type(exc).__name__}: {exc})") from None
        return array.reshape(h, w, channels).transpose(2, 0, 1)


class PngFeatures(ImageCodec):
    name = "png"
    description = "the input images as PNG files (lossless), protected"
    format = "PNG"

    def save_options(self):
        return {"optimize": True}


class JpegOptions(FeatureCodecOptions):
    quality: int = Field(default=75, ge=1, le=95)


class JpegFeatures(ImageCodec):
    name = "jpeg"
    description = "the input images as JPEG files of a quality, protected"
    format = "JPEG"
    Options: ClassVar = JpegOptions

    def save_options(self):
        return {"quality": self.options.quality}
