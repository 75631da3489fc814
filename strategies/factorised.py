"""Factorised update: retrain only small factors on top of the deployed weights, send the factors.

*Update Compression for Deep Neural Networks on the Edge* (Chen, Bakhshi,
Batista, Ng, Chin; arXiv:2203.04516): keep the deployed weights W0 and
optimise only W = W0 + U V^T per layer, so the update is U and V. Here each
weight of two or more dimensions is seen as a matrix C_out x (C_in*k*k) (conv
kernels reshaped, linear layers as they are) and gets U (C_out x r, random
N(0, 1/r) at the start) and V (C_in*k*k x r, zero at the start, so training
starts at W0 exactly); W0 is frozen. Biases and BatchNorm (affine and running
statistics) are refreshed too and sent whole: they are vectors, a small part
of the bytes (our choice; the paper factorises the weight matrices). A layer
whose factors would not be smaller than the matrix is retrained and sent
whole, as the low-rank codec sends it.

On the wire the update is the low-rank codec at the same rank: the retrained
delta U V^T has rank r, so its truncated SVD at rank r gives it back (up to
float rounding) as two factors of the same size as U and V, quantised like
every tensor. The difference from ``lowrank`` is only how the server trains
the update (:meth:`prepare_update`); ``lowrank`` truncates a delta trained on
every weight.
"""

from __future__ import annotations

import math

import torch
from pydantic import ConfigDict, Field
from torch import nn
from torch.nn.utils import parametrize

from strategies.lowrank import LowRankOptions, LowRankStrategy, _matrix_shape


class FactorisedOptions(LowRankOptions):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rank: int = Field(ge=1)  # per layer, capped by the matrix size


class LowRankDelta(nn.Module):
    """The parametrisation W0 + U V^T of one weight (W0 is the frozen original)."""

    def __init__(self, like: torch.Tensor, rank: int):
        super().__init__()
        m, n = _matrix_shape(like)
        self.u = nn.Parameter(torch.randn(m, rank) / math.sqrt(rank))  # from the caller's seeded generator
        self.v = nn.Parameter(torch.zeros(n, rank))

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return original + (self.u @ self.v.T).reshape(original.shape)


class FactorisedStrategy(LowRankStrategy):
    name = "factorised"
    description = "Update as W0 + U V^T per layer, U and V trained on the server with W0 frozen (rank r)."
    Options = FactorisedOptions

    def update_training_key(self) -> str:
        return f"factorised:rank={self.options.rank}"

    def prepare_update(self, model: nn.Module) -> nn.Module:
        """Freeze every weight matrix under a rank-r factor pair; vectors stay trainable."""
        for module in model.modules():
            if not isinstance(module, (nn.Conv2d, nn.Linear)):
                continue
            weight = module.weight
            r = self._fixed_rank(*_matrix_shape(weight))
            if r == 0:
                continue  # sent whole: retrained whole
            parametrize.register_parametrization(module, "weight", LowRankDelta(weight, r), unsafe=True)
            module.parametrizations.weight.original.requires_grad_(False)
        return model
