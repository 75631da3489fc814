"""Every float tensor quantised to b bits (per tensor or per output channel), optionally rANS-coded."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from strategies.base import State, Strategy, StrategyOptions, check_names, decode_plain, encode_plain
from testbed.payload import Payload


class QuantiseOptions(StrategyOptions):
    model_config = ConfigDict(extra="forbid", frozen=True)
    bits: int = Field(ge=2, le=16)


class QuantiseStrategy(Strategy):
    name = "quantise"
    description = "Uniform asymmetric b-bit quantisation of every tensor (bits, per_channel, entropy)."
    Options = QuantiseOptions

    def encode(self, state: State) -> Payload:
        coding = self.coding
        return Payload([seg for name, t in state.items() for seg in encode_plain(name, t, coding)])

    def decode(self, payload: Payload, template: State) -> dict:
        check_names(payload, set(template))
        coding = self.coding
        return {name: decode_plain(payload, name, like, coding) for name, like in template.items()}
