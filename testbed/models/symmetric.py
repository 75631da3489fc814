"""Symmetric conv kernels during training: W = B theta, so the trained model is exactly symmetric.

Every ``nn.Conv2d`` with a square k x k kernel, k > 1, gets a parametrisation
(``torch.nn.utils.parametrize``) whose stored tensor is theta, shape
[C_out, C_in, dof], and whose value is the kernel W = B theta with B the
orthonormal DoF basis of the group (``testbed.symmetry``). theta starts as the
projection of the existing weights (B^T W). Each row of B has a single
non-zero entry, so W's tied positions are exact copies (or negatives) of one
theta value: symmetry holds bit for bit, not just to rounding.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from testbed.symmetry import symmetry_group


class SymmetricKernel(nn.Module):
    """Parametrisation theta [C_out, C_in, dof] -> W [C_out, C_in, k, k] = B theta."""

    def __init__(self, group: str, k: int):
        super().__init__()
        self.group = group
        self.k = k
        basis = torch.from_numpy(symmetry_group(group, k).basis.copy()).to(torch.float32)
        # Not persistent: the basis is a function of (group, k), not a model value.
        self.register_buffer("basis", basis, persistent=False)

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        c_out, c_in, _ = theta.shape
        w = torch.einsum("oid,pd->oip", theta, self.basis.to(theta.dtype))
        return w.reshape(c_out, c_in, self.k, self.k)

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        c_out, c_in = weight.shape[:2]
        flat = weight.reshape(c_out, c_in, self.k * self.k)
        return torch.einsum("oip,pd->oid", flat, self.basis.to(weight.dtype))


def symmetric_convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """The conv layers the symmetry applies to: square kernels larger than 1 x 1."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            if kh == kw and kh > 1:
                found.append((name, module))
    return found


def make_symmetric(model: nn.Module, group: str) -> nn.Module:
    """Parametrise every square conv kernel with k > 1 as W = B theta (in place; returns model)."""
    symmetry_group(group, 3)  # unknown group names fail here, before the model is touched
    for _, conv in symmetric_convs(model):
        if parametrize.is_parametrized(conv, "weight"):
            raise ValueError(f"{conv!r} already has a parametrised weight")
        with torch.no_grad():
            parametrize.register_parametrization(conv, "weight", SymmetricKernel(group, conv.kernel_size[0]))
    return model


def strip_symmetric(model: nn.Module) -> nn.Module:
    """Remove the symmetric parametrisations, leaving plain (exactly symmetric) weights."""
    for module in model.modules():
        if not parametrize.is_parametrized(module, "weight"):
            continue
        if any(isinstance(p, SymmetricKernel) for p in module.parametrizations["weight"]):
            with torch.no_grad():
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model
