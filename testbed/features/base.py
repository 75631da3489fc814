"""The one interface of a feature codec: a tensor of intermediate features to a Payload and back.

Both ends know the feature tensor's shape (from the split point and the batch
size), so a codec's payload schema comes from the shape alone, as a
strategy's comes from the model's template: :meth:`FeatureCodec.schema`. A
codec says its segments (``specs``), how to encode a tensor into them
(``encode_segments``) and how to decode them (``decode_array``); the base
class checks a received payload against the schema first. A decoder raises
nothing but :class:`~testbed.payload.PayloadError`, whatever arrives.

Segment names start with ``features``; exposed segments hold fixed-width
values (a bit error changes values, not the structure), anything entropy-
or dictionary-coded is protected.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from testbed.features.quantise import Quantised, quantise
from testbed.payload import Payload, PayloadError, PayloadSchema, Segment, SegmentSpec

Shape = tuple[int, ...]


class FeatureCodecOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuantisedOptions(FeatureCodecOptions):
    bits: int = Field(default=8, ge=2, le=16)


class FeatureCodec:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = FeatureCodecOptions

    def __init__(self, **options):
        self.options = self.Options(**options)
        self._schemas: dict[Shape, PayloadSchema] = {}

    @property
    def bits(self) -> int | None:
        """The quantiser's bit width (None: features sent as floats)."""
        return getattr(self.options, "bits", None)

    # ---- what a codec says ---------------------------------------------------------
    def specs(self, shape: Shape) -> list[SegmentSpec]:
        raise NotImplementedError

    def encode_segments(self, features: torch.Tensor) -> list[Segment]:
        raise NotImplementedError

    def decode_array(self, payload: Payload, shape: Shape) -> np.ndarray:
        """The features as a flat float32 array (the payload already follows the schema)."""
        raise NotImplementedError

    # ---- the loop -----------------------------------------------------------------------
    def schema(self, shape: Sequence[int]) -> PayloadSchema:
        shape = tuple(int(d) for d in shape)
        if shape not in self._schemas:
            identity = json.dumps({"features": self.name, "options": self.options.model_dump(mode="json"),
                                   "shape": shape}, sort_keys=True, separators=(",", ":"))
            self._schemas[shape] = PayloadSchema(tuple(self.specs(shape)), identity)
        return self._schemas[shape]

    def encode(self, features: torch.Tensor) -> Payload:
        return Payload(self.encode_segments(features), self.schema(features.shape))

    def read(self, raw: bytes, shape: Sequence[int]) -> Payload:
        return Payload.from_bytes(raw, self.schema(shape))

    def decode(self, payload: Payload, shape: Sequence[int]) -> torch.Tensor:
        shape = tuple(int(d) for d in shape)
        self.schema(shape).check(payload.segments)
        flat = self.decode_array(payload, shape)
        if flat.size != int(np.prod(shape)):
            raise PayloadError("features", f"decodes to {flat.size} values, expected {int(np.prod(shape))}")
        return torch.from_numpy(np.ascontiguousarray(flat, dtype=np.float32)).reshape(shape)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.model_dump().items())
        return f"{self.name}({opts})"


class QuantisedCodec(FeatureCodec):
    """A codec that sends the features' b-bit codes (testbed.features.quantise) in some form."""

    Options: ClassVar = QuantisedOptions

    def quantise(self, features: torch.Tensor) -> Quantised:
        try:
            return quantise(features, self.bits)
        except ValueError as exc:
            raise ValueError(f"{self.name}: {exc}") from None

    def codes(self, features: torch.Tensor) -> np.ndarray:
        """The quantised symbols this codec sends, flat (what the entropy reference is taken of)."""
        return self.quantise(features).numpy()


def elements(shape: Shape) -> int:
    return int(np.prod(shape, dtype=np.int64))
