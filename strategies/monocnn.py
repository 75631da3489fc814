"""MonoCNN (seed 003): send the learnable seed filters and the layers' generator seeds.

The model is trained with MonoConv2d layers (``prepare_model``). Every state
tensor a receiver cannot regenerate (seed filters, other weights, BatchNorm
parameters and statistics) goes through the value coding like any tensor; the
generated FGF buffers (``*.fgf_exponents``, ``*.fgf_eps``, ``*.fgf_bias``) are
not sent. The layers' ``fgf_seed`` values travel together in one protected
segment, ``fgf_seeds`` (int64 little-endian, in the order of the receiver's
state), from which the receiver redraws the buffers for its own template
architecture.
"""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
import torch
from pydantic import ConfigDict, Field

from strategies.base import State, Strategy, StrategyOptions, decode_plain, encode_plain, tensor_of_segment
from testbed.models.monoconv import DEFAULT_TERMS, FAMILIES, SEED_BUFFER, generate_fgf_buffers, is_fgf_buffer
from testbed.models.monoconv import make_monocnn
from testbed.payload import FORMAT_BYTES, Payload, PayloadError, Segment

SEEDS_SEGMENT = "fgf_seeds"
Family = Literal["monomial", "gaussian", "multiquadric", "inverse_quadratic", "inverse_multiquadric"]
assert set(Family.__args__) == set(FAMILIES)


class MonoCNNOptions(StrategyOptions):
    model_config = ConfigDict(extra="forbid", frozen=True)
    seeds_per_layer: int = Field(default=8, ge=1)
    base_seed: int = 0
    family: Family = "monomial"
    layers: Literal["stride1_3x3"] | list[str] = "stride1_3x3"
    num_terms: int = Field(default=DEFAULT_TERMS, ge=1)  # T of the monomial family
    fgf_bias: bool = False


def _seed_names(state: State) -> list[str]:
    return [name for name in state if name.rsplit(".", 1)[-1] == SEED_BUFFER]


class MonoCNNStrategy(Strategy):
    name = "monocnn"
    description = "MonoCNN: learnable seed filters + per-layer RNG seeds; the receiver regenerates the rest."
    Options = MonoCNNOptions

    def training_key(self) -> str:
        o = self.options
        model_options = {
            "seeds_per_layer": o.seeds_per_layer,
            "base_seed": o.base_seed,
            "family": o.family,
            "layers": o.layers,
            "num_terms": o.num_terms,
            "fgf_bias": o.fgf_bias,
        }
        return "monocnn:" + json.dumps(model_options, sort_keys=True, separators=(",", ":"))

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        o = self.options
        return make_monocnn(model, o.seeds_per_layer, o.base_seed, o.family, o.layers, o.num_terms, o.fgf_bias)

    def encode(self, state: State) -> Payload:
        seeds = _seed_names(state)
        if not seeds:
            raise ValueError(
                "monocnn: the state has no MonoConv2d layers (fgf_seed buffers); train it with prepare_model"
            )
        coding = self.coding
        segments = [
            seg
            for name, tensor in state.items()
            if not is_fgf_buffer(name) and name not in seeds
            for seg in encode_plain(name, tensor, coding)
        ]
        values = np.array([int(state[name]) for name in seeds], dtype="<i8")
        segments.append(Segment(SEEDS_SEGMENT, values.tobytes(), True, FORMAT_BYTES))
        return Payload(segments)

    def decode(self, payload: Payload, template: State) -> dict[str, torch.Tensor]:
        seeds = _seed_names(template)
        sent = {name for name in template if not is_fgf_buffer(name) and name not in seeds}
        for seg in payload.segments:
            if seg.name != SEEDS_SEGMENT and tensor_of_segment(seg.name) not in sent:
                raise PayloadError(seg.name, "not a tensor the receiver's MonoCNN model expects")
        raw = payload[SEEDS_SEGMENT].data
        if len(raw) != 8 * len(seeds):
            raise PayloadError(SEEDS_SEGMENT, f"holds {len(raw)} bytes, expected {8 * len(seeds)} ({len(seeds)} seeds)")
        seed_values = np.frombuffer(raw, dtype="<i8")

        generated: dict[str, torch.Tensor] = {}
        for name, seed in zip(seeds, seed_values):
            prefix = name[: -len(SEED_BUFFER)]
            generated[name] = torch.tensor(int(seed), dtype=torch.int64)
            generated.update(self._regenerate(prefix, int(seed), template))

        coding = self.coding
        out = {}
        for name, like in template.items():
            if name in generated:
                out[name] = generated[name]
            elif is_fgf_buffer(name):
                raise ValueError(f"monocnn: template buffer {name} belongs to no layer with an fgf_seed")
            else:
                out[name] = decode_plain(payload, name, like, coding)
        return out

    def _regenerate(self, prefix: str, seed: int, template: State) -> dict[str, torch.Tensor]:
        """The FGF buffers of one layer, from its seed and the template's shapes (never its values)."""
        o = self.options
        drawn = prefix + ("fgf_exponents" if o.family == "monomial" else "fgf_eps")
        if prefix + "seed_filters" not in template or drawn not in template:
            raise ValueError(f"monocnn: template layer {prefix.rstrip('.')} is not a {o.family} MonoConv2d")
        in_channels = template[prefix + "seed_filters"].shape[1]
        if o.family == "monomial":
            num_terms, out_channels = template[drawn].shape[:2]
        else:
            out_channels, num_terms = template[drawn].shape[0], o.num_terms
        buffers = generate_fgf_buffers(
            seed, o.family, out_channels, in_channels, num_terms, with_bias=prefix + "fgf_bias" in template
        )
        result = {prefix + key: value for key, value in buffers.items()}
        for key, value in result.items():
            if key not in template or tuple(template[key].shape) != tuple(value.shape):
                raise ValueError(f"monocnn: template layer {prefix.rstrip('.')} does not match family {o.family}")
        return result
