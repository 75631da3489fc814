"""Low-rank factorisation of weight matrices (seed 002: update compression by matrix factorisation).

Each weight of two or more dimensions is seen as a matrix C_out x (C_in*k*k)
and sent as its truncated SVD, U*S (m x r) and V (n x r), through the value
coding; vectors (biases, BatchNorm) go as they are. It is meant for model
*updates* (the federated uplink, a refreshed model), whose deltas are close to
low rank; on a whole model it is lossy. The paper's second variant, training
U and V directly with the deployed weights frozen, is a training procedure,
not a codec, and is not implemented here (our choice).

The rank is ``rank`` (capped by the matrix size), or the smallest rank keeping
a fraction ``energy`` of the squared singular values, chosen per tensor and
sent as side information (2 bytes). A tensor whose factors would not be
smaller than the matrix itself is sent whole.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import ConfigDict, Field, model_validator

from strategies.base import State, Strategy, StrategyOptions, check_names, decode_plain, encode_plain
from strategies.values import decode_values, encode_values
from testbed.payload import Payload, PayloadError, Segment


class LowRankOptions(StrategyOptions):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rank: int | None = Field(default=None, ge=1)
    energy: float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="after")
    def _one_rule(self):
        if (self.rank is None) == (self.energy is None):
            raise ValueError("give exactly one of rank or energy")
        return self


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

    def encode(self, state: State) -> Payload:
        coding = self.coding
        segments: list[Segment] = []
        for name, tensor in state.items():
            if not (tensor.dtype.is_floating_point and tensor.dim() >= 2):
                segments += encode_plain(name, tensor, coding)
                continue
            matrix = tensor.detach().to(torch.float32).reshape(tensor.shape[0], -1).numpy()
            m, n = matrix.shape
            u, s, vt = np.linalg.svd(matrix, full_matrices=False)
            r = self._rank(s)
            if r * (m + n) >= m * n:
                segments += encode_plain(name, tensor, coding)
                segments.append(Segment(f"{name}/rank", (0).to_bytes(2, "little"), True))
                continue
            segments.append(Segment(f"{name}/rank", r.to_bytes(2, "little"), True))
            segments += encode_values(f"{name}/u", u[:, :r] * s[:r], coding, rows=m)
            segments += encode_values(f"{name}/v", vt[:r].T.copy(), coding, rows=n)
        return Payload(segments)

    def decode(self, payload: Payload, template: State) -> dict:
        check_names(payload, set(template))
        coding = self.coding
        out = {}
        for name, like in template.items():
            if not (like.dtype.is_floating_point and like.dim() >= 2):
                out[name] = decode_plain(payload, name, like, coding)
                continue
            rank_seg = payload[f"{name}/rank"]
            if rank_seg.nbytes != 2:
                raise PayloadError(rank_seg.name, f"holds {rank_seg.nbytes} bytes, expected 2")
            r = int.from_bytes(rank_seg.data, "little")
            m = like.shape[0]
            n = like.numel() // m if m else 0
            if r == 0:
                out[name] = decode_plain(payload, name, like, coding)
                continue
            if r > min(m, n):
                raise PayloadError(rank_seg.name, f"rank {r} exceeds the {m}x{n} matrix")
            u = decode_values(payload, f"{name}/u", m * r, coding, rows=m).reshape(m, r)
            v = decode_values(payload, f"{name}/v", n * r, coding, rows=n).reshape(n, r)
            out[name] = torch.from_numpy(u @ v.T).reshape(tuple(like.shape)).to(like.dtype)
        return out
