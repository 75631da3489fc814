"""MonoCNN layers: conv filters generated from a few learnable seed filters.

From *Towards Transmission-Friendly and Robust CNN Models over Cloud and Device*
(arXiv:2207.09616).

A :class:`MonoConv2d` learns ``s`` seed filters [s, C_in, k, k]. Its C_out
filters come from a fixed filter generation function (FGF) whose random
hyper-parameters are buffers drawn from the layer's own generator seed
(``fgf_seed``). Output filter o uses seed o mod s:

- ``monomial`` (the authors' default): W = sign(S) * sum_t |S|^E_t, with
  E ~ U(0, 10), shape [T, C_out, C_in, 1, 1] (shared over the k x k taps);
- RBF families, with eps ~ U(1, 7) per (output, input) channel pair:
  ``gaussian`` exp(-(eps S)^2), ``multiquadric`` sqrt(1 + (eps S)^2),
  ``inverse_quadratic`` 1 / (1 + (eps S)^2), ``inverse_multiquadric``
  1 / sqrt(1 + (eps S)^2);

optionally plus a U(0, 1) bias buffer per (output, input) pair; then each
output filter is standardised (minus its mean, over its std + 1e-5).

The generated buffers are named ``fgf_*`` (``fgf_exponents``, ``fgf_eps``,
``fgf_bias``); with ``fgf_seed`` and the layer's shape they are regenerated bit
for bit by :func:`generate_fgf_buffers`, so a codec sends the seed instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from testbed.models.registry import ModelError
from testbed.rng import derive_seed

Family = Literal["monomial", "gaussian", "multiquadric", "inverse_quadratic", "inverse_multiquadric"]
FAMILIES: tuple[str, ...] = Family.__args__
FGF_PREFIX = "fgf_"
SEED_BUFFER = "fgf_seed"
EXPONENT_RANGE = (0.0, 10.0)
EPS_RANGE = (1.0, 7.0)
DEFAULT_TERMS = 5
# |S|^E with E < 1 has an unbounded gradient at S = 0; the floor keeps it finite (our choice).
ABS_FLOOR = 1e-12
# |S|^E with E < 1 is still steep near 0: the training loop clips the gradient norm of any
# model holding one of these layers at this value, as the MonoCNN authors' code does.
GRAD_CLIP_NORM = 5.0


def generate_fgf_buffers(
    seed: int,
    family: str,
    out_channels: int,
    in_channels: int,
    num_terms: int = DEFAULT_TERMS,
    with_bias: bool = False,
) -> dict[str, torch.Tensor]:
    """The FGF buffers of one layer, a pure function of its seed and architecture."""
    if family not in FAMILIES:
        raise ModelError(f"unknown FGF family {family!r}; known: {', '.join(FAMILIES)}")
    gen = torch.Generator().manual_seed(int(seed))
    buffers = {}
    if family == "monomial":
        lo, hi = EXPONENT_RANGE
        shape = (num_terms, out_channels, in_channels, 1, 1)
        buffers["fgf_exponents"] = lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float32)
    else:
        lo, hi = EPS_RANGE
        shape = (out_channels, in_channels, 1, 1)
        buffers["fgf_eps"] = lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float32)
    if with_bias:
        buffers["fgf_bias"] = torch.rand((out_channels, in_channels, 1, 1), generator=gen, dtype=torch.float32)
    return buffers


def is_fgf_buffer(state_name: str) -> bool:
    """A state entry that a receiver regenerates from the layer's seed (not the seed itself)."""
    leaf = state_name.rsplit(".", 1)[-1]
    return leaf.startswith(FGF_PREFIX) and leaf != SEED_BUFFER


class MonoConv2d(nn.Module):
    grad_clip_norm = GRAD_CLIP_NORM  # read by testbed.training for the whole model

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        seeds: int,
        fgf_seed: int,
        family: str = "monomial",
        num_terms: int = DEFAULT_TERMS,
        fgf_bias: bool = False,
        stride: int | tuple = 1,
        padding: int | tuple | str = 0,
        dilation: int | tuple = 1,
        bias: bool = False,
    ):
        super().__init__()
        if family not in FAMILIES:
            raise ModelError(f"unknown FGF family {family!r}; known: {', '.join(FAMILIES)}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = kernel_size
        self.seeds = min(seeds, out_channels)
        self.family, self.num_terms, self.with_fgf_bias = family, num_terms, fgf_bias
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.seed_filters = nn.Parameter(torch.empty(self.seeds, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.seed_filters, a=math.sqrt(5))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.register_buffer(SEED_BUFFER, torch.tensor(int(fgf_seed), dtype=torch.int64))
        self.register_buffer("seed_index", torch.arange(out_channels) % self.seeds, persistent=False)
        for name, tensor in self._generate().items():
            self.register_buffer(name, tensor)

    def _generate(self) -> dict[str, torch.Tensor]:
        return generate_fgf_buffers(
            int(self.fgf_seed), self.family, self.out_channels, self.in_channels, self.num_terms, self.with_fgf_bias
        )

    def regenerate(self) -> None:
        """Redraw the FGF buffers from ``fgf_seed`` (after the seed was loaded or changed)."""
        for name, tensor in self._generate().items():
            getattr(self, name).copy_(tensor)

    def generated_weight(self) -> torch.Tensor:
        s = self.seed_filters[self.seed_index]  # [C_out, C_in, k, k], output o uses seed o mod s
        if self.family == "monomial":
            mag = s.abs().clamp_min(ABS_FLOOR).unsqueeze(0).pow(self.fgf_exponents).sum(0)
            w = torch.sign(s) * mag
        else:
            z = (self.fgf_eps * s).square()
            if self.family == "gaussian":
                w = torch.exp(-z)
            elif self.family == "multiquadric":
                w = torch.sqrt(1 + z)
            elif self.family == "inverse_quadratic":
                w = 1 / (1 + z)
            else:
                w = torch.rsqrt(1 + z)
        if self.with_fgf_bias:
            w = w + self.fgf_bias
        flat = w.flatten(1)
        flat = (flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + 1e-5)
        return flat.view_as(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.generated_weight(), self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, seeds={self.seeds}, "
            f"family={self.family}, stride={self.stride}, padding={self.padding}"
        )


def _selected_convs(model: nn.Module, layers: str | Sequence[str]) -> list[tuple[str, nn.Conv2d]]:
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if isinstance(layers, str):
        if layers != "stride1_3x3":
            raise ModelError(f"monocnn layers: 'stride1_3x3' or a list of conv names, not {layers!r}")
        # as in the authors' ResNet-18: the stem and strided or 1x1 convs stay standard
        return [
            (n, m)
            for i, (n, m) in enumerate(convs)
            if i > 0 and m.kernel_size == (3, 3) and m.stride == (1, 1) and m.groups == 1
        ]
    by_name = dict(convs)
    unknown = [n for n in layers if n not in by_name]
    if unknown:
        raise ModelError(
            f"monocnn layers: not conv layers of the model: {', '.join(unknown)} (its convs: {', '.join(by_name)})"
        )
    for n in layers:
        m = by_name[n]
        if m.groups != 1 or m.kernel_size[0] != m.kernel_size[1] or isinstance(m.padding, str):
            raise ModelError(f"monocnn layers: {n}: only square, ungrouped convs with numeric padding can become MonoConv2d")
    return [(n, by_name[n]) for n in layers]


def make_monocnn(
    model: nn.Module,
    seeds_per_layer: int = 8,
    base_seed: int = 0,
    family: str = "monomial",
    layers: str | Sequence[str] = "stride1_3x3",
    num_terms: int = DEFAULT_TERMS,
    fgf_bias: bool = False,
) -> nn.Module:
    """Replace the chosen convs by MonoConv2d layers (in place; returns the model).

    Layer i of the replaced ones draws its buffers from
    ``derive_seed(base_seed, "monocnn", i)``.
    """
    for index, (name, conv) in enumerate(_selected_convs(model, layers)):
        mono = MonoConv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size[0],
            seeds=seeds_per_layer,
            fgf_seed=derive_seed(base_seed, "monocnn", index),
            family=family,
            num_terms=num_terms,
            fgf_bias=fgf_bias,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            bias=conv.bias is not None,
        )
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, leaf, mono.to(conv.weight.device))
    return model

