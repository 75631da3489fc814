"""Payload breakdowns: what a strategy puts on the wire for a model, byte by byte.

``payload_report`` is the one description of a payload the project uses: the
``testbed inspect`` command prints it, and every run writes it to
payloads.json, so the report and users read the same numbers.

Compression ratios are against float32 of a *reference* state: the plain model
the strategy compresses (for MonoCNN, the ordinary network whose conv layers it
replaces). "Conv" means conv kernels larger than 1x1; their bytes are those of
the segments carried under the conv layer's name (values, side information,
positions, seeds), excluding biases.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from strategies.base import Strategy, is_conv_kernel, tensor_of_segment
from testbed.payload import Payload


def _module_of(tensor_name: str) -> str:
    return tensor_name.rsplit(".", 1)[0] if "." in tensor_name else ""


def fp32_bytes(state: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """(whole model, conv kernels) size of a state at float32 (other dtypes at their own size)."""
    whole = conv = 0
    for tensor in state.values():
        size = tensor.numel() * (4 if tensor.dtype.is_floating_point else tensor.element_size())
        whole += size
        if is_conv_kernel(tensor):
            conv += size
    return whole, conv


def payload_report(
    label: str,
    strategy: Strategy,
    state: Mapping[str, torch.Tensor],
    reference: Mapping[str, torch.Tensor] | None = None,
    payload: Payload | None = None,
) -> dict:
    """Describe ``strategy``'s payload for ``state`` (encoded here unless ``payload`` is given)."""
    payload = payload if payload is not None else strategy.encode(state)
    reference = reference if reference is not None else state
    conv_modules = {_module_of(n) for n, t in reference.items() if is_conv_kernel(t)}

    per_tensor: dict[str, int] = {}
    conv_bytes = 0
    for seg in payload.segments:
        tensor = tensor_of_segment(seg.name)
        per_tensor[tensor] = per_tensor.get(tensor, 0) + seg.nbytes
        if _module_of(tensor) in conv_modules and not tensor.endswith(".bias"):
            conv_bytes += seg.nbytes
    tensors = [
        {"name": name, "shape": list(t.shape), "bytes": per_tensor.pop(name, 0)} for name, t in state.items()
    ]
    # Segments not named after a state tensor (shared side information, seeds).
    tensors += [{"name": name, "shape": None, "bytes": nbytes} for name, nbytes in per_tensor.items()]

    whole_fp32, conv_fp32 = fp32_bytes(reference)
    total = payload.nbytes
    return {
        "label": label,
        "strategy": strategy.name,
        "bits": strategy.bits,
        "total_bytes": total,
        "protected_bytes": payload.protected_nbytes,
        "model_ratio": whole_fp32 / total if total else None,
        "conv_ratio": conv_fp32 / conv_bytes if conv_bytes else None,
        "segments": payload.breakdown(),
        "tensors": tensors,
    }
