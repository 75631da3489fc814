"""Top-k sparsification: the update compressor of federated learning, values plus their positions.

Each float tensor of n values keeps its m = max(1, round(keep * n)) entries of
largest magnitude; the rest decode to 0. It is meant for model *updates* (a
delta against the receiver's model), where most entries are small; the
update-compression baselines of *Update Compression for Deep Neural Networks on
the Edge* (arXiv:2203.04516) are of this kind. Tensors of fewer than
``min_size`` values (biases, BatchNorm) are sent whole through the value coding.

Wire layout of a sparsified tensor NAME (m follows from ``keep`` and the
template's shape, so it costs no bytes):

- ``NAME`` and ``NAME/q``: the m kept values in flat order through the value coding
  (quantised per tensor, since rows keep unequal counts);
- ``NAME/pos``: their positions, a bitmask or bit-packed flat indices, whichever is
  smaller (the pruning baseline's position coding), always protected: a damaged
  index would move a value to another weight (our choice).
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import ConfigDict, Field

from strategies.base import State, Strategy, StrategyOptions
from strategies.prune import BITMASK, index_bits, pack_indices, positions_nbytes, unpack_indices
from strategies.values import decode_values, encode_values, value_specs
from testbed import bitpack
from testbed.payload import FORMAT_BYTES, Payload, PayloadError, Segment, SegmentSpec


class TopKOptions(StrategyOptions):
    model_config = ConfigDict(extra="forbid", frozen=True)
    keep: float = Field(gt=0.0, le=1.0)  # fraction of each tensor's entries kept
    min_size: int = Field(default=64, ge=1)  # smaller tensors go whole


class TopKStrategy(Strategy):
    name = "topk"
    description = "Top-k sparse update: the largest-magnitude fraction of each tensor, with positions."
    Options = TopKOptions

    def kept_count(self, n: int) -> int:
        return min(n, max(1, int(round(self.options.keep * n))))

    def handles(self, name: str, tensor: torch.Tensor) -> bool:
        return tensor.dtype.is_floating_point and tensor.numel() >= self.options.min_size

    def tensor_specs(self, name: str, like: torch.Tensor) -> list[SegmentSpec]:
        n = like.numel()
        m = self.kept_count(n)
        _, position_bytes = positions_nbytes(n, m)
        return [*value_specs(name, m, self.coding), SegmentSpec(f"{name}/pos", FORMAT_BYTES, True, position_bytes)]

    def encode_tensor(self, name: str, tensor: torch.Tensor) -> list[Segment]:
        flat = tensor.detach().to(torch.float32).cpu().numpy().reshape(-1)
        n = flat.size
        m = self.kept_count(n)
        # stable order of ties: the m largest magnitudes, sent in flat order
        chosen = np.sort(np.argsort(-np.abs(flat), kind="stable")[:m])
        kind, _ = positions_nbytes(n, m)
        if kind == BITMASK:
            mask = np.zeros(n, np.uint8)
            mask[chosen] = 1
            positions = bitpack.pack(mask, 1)
        else:
            positions = pack_indices(chosen, index_bits(n))
        return [*encode_values(name, flat[chosen], self.coding, rows=1), Segment(f"{name}/pos", positions, True)]

    def decode_tensor(self, payload: Payload, name: str, like: torch.Tensor, template: State) -> torch.Tensor:
        n = like.numel()
        m = self.kept_count(n)
        values = decode_values(payload, name, m, self.coding, rows=1)
        segment = payload[f"{name}/pos"]
        kind, _ = positions_nbytes(n, m)
        if kind == BITMASK:
            positions = np.flatnonzero(bitpack.unpack(segment.data, n, 1))
        else:
            positions = unpack_indices(segment.data, m, index_bits(n))
        if len(positions) != m or np.any(positions >= n) or np.any(np.diff(positions) <= 0):
            raise PayloadError(segment.name, f"does not list {m} distinct positions below {n} in order")
        flat = np.zeros(n, dtype=np.float32)
        flat[positions] = values
        return torch.from_numpy(flat.reshape(tuple(like.shape))).to(like.dtype)
