"""Every tensor as it is: float32, or float16 (the plain baselines)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from strategies.base import Strategy
from strategies.values import ValueCoding


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
