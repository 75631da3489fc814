"""Every tensor as it is: float32, or float16 (the plain baselines)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from strategies.base import State, Strategy, check_names, decode_plain, encode_plain
from strategies.values import ValueCoding
from testbed.payload import Payload


class RawOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    dtype: Literal["float32", "float16"] = "float32"


class RawStrategy(Strategy):
    name = "raw"
    description = "All tensors unquantised as float32 or float16 (dtype)."
    Options = RawOptions

    @property
    def coding(self) -> ValueCoding:
        return ValueCoding(dtype=self.options.dtype)

    def encode(self, state: State) -> Payload:
        coding = self.coding
        return Payload([seg for name, t in state.items() for seg in encode_plain(name, t, coding)])

    def decode(self, payload: Payload, template: State) -> dict:
        check_names(payload, set(template))
        coding = self.coding
        return {name: decode_plain(payload, name, like, coding) for name, like in template.items()}
