"""Kernel-symmetry DoF codec (seed 000): send the free values of symmetric conv kernels.

A k x k conv kernel invariant under a symmetry group has ``dof`` free values
theta = B^T vec(W) (B: orthonormal DoF basis of ``testbed.symmetry``). Modes:

- ``dof``: send theta (C_out x C_in x dof values) through the value coding;
  the receiver rebuilds W = B theta. The sender refuses a kernel that is not
  symmetric, since theta would silently drop part of it.
- ``full+project``: send all k*k values; the receiver projects each kernel
  with P = B B^T, which removes the symmetry-breaking part of the noise.
- ``posthoc``: project an ordinarily trained model and send theta (the wire
  format of ``dof``; the sender never refuses).

Conv kernels are 4-D float tensors with square k x k kernels, k > 1; every
other tensor is sent as it is (``encode_plain``). Wire layout of a kernel:
``NAME`` (values: theta or all k*k values) and ``NAME/q`` (quantiser side
information), exactly as :mod:`strategies.values` writes them; group and mode
come from the shared config, so they cost no bytes.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import ConfigDict

from strategies.base import State, Strategy, StrategyOptions, check_names, decode_plain, encode_plain, is_conv_kernel
from strategies.values import decode_values, encode_values
from testbed.payload import Payload
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

    def encode(self, state: State) -> Payload:
        coding, mode = self.coding, self.options.mode
        segments = []
        for name, tensor in state.items():
            if not is_conv_kernel(tensor) or mode == "full+project":
                segments += encode_plain(name, tensor, coding)
                continue
            c_out, c_in, k, _ = tensor.shape
            basis = self._basis(k)
            kernels = tensor.detach().to(torch.float32).cpu().reshape(c_out * c_in, k * k)
            theta = kernels @ basis  # torch matmul: steadily faster than numpy's for these thin shapes
            if mode == "dof":
                self._check_symmetric(name, kernels, theta @ basis.T)
            segments += encode_values(name, theta.numpy(), coding, rows=c_out)
        return Payload(segments)

    def _check_symmetric(self, name: str, kernels: torch.Tensor, projected: torch.Tensor) -> None:
        norm = float(torch.linalg.vector_norm(kernels))
        error = float(torch.linalg.vector_norm(kernels - projected)) / norm if norm > 0 else 0.0
        if error > SYMMETRY_TOLERANCE:
            raise ValueError(
                f"symmetry (mode dof): {name} is not {self.options.group}-symmetric "
                f"(relative projection error {error:.3g} > {SYMMETRY_TOLERANCE:g}); train the model "
                f"symmetric (the strategy's prepare_model) or use mode 'posthoc'"
            )

    def decode(self, payload: Payload, template: State) -> dict[str, torch.Tensor]:
        check_names(payload, set(template))
        coding, mode = self.coding, self.options.mode
        out = {}
        for name, like in template.items():
            if not is_conv_kernel(like):
                out[name] = decode_plain(payload, name, like, coding)
                continue
            c_out, c_in, k, _ = like.shape
            basis = self._basis(k)
            if mode == "full+project":
                values = decode_values(payload, name, like.numel(), coding, rows=c_out)
                kernels = torch.from_numpy(values).reshape(c_out * c_in, k * k) @ (basis @ basis.T)
            else:
                theta = decode_values(payload, name, c_out * c_in * basis.shape[1], coding, rows=c_out)
                kernels = torch.from_numpy(theta).reshape(c_out * c_in, basis.shape[1]) @ basis.T
            out[name] = kernels.reshape(tuple(like.shape)).to(like.dtype)
        return out


__all__ = ["SymmetryOptions", "SymmetryStrategy", "SYMMETRY_TOLERANCE", "is_conv_kernel"]
