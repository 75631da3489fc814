"""Kernel-symmetry DoF codec: send the free values of symmetric conv kernels.

The codec of *Leveraging Kernel Symmetry for Joint Compression and Error
Mitigation in Edge Model Transfer* (arXiv:2604.17371).

A k x k conv kernel invariant under a symmetry group has ``dof`` free values
theta = B^T vec(W) (B: orthonormal DoF basis of ``testbed.symmetry``). Modes:

- ``dof``: send theta (C_out x C_in x dof values) through the value coding;
  the receiver rebuilds W = B theta. The sender refuses a kernel that is not
  symmetric, since theta would silently drop part of it.
- ``full+project``: send all k*k values; the receiver projects each kernel
  with P = B B^T, which removes the symmetry-breaking part of the noise.
- ``posthoc``: project an ordinarily trained model and send theta (the wire
  format of ``dof``; the sender never refuses).

``repeat: r`` sends every kernel value r times (the copies side by side in each
output channel's row) and the receiver averages the copies before rebuilding the
kernel: ``dof`` with ``repeat: 2`` is the equal-redundancy baseline of
``full+project``, which for the antisymmetric groups sends each free value twice
(as a and -a).

Conv kernels are 4-D float tensors with square k x k kernels, k > 1
(``strategies.base.is_conv_kernel``); every other tensor is sent as it is.
Wire layout of a kernel: ``NAME`` (values: theta or all k*k values) and
``NAME/q`` (quantiser side information), exactly as :mod:`strategies.values`
writes them; group and mode come from the shared config, so they cost no bytes.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import ConfigDict, Field

from strategies.base import State, Strategy, StrategyOptions, is_conv_kernel
from strategies.values import decode_values, encode_values, value_specs
from testbed.payload import Payload, Segment, SegmentSpec
from testbed.symmetry import GROUPS, symmetry_group

# Relative error ||W - P W|| / ||W|| above which a kernel is not symmetric (dof mode).
SYMMETRY_TOLERANCE = 1e-4

Group = Literal[GROUPS]  # type: ignore[valid-type]
Mode = Literal["dof", "full+project", "posthoc"]


class SymmetryOptions(StrategyOptions):
    model_config = ConfigDict(extra="forbid", frozen=True)
    group: Group = "central_skew"
    mode: Mode = "dof"
    # Each kernel value sent this many times, the copies averaged at the receiver: dof with
    # repeat 2 has the redundancy of full+project (which sends every free value about twice).
    repeat: int = Field(default=1, ge=1, le=16)


class SymmetryStrategy(Strategy):
    name = "symmetry"
    description = "Symmetric conv kernels sent as their DoF (dof, posthoc) or in full and projected (full+project)."
    Options = SymmetryOptions

    # ---- training hooks --------------------------------------------------------
    def training_key(self) -> str:
        return "plain" if self.options.mode == "posthoc" else f"symmetric:{self.options.group}"

    def keeps_form_in_federated_training(self) -> bool:
        # DoF coefficients exist only for exactly symmetric kernels: the FedAvg aggregate of
        # symmetric models is symmetric again, up to the quantised uplink, so it is projected back.
        return self.options.mode != "posthoc"

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.options.mode == "posthoc":
            return model
        from testbed.models.symmetric import make_symmetric

        return make_symmetric(model, self.options.group)

    def after_training(self, model: torch.nn.Module, finetune) -> torch.nn.Module:
        from testbed.models.symmetric import strip_symmetric

        return strip_symmetric(model)

    # ---- coding ------------------------------------------------------------------
    def _basis(self, k: int) -> torch.Tensor:
        return torch.from_numpy(symmetry_group(self.options.group, k).basis.astype(np.float32))

    def handles(self, name: str, tensor: torch.Tensor) -> bool:
        return is_conv_kernel(tensor)

    def _values_per_kernel(self, k: int) -> int:
        return k * k if self.options.mode == "full+project" else symmetry_group(self.options.group, k).dof

    def tensor_specs(self, name: str, like: torch.Tensor) -> list[SegmentSpec]:
        c_out, c_in, k, _ = like.shape
        count = c_out * c_in * self._values_per_kernel(k) * self.options.repeat
        return value_specs(name, count, self.coding, rows=c_out)

    def encode_tensor(self, name: str, tensor: torch.Tensor) -> list[Segment]:
        c_out, c_in, k, _ = tensor.shape
        kernels = tensor.detach().to(torch.float32).cpu().reshape(c_out * c_in, k * k)
        if self.options.mode == "full+project":
            values = kernels
        else:
            basis = self._basis(k)
            values = kernels @ basis  # theta; torch matmul: steadily faster than numpy's for these thin shapes
            if self.options.mode == "dof":
                self._check_symmetric(name, kernels, values @ basis.T)
        # copies side by side within each output channel's row (per-channel quantiser ranges hold)
        rows = values.reshape(c_out, -1)
        return encode_values(name, torch.cat([rows] * self.options.repeat, dim=1).numpy(), self.coding, rows=c_out)

    def _check_symmetric(self, name: str, kernels: torch.Tensor, projected: torch.Tensor) -> None:
        norm = float(torch.linalg.vector_norm(kernels))
        error = float(torch.linalg.vector_norm(kernels - projected)) / norm if norm > 0 else 0.0
        if error > SYMMETRY_TOLERANCE:
            raise ValueError(
                f"symmetry (mode dof): {name} is not {self.options.group}-symmetric "
                f"(relative projection error {error:.3g} > {SYMMETRY_TOLERANCE:g}); train the model "
                f"symmetric (the strategy's prepare_model) or use mode 'posthoc'"
            )

    def decode_tensor(self, payload: Payload, name: str, like: torch.Tensor, template: State) -> torch.Tensor:
        c_out, c_in, k, _ = like.shape
        basis = self._basis(k)
        per_kernel, repeat = self._values_per_kernel(k), self.options.repeat
        received = decode_values(payload, name, c_out * c_in * per_kernel * repeat, self.coding, rows=c_out)
        values = torch.from_numpy(received).reshape(c_out, repeat, c_in * per_kernel).mean(dim=1)
        values = values.reshape(c_out * c_in, per_kernel)
        if self.options.mode == "full+project":
            kernels = values @ (basis @ basis.T)
        else:
            kernels = values @ basis.T
        return kernels.reshape(tuple(like.shape)).to(like.dtype)


__all__ = ["SymmetryOptions", "SymmetryStrategy", "SYMMETRY_TOLERANCE"]
