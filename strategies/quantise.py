"""Every float tensor quantised to b bits (per tensor or per output channel), optionally rANS-coded."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from strategies.base import Strategy, StrategyOptions


class QuantiseOptions(StrategyOptions):
    model_config = ConfigDict(extra="forbid", frozen=True)
    bits: int = Field(ge=2, le=16)


class QuantiseStrategy(Strategy):
    name = "quantise"
    description = "Uniform asymmetric b-bit quantisation of every tensor (bits, per_channel, entropy)."
    Options = QuantiseOptions
