"""Models by name (DeepCNN, our design; a CIFAR ResNet-18; plug-ins), plus MonoCNN layers."""

from __future__ import annotations

from torch import nn

from testbed.models.deepcnn import DeepCNN
from testbed.models.monoconv import MonoConv2d, make_monocnn
from testbed.models.registry import MODELS, ModelError, build_model, register_model
from testbed.models.resnet import ResNet18


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters in total and in 3x3 conv kernels."""
    total = sum(p.numel() for p in model.parameters())
    conv3 = sum(
        m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
    )
    return {"total": total, "conv3x3": conv3}


__all__ = [
    "MODELS",
    "DeepCNN",
    "ModelError",
    "MonoConv2d",
    "ResNet18",
    "build_model",
    "make_monocnn",
    "parameter_counts",
    "register_model",
]
