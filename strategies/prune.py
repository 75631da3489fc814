"""Pruning baseline: keep a fraction of each conv layer's weights and send them with their positions.

Each conv kernel tensor (4-D, square k x k, k > 1) keeps m = round(keep * n)
of its n weights, chosen by ``method`` (largest magnitude, or uniformly at
random from a generator seeded by (seed, tensor name)); ``match: GROUP`` sets
keep to that group's dof / k^2 per layer, so the pruned layer sends exactly as
many values as the symmetry DoF codec. Other tensors are sent as they are.
With ``finetune`` the pruned model is fine-tuned with a fixed mask: by default for the
whole training recipe again, with ``finetune_epochs: e`` for the recipe's last e epochs
(pruning after epochs - e), so that it has the training budget of every other model.

Wire layout of a pruned tensor NAME (m is computed by the receiver from the
config and the template's shape, and so is the position coding chosen from
n and m, so neither costs bytes):

- ``NAME`` and ``NAME/q``: the m kept values in flat (row-major) order through
  the value coding. Quantised per tensor even when ``per_channel`` is set,
  since channels keep unequal counts (our choice).
- ``NAME/pos``: the positions, a bitmask of ceil(n/8) bytes or the sorted flat
  indices at ceil(log2 n) bits each, bit-packed, whichever is smaller (a tie
  goes to the bitmask). Protected or exposed (``positions``).

Damaged exposed positions never crash the decoder (our choice): values go to
the listed positions in order; a bitmask with more set bits than m leaves the
extra (last) positions at 0, one with fewer drops the surplus values; indices
out of range are dropped and a repeated index keeps one of its values. With
protected positions a count that does not match m is a PayloadError.
"""

from __future__ import annotations

import zlib
from typing import Literal

import numpy as np
import torch
from pydantic import ConfigDict, Field, model_validator

from strategies.base import State, Strategy, StrategyOptions, is_conv_kernel
from strategies.symmetry import Group
from strategies.values import decode_values, encode_values, value_specs
from testbed import bitpack
from testbed.payload import FORMAT_BYTES, Payload, PayloadError, Segment, SegmentSpec
from testbed.symmetry import symmetry_group

BITMASK, INDICES = 0, 1


class PruneOptions(StrategyOptions):
    model_config = ConfigDict(extra="forbid", frozen=True)
    keep: float | None = Field(default=None, gt=0.0, le=1.0)
    match: Group | None = None
    method: Literal["magnitude", "random"] = "magnitude"
    seed: int = Field(default=0, ge=0)
    finetune: bool = False
    # None: fine-tuning repeats the whole training recipe after pruning (twice the budget);
    # e: the recipe's last e epochs are the fine-tuning (the same budget as every other model).
    finetune_epochs: float | None = Field(default=None, gt=0)
    positions: Literal["protected", "exposed"] = "protected"

    @model_validator(mode="after")
    def _keep_or_match(self):
        if (self.keep is None) == (self.match is None):
            raise ValueError("set exactly one of keep (a fraction) and match (a symmetry group)")
        if self.finetune_epochs is not None and not self.finetune:
            raise ValueError("finetune_epochs needs finetune: true")
        return self


def index_bits(n: int) -> int:
    """Bits of one flat index into n positions: ceil(log2 n), at least 1."""
    return max(1, (n - 1).bit_length())


def pack_indices(indices: np.ndarray, bits: int) -> bytes:
    """Unsigned ints below 2**bits (bits up to 32), exactly ceil(len*bits/8) bytes, LSB first."""
    if bits <= 16:
        return bitpack.pack(indices, bits)
    planes = np.unpackbits(np.asarray(indices, dtype="<u4").view(np.uint8), bitorder="little")
    return np.packbits(planes.reshape(-1, 32)[:, :bits].reshape(-1), bitorder="little").tobytes()


def unpack_indices(data: bytes, count: int, bits: int) -> np.ndarray:
    if bits <= 16:
        return bitpack.unpack(data, count, bits).astype(np.int64)
    planes = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[: count * bits]
    widened = np.zeros((count, 32), np.uint8)
    widened[:, :bits] = planes.reshape(count, bits)
    return np.packbits(widened.reshape(-1), bitorder="little").view("<u4").astype(np.int64)


def positions_nbytes(n: int, m: int) -> tuple[int, int]:
    """(kind, bytes) of the cheaper position coding for m kept of n."""
    mask_bytes = bitpack.packed_nbytes(n, 1)
    index_bytes = bitpack.packed_nbytes(m, index_bits(n))
    return (INDICES, index_bytes) if index_bytes < mask_bytes else (BITMASK, mask_bytes)


class PruneStrategy(Strategy):
    name = "prune"
    description = "Pruning baseline: keep a fraction of conv weights (magnitude or random) plus their positions."
    Options = PruneOptions

    # ---- what is kept ----------------------------------------------------------
    def keep_fraction(self, k: int) -> float:
        if self.options.match is not None:
            return symmetry_group(self.options.match, k).dof / (k * k)
        return float(self.options.keep)

    def kept_count(self, shape: tuple[int, ...]) -> int:
        n = int(np.prod(shape))
        return min(n, max(0, int(round(self.keep_fraction(shape[-1]) * n))))

    def keep_mask(self, name: str, weights: np.ndarray) -> np.ndarray:
        """Flat boolean mask of the kept weights of one conv tensor."""
        flat = weights.reshape(-1)
        n, m = flat.size, self.kept_count(weights.shape)
        mask = np.zeros(n, dtype=bool)
        if m == n:
            mask[:] = True
        elif m > 0:
            if self.options.method == "magnitude":
                chosen = np.argpartition(np.abs(flat), n - m)[n - m :]
            else:
                rng = np.random.default_rng([self.options.seed, zlib.crc32(name.encode("utf-8"))])
                # the m largest of n uniform keys: a uniform m-subset, in O(n) (choice() permutes all n)
                chosen = np.argpartition(rng.random(n, dtype=np.float32), n - m)[n - m :]
            mask[chosen] = True
        return mask

    # ---- training hooks --------------------------------------------------------
    def training_key(self) -> str:
        o = self.options
        if not o.finetune:
            return "plain"
        keep = f"match={o.match}" if o.match is not None else f"{o.keep:g}"
        within = "" if o.finetune_epochs is None else f":within={o.finetune_epochs:g}"
        return f"prune:{o.method}:{keep}:finetune:{o.seed}{within}"

    def finetune_epochs_within_budget(self) -> float | None:
        return self.options.finetune_epochs

    def after_training(self, model: torch.nn.Module, finetune) -> torch.nn.Module:
        """With ``finetune``: prune with a fixed mask, fine-tune, return plain weights with the zeros."""
        if not self.options.finetune:
            return model
        from torch.nn.utils import prune

        pruned = []
        for module_name, module in model.named_modules():
            weight = getattr(module, "weight", None)
            if isinstance(module, torch.nn.Conv2d) and weight is not None and is_conv_kernel(weight):
                name = f"{module_name}.weight" if module_name else "weight"
                mask = self.keep_mask(name, weight.detach().cpu().numpy())
                mask_t = torch.from_numpy(mask.reshape(tuple(weight.shape))).to(weight.device, weight.dtype)
                prune.custom_from_mask(module, "weight", mask_t)
                pruned.append(module)
        finetune(model)
        for module in pruned:
            prune.remove(module, "weight")
        return model

    # ---- coding ------------------------------------------------------------------
    def handles(self, name: str, tensor: torch.Tensor) -> bool:
        return is_conv_kernel(tensor)

    @property
    def protects_positions(self) -> bool:
        return self.options.positions == "protected"

    def tensor_specs(self, name: str, like: torch.Tensor) -> list[SegmentSpec]:
        n, m = like.numel(), self.kept_count(tuple(like.shape))
        _, position_bytes = positions_nbytes(n, m)
        positions = SegmentSpec(f"{name}/pos", FORMAT_BYTES, self.protects_positions, position_bytes)
        return [*value_specs(name, m, self.coding), positions]

    def encode_tensor(self, name: str, tensor: torch.Tensor) -> list[Segment]:
        weights = tensor.detach().to(torch.float32).cpu().numpy()
        mask = self.keep_mask(name, weights)
        n, m = mask.size, int(mask.sum())
        kind, _ = positions_nbytes(n, m)
        if kind == INDICES:
            positions = pack_indices(np.flatnonzero(mask), index_bits(n))
        else:
            positions = bitpack.pack(mask.astype(np.uint8), 1)
        return [
            *encode_values(name, weights.reshape(-1)[mask], self.coding, rows=1),
            Segment(f"{name}/pos", positions, self.protects_positions, FORMAT_BYTES),
        ]

    def decode_tensor(self, payload: Payload, name: str, like: torch.Tensor, template: State) -> torch.Tensor:
        n, m = like.numel(), self.kept_count(tuple(like.shape))
        values = decode_values(payload, name, m, self.coding, rows=1)
        positions = self._positions(payload[f"{name}/pos"], n, m)
        flat = np.zeros(n, dtype=np.float32)
        used = min(len(positions), m)
        flat[positions[:used]] = values[:used]
        return torch.from_numpy(flat.reshape(tuple(like.shape))).to(like.dtype)

    def _positions(self, segment: Segment, n: int, m: int) -> np.ndarray:
        """The kept positions listed by ``segment`` (its size was checked against the schema)."""
        kind, _ = positions_nbytes(n, m)
        if kind == BITMASK:
            positions = np.flatnonzero(bitpack.unpack(segment.data, n, 1))
        else:
            positions = unpack_indices(segment.data, m, index_bits(n))
            positions = positions[positions < n]
        if self.protects_positions and (len(positions) != m or (kind == INDICES and np.any(np.diff(positions) <= 0))):
            raise PayloadError(segment.name, f"lists {len(positions)} valid positions in order, expected {m}")
        return positions
