"""MonoCNN: send the learnable seed filters and the layers' generator seeds.

The model is trained with MonoConv2d layers (``prepare_model``, see
docs/MODELS.md). Every state tensor a receiver cannot regenerate (seed
filters, other weights, BatchNorm parameters and statistics) goes through the
value coding like any tensor, and so does each layer's ``fgf_seed`` (an int64
scalar: 8 protected bytes). The generated FGF buffers (``*.fgf_exponents``,
``*.fgf_eps``, ``*.fgf_bias``) are not sent: the receiver redraws them from
the layer's seed for its own template architecture.
"""

from __future__ import annotations

import json
from typing import Literal

import torch
from pydantic import ConfigDict, Field

from strategies.base import State, Strategy, StrategyOptions, decode_plain
from testbed.models.monoconv import DEFAULT_TERMS, FAMILIES, SEED_BUFFER, generate_fgf_buffers, is_fgf_buffer
from testbed.models.monoconv import make_monocnn
from testbed.payload import Payload, Segment, SegmentSpec

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

    # ---- coding: the generated buffers are the tensors this strategy handles (by not sending them)
    def handles(self, name: str, tensor: torch.Tensor) -> bool:
        return is_fgf_buffer(name)

    def tensor_specs(self, name: str, like: torch.Tensor) -> list[SegmentSpec]:
        return []

    def encode_tensor(self, name: str, tensor: torch.Tensor) -> list[Segment]:
        return []

    def encode(self, state: State) -> Payload:
        if not any(name.rsplit(".", 1)[-1] == SEED_BUFFER for name in state):
            raise ValueError(
                "monocnn: the state has no MonoConv2d layers (fgf_seed buffers); train it with prepare_model"
            )
        return super().encode(state)

    def decode_tensor(self, payload: Payload, name: str, like: torch.Tensor, template: State) -> torch.Tensor:
        prefix = name.rsplit(".", 1)[0] + "." if "." in name else ""
        seed_name = prefix + SEED_BUFFER
        if seed_name not in template:
            raise ValueError(f"monocnn: template buffer {name} belongs to no layer with an fgf_seed")
        seed = int(decode_plain(payload, seed_name, template[seed_name], self.coding))
        return self._regenerate(prefix, seed, template)[name]

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
