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
from pydantic import ConfigDict

from strategies.base import State, Strategy, StrategyOptions, encode_plain, is_conv_kernel, plain_specs
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

    def tensor_specs(self, name: str, like: torch.Tensor) -> list[SegmentSpec]:
        if self.options.mode == "full+project":
            return plain_specs(name, like, self.coding)
        c_out, c_in, k, _ = like.shape
        dof = symmetry_group(self.options.group, k).dof
        return value_specs(name, c_out * c_in * dof, self.coding, rows=c_out)

    def encode_tensor(self, name: str, tensor: torch.Tensor) -> list[Segment]:
        if self.options.mode == "full+project":
            return encode_plain(name, tensor, self.coding)
        c_out, c_in, k, _ = tensor.shape
        basis = self._basis(k)
        kernels = tensor.detach().to(torch.float32).cpu().reshape(c_out * c_in, k * k)
        theta = kernels @ basis  # torch matmul: steadily faster than numpy's for these thin shapes
        if self.options.mode == "dof":
            self._check_symmetric(name, kernels, theta @ basis.T)
        return encode_values(name, theta.numpy(), self.coding, rows=c_out)

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
        if self.options.mode == "full+project":
            values = decode_values(payload, name, like.numel(), self.coding, rows=c_out)
            kernels = torch.from_numpy(values).reshape(c_out * c_in, k * k) @ (basis @ basis.T)
        else:
            theta = decode_values(payload, name, c_out * c_in * basis.shape[1], self.coding, rows=c_out)
            kernels = torch.from_numpy(theta).reshape(c_out * c_in, basis.shape[1]) @ basis.T
        return kernels.reshape(tuple(like.shape)).to(like.dtype)


__all__ = ["SymmetryOptions", "SymmetryStrategy", "SYMMETRY_TOLERANCE"]
