"""Models by name: DeepCNN (our design) and a CIFAR ResNet-18, plus MonoCNN layers."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from testbed.models.deepcnn import DeepCNN
from testbed.models.monoconv import MonoConv2d, make_monocnn
from testbed.models.resnet import ResNet18

ARCHS = {"deepcnn": (DeepCNN, 32), "resnet18": (ResNet18, 64)}  # class, default width


def build_model(cfg, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """The model ``cfg.arch`` (a ModelConfig) for inputs C x H x W and ``num_classes`` outputs."""
    if cfg.arch not in ARCHS:
        raise ValueError(f"unknown model arch {cfg.arch!r}; known: {', '.join(ARCHS)}")
    cls, default_width = ARCHS[cfg.arch]
    width = cfg.width if cfg.width is not None else default_width
    return cls(in_channels=int(input_shape[0]), num_classes=num_classes, width=width)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters in total, in 3x3 conv kernels, and the learnable values actually trained."""
    total = sum(p.numel() for p in model.parameters())
    conv3 = sum(
        m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
    )
    return {"total": total, "conv3x3": conv3}


__all__ = ["ARCHS", "DeepCNN", "MonoConv2d", "ResNet18", "build_model", "make_monocnn", "parameter_counts"]
