"""Low-rank factorisation of weight matrices: update compression by matrix factorisation.

Each weight of two or more dimensions is seen as a matrix C_out x (C_in*k*k)
and sent as its truncated SVD, U*S (m x r) and V (n x r), through the value
coding; vectors (biases, BatchNorm) go as they are. It is meant for model
*updates* (the federated uplink, a refreshed model), whose deltas are close to
low rank; on a whole model it is lossy. The variant that trains U and V
directly with the deployed weights frozen is ``factorised``
(strategies/factorised.py): the same coding, another way to train the update.

The rank is ``rank`` (capped by the matrix size), or the smallest rank keeping
a fraction ``energy`` of the squared singular values. A tensor whose factors
would not be smaller than the matrix itself is sent whole. With ``rank`` the
receiver knows from the template's shapes which tensors are factorised and at
what rank, so nothing about it is sent. With ``energy`` the rank is chosen per
tensor and sent as protected side information, ``NAME/rank`` (2 bytes, 0 =
sent whole); the value segments are then optional in the payload's schema
(their presence and length travel in the header).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from pydantic import ConfigDict, Field, model_validator

from strategies.base import State, Strategy, StrategyOptions, decode_plain, encode_plain, plain_specs
from strategies.values import decode_values, encode_values, value_specs
from testbed.compute import add_flops
from testbed.payload import FORMAT_BYTES, Payload, PayloadError, Segment, SegmentSpec

RANK_BYTES = 2


class LowRankOptions(StrategyOptions):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rank: int | None = Field(default=None, ge=1)
    energy: float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="after")
    def _one_rule(self):
        if (self.rank is None) == (self.energy is None):
            raise ValueError("give exactly one of rank or energy")
        return self


def _matrix_shape(t: torch.Tensor) -> tuple[int, int]:
    m = t.shape[0]
    return m, (t.numel() // m if m else 0)


def svd_factors(tensor: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The thin SVD (float32 U, S, V^T) of a tensor seen as a C_out x rest matrix, in float64 on one
    thread: numpy's threaded OpenBLAS SVD hung (threads spinning in dgesdd) in a server process on
    a loaded machine, and the thread count would change the last bits of the factors anyway."""
    matrix = tensor.detach().to(torch.float64).reshape(tensor.shape[0], -1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        u, s, vt = torch.linalg.svd(matrix, full_matrices=False)
    finally:
        torch.set_num_threads(threads)
    return u.to(torch.float32).numpy(), s.to(torch.float32).numpy(), vt.to(torch.float32).numpy()


def _worth_factorising(r: int, m: int, n: int) -> bool:
    return 0 < r and r * (m + n) < m * n


class LowRankStrategy(Strategy):
    name = "lowrank"
    description = "Truncated SVD of every weight matrix (rank or energy), for model updates."
    Options = LowRankOptions

    def _rank(self, singular: np.ndarray) -> int:
        if self.options.rank is not None:
            return min(self.options.rank, len(singular))
        energy = np.cumsum(singular.astype(np.float64) ** 2)
        if energy[-1] == 0:
            return 1
        return int(np.searchsorted(energy / energy[-1], self.options.energy - 1e-12) + 1)

    def _fixed_rank(self, m: int, n: int) -> int:
        """With ``rank``: the rank both ends know, 0 for a tensor sent whole."""
        r = min(self.options.rank, m, n)
        return r if _worth_factorising(r, m, n) else 0

    def _factor_specs(self, name: str, like: torch.Tensor, r: int) -> list[SegmentSpec]:
        m, n = _matrix_shape(like)
        u = value_specs(f"{name}/u", m * r, self.coding, rows=m)
        return u + value_specs(f"{name}/v", n * r, self.coding, rows=n)

    def handles(self, name: str, tensor: torch.Tensor) -> bool:
        return tensor.dtype.is_floating_point and tensor.dim() >= 2

    def tensor_specs(self, name: str, like: torch.Tensor) -> list[SegmentSpec]:
        if self.options.rank is not None:
            r = self._fixed_rank(*_matrix_shape(like))
            return self._factor_specs(name, like, r) if r else plain_specs(name, like, self.coding)
        # energy: sent whole (sizes known) or factorised at the rank in NAME/rank (sizes open)
        whole = [replace(spec, optional=True) for spec in plain_specs(name, like, self.coding)]
        factors = [replace(spec, optional=True, nbytes=None) for spec in self._factor_specs(name, like, 1)]
        return [SegmentSpec(f"{name}/rank", FORMAT_BYTES, True, RANK_BYTES), *whole, *factors]

    def encode_tensor(self, name: str, tensor: torch.Tensor) -> list[Segment]:
        factors = svd_factors(tensor)
        return self.segments_at_rank(name, tensor, factors, self._rank(factors[1]))

    def segments_at_rank(self, name: str, tensor: torch.Tensor, factors, r: int) -> list[Segment]:
        """The segments of ``tensor`` factorised at rank ``r`` (0 or not worth it: sent whole)."""
        u, s, vt = factors
        m, n = u.shape[0], vt.shape[1]
        if not _worth_factorising(r, m, n):
            r = 0
        sent_rank = self.options.rank is None
        rank = [Segment(f"{name}/rank", r.to_bytes(RANK_BYTES, "little"), True)] if sent_rank else []
        if r == 0:
            return rank + encode_plain(name, tensor, self.coding)
        return (
            rank
            + encode_values(f"{name}/u", u[:, :r] * s[:r], self.coding, rows=m)
            + encode_values(f"{name}/v", vt[:r].T.copy(), self.coding, rows=n)
        )

    def decode_tensor(self, payload: Payload, name: str, like: torch.Tensor, template: State) -> torch.Tensor:
        m, n = _matrix_shape(like)
        if self.options.rank is not None:
            r = self._fixed_rank(m, n)
        else:
            r = self._sent_rank(payload, name, like)
        if r == 0:
            return decode_plain(payload, name, like, self.coding)
        u = decode_values(payload, f"{name}/u", m * r, self.coding, rows=m).reshape(m, r)
        v = decode_values(payload, f"{name}/v", n * r, self.coding, rows=n).reshape(n, r)
        add_flops(2 * m * n * r)  # the product is numpy's: the cost model counts it here
        return torch.from_numpy(u @ v.T).reshape(tuple(like.shape)).to(like.dtype)

    def _sent_rank(self, payload: Payload, name: str, like: torch.Tensor) -> int:
        """The rank in NAME/rank, checked against the matrix and the segments present."""
        rank_segment = payload[f"{name}/rank"]
        r = int.from_bytes(rank_segment.data, "little")
        m, n = _matrix_shape(like)
        if r > min(m, n):
            raise PayloadError(rank_segment.name, f"rank {r} exceeds the {m}x{n} matrix")
        whole = [spec.name for spec in plain_specs(name, like, self.coding)]
        factors = [spec.name for spec in self._factor_specs(name, like, 1)]
        expected, other = (whole, factors) if r == 0 else (factors, whole)
        for segment_name in other:
            if segment_name in payload:
                raise PayloadError(segment_name, f"surplus: {rank_segment.name} says rank {r}")
        for segment_name in expected:
            if segment_name not in payload:
                raise PayloadError(segment_name, f"missing from payload ({rank_segment.name} says rank {r})")
        return r
