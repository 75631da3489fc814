"""Factorised update: retrain only small factors on top of the deployed weights, send the factors.

*Update Compression for Deep Neural Networks on the Edge* (Chen, Bakhshi,
Batista, Ng, Chin; arXiv:2203.04516): keep the deployed weights W0 and
optimise only W = W0 + U V^T per layer, so the update is U and V. Here each
weight of two or more dimensions is seen as a matrix C_out x (C_in*k*k) (conv
kernels reshaped, linear layers as they are) and gets U (C_out x r, random
N(0, 1/r) at the start) and V (C_in*k*k x r, zero at the start, so training
starts at W0 exactly); W0 is frozen. With ``refresh_vectors`` (the default)
biases and BatchNorm (affine and running statistics) are retrained too and
sent whole: they are vectors, a small part of the bytes (our choice; the paper
factorises the weight matrices). Without it they stay as deployed (frozen, the
running statistics not updated: BatchNorm normalises with them during the
retraining) and are not sent at all: the decoded update's vectors are zero, so
this form is for deltas only. A layer whose factors would not be smaller than
the matrix is retrained and sent whole, as the low-rank codec sends it.

The rank of each layer is one of (exactly one option):

- ``rank``: fixed (capped by the matrix size); both ends know it, nothing sent.
- ``energy``: the factors are trained at ``max_rank``; each layer is sent at the
  smallest rank whose singular values of its retrained delta hold a fraction
  ``energy`` of their squared sum (the low-rank codec's rule), rank sent.
- ``budget_bytes``: the factors are trained at ``max_rank``; ranks are allotted
  greedily, one step at a time, to the layer whose next singular value adds most
  squared Frobenius norm of the delta per byte it costs, while the whole encoded
  update (framing, vectors, quantiser side information, rANS streams) stays
  within ``budget_bytes`` exactly (our choice of allocation; the paper fixes the
  rank). Every layer gets at least rank 1; a budget below that is refused.

On the wire the update is the low-rank codec: the retrained delta U V^T has
rank r, so its truncated SVD at rank r gives it back (up to float rounding) as
two factors of the same size as U and V, quantised like every tensor. With
``energy`` or ``budget_bytes`` each matrix carries its rank (``NAME/rank``, 2
bytes, protected). The difference from ``lowrank`` is how the server trains
the update (:meth:`prepare_update`); ``lowrank`` truncates a delta trained on
every weight.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import ConfigDict, Field, model_validator
from torch import nn
from torch.nn.utils import parametrize

from strategies.base import State, encode_plain, is_batch_counter, wire_order
from strategies.lowrank import LowRankStrategy, _matrix_shape, _worth_factorising, svd_factors
from strategies.values import ValueCoding
from testbed.payload import Payload, Segment, SegmentSpec


class FactorisedOptions(ValueCoding):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rank: int | None = Field(default=None, ge=1)  # fixed, per layer, capped by the matrix size
    energy: float | None = Field(default=None, gt=0, le=1)
    budget_bytes: int | None = Field(default=None, ge=1)  # the whole encoded update
    max_rank: int | None = Field(default=None, ge=1)  # training rank with energy or budget_bytes
    refresh_vectors: bool = True  # retrain and send biases and BatchNorm

    @model_validator(mode="after")
    def _one_rule(self):
        if sum(x is not None for x in (self.rank, self.energy, self.budget_bytes)) != 1:
            raise ValueError("give exactly one of rank, energy or budget_bytes")
        if (self.rank is None) != (self.max_rank is not None):
            raise ValueError("max_rank (the training rank) goes with energy or budget_bytes, not with rank")
        return self

    @property
    def training_rank(self) -> int:
        return self.rank if self.rank is not None else self.max_rank


class LowRankDelta(nn.Module):
    """The parametrisation W0 + U V^T of one weight (W0 is the frozen original)."""

    def __init__(self, like: torch.Tensor, rank: int):
        super().__init__()
        m, n = _matrix_shape(like)
        self.u = nn.Parameter(torch.randn(m, rank) / math.sqrt(rank))  # from the caller's seeded generator
        self.v = nn.Parameter(torch.zeros(n, rank))

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return original + (self.u @ self.v.T).reshape(original.shape)


def _keep_statistics(module: nn.Module, _inputs) -> None:
    module.train(False)  # normalise with the deployed running statistics and leave them as they are


class FactorisedStrategy(LowRankStrategy):
    name = "factorised"
    description = "Update as W0 + U V^T per layer, U and V trained on the server with W0 frozen (rank, energy or byte budget)."
    Options = FactorisedOptions

    def __init__(self, **options):
        super().__init__(**options)
        self._allotted: dict[str, int] | None = None  # the byte budget's ranks, during one encode

    def update_training_key(self) -> str:
        o = self.options
        return f"factorised:rank={o.training_rank}" + ("" if o.refresh_vectors else ":vectors=frozen")

    def _fixed_rank(self, m: int, n: int) -> int:
        r = min(self.options.training_rank, m, n)
        return r if _worth_factorising(r, m, n) else 0

    def prepare_update(self, model: nn.Module) -> nn.Module:
        """Freeze every weight matrix under a rank-r factor pair; vectors trainable or frozen."""
        for module in model.modules():
            if not self.options.refresh_vectors:
                for vector in module.parameters(recurse=False):
                    if vector.dim() < 2:
                        vector.requires_grad_(False)
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.register_forward_pre_hook(_keep_statistics)
            if not isinstance(module, (nn.Conv2d, nn.Linear)):
                continue
            weight = module.weight
            r = self._fixed_rank(*_matrix_shape(weight))
            if r == 0:
                continue  # sent whole: retrained whole
            parametrize.register_parametrization(module, "weight", LowRankDelta(weight, r), unsafe=True)
            module.parametrizations.weight.original.requires_grad_(False)
        return model

    # ---- vectors left out without refresh_vectors ------------------------------------
    def _left_out(self, tensor: torch.Tensor) -> bool:
        return not self.options.refresh_vectors and tensor.dtype.is_floating_point and tensor.dim() < 2

    def handles(self, name: str, tensor: torch.Tensor) -> bool:
        return super().handles(name, tensor) or self._left_out(tensor)

    def tensor_specs(self, name: str, like: torch.Tensor) -> list[SegmentSpec]:
        return [] if self._left_out(like) else super().tensor_specs(name, like)

    def decode_tensor(self, payload: Payload, name: str, like: torch.Tensor, template: State) -> torch.Tensor:
        if self._left_out(like):
            return torch.zeros_like(like)
        return super().decode_tensor(payload, name, like, template)

    # ---- ranks -------------------------------------------------------------------------
    def _rank(self, singular: np.ndarray) -> int:
        if self.options.energy is not None:
            return super()._rank(singular)
        return min(self.options.training_rank, len(singular))

    def encode_tensor(self, name: str, tensor: torch.Tensor) -> list[Segment]:
        if self._left_out(tensor):
            return []
        if self._allotted is None:
            return super().encode_tensor(name, tensor)
        return self.segments_at_rank(name, tensor, svd_factors(tensor), self._allotted[name])

    def encode(self, state: State) -> Payload:
        if self.options.budget_bytes is None:
            return super().encode(state)
        return self.encode_at_ranks(state, self.budget_ranks(state))

    def encode_at_ranks(self, state: State, ranks: dict[str, int]) -> Payload:
        """The update with the given rank per matrix (0: whole), ranks sent."""
        self._allotted = ranks
        try:
            return super().encode(state)
        finally:
            self._allotted = None

    def budget_ranks(self, state: State) -> dict[str, int]:
        """Ranks per matrix so that the encoded update fits ``budget_bytes`` (greedy, exact)."""
        budget = self.options.budget_bytes
        matrices = {n: t for n, t in wire_order(state) if LowRankStrategy.handles(self, n, t)}
        factors = {n: svd_factors(t) for n, t in matrices.items()}
        steps = {n: self._rank_steps(t, f[1]) for (n, t), f in zip(matrices.items(), factors.values())}
        at = dict.fromkeys(matrices, 0)  # index into steps[n]

        def segments(n: str, i: int) -> list[Segment]:
            return self.segments_at_rank(n, matrices[n], factors[n], steps[n][i][0])

        chosen = {n: segments(n, 0) for n in matrices}
        others = [s for n, t in wire_order(state) if n not in matrices and not is_batch_counter(n)
                  for s in (self.encode_tensor(n, t) if self.handles(n, t) else encode_plain(n, t, self.coding))]
        schema = self.payload_schema(state)

        def total() -> int:
            return Payload(_in_order(chosen, others, schema), schema).nbytes

        size = total()
        if size > budget:
            raise ValueError(f"factorised: budget_bytes {budget} is below the smallest update ({size} bytes, rank 1 everywhere)")
        open_ = {n for n in matrices if len(steps[n]) > 1}
        while open_:
            def gain_per_byte(n: str) -> float:
                nxt = segments(n, at[n] + 1)
                extra = sum(s.nbytes for s in nxt) - sum(s.nbytes for s in chosen[n])
                return steps[n][at[n] + 1][1] / max(extra, 1)

            best = max(sorted(open_), key=gain_per_byte)
            previous = chosen[best]
            chosen[best] = segments(best, at[best] + 1)
            new_size = total()
            if new_size > budget:
                chosen[best] = previous
                open_.discard(best)  # its next step does not fit; smaller steps elsewhere may
                continue
            at[best] += 1
            size = new_size
            if at[best] + 1 >= len(steps[best]):
                open_.discard(best)
        return {n: steps[n][at[n]][0] for n in matrices}

    def _rank_steps(self, tensor: torch.Tensor, singular: np.ndarray) -> list[tuple[int, float]]:
        """(rank, squared norm it adds) from rank 1 up: ranks worth factorising up to the training
        rank, then the whole matrix (rank 0) for a layer retrained whole."""
        m, n = _matrix_shape(tensor)
        energy = singular.astype(np.float64) ** 2
        floor = 1e-12 * energy.sum()
        cap = min(self.options.training_rank, m, n)
        ranks = [r for r in range(1, cap + 1) if _worth_factorising(r, m, n)]
        if not ranks:
            return [(0, 0.0)]
        steps = [(ranks[0], float(energy[0]))]
        steps += [(r, float(energy[r - 1])) for r in ranks[1:] if energy[r - 1] > floor]
        rest = float(energy[len(steps):].sum())
        if self._fixed_rank(m, n) == 0 and rest > floor:
            steps.append((0, rest))
        return steps


def _in_order(chosen: dict[str, list[Segment]], others: list[Segment], schema) -> list[Segment]:
    """The segments in the schema's order (the order the base class's encode writes them)."""
    by_name = {s.name: s for group in (*chosen.values(), others) for s in group}
    return [by_name[name] for name in schema.names() if name in by_name]
