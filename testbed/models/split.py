"""Cutting a model in two at a boundary of its top-level blocks: the device's head, the server's tail.

A model is seen as a chain of named stages whose composition is its forward
pass; a split point is the name of the stage after which the model is cut
(``"input"``: before the first, so the device sends its images). The stages are

- DeepCNN: ``block1`` .. ``block6`` (conv-BN-ReLU, with the max pooling that
  follows blocks 1, 3 and 5), ``pool`` (global average pooling, flattened), ``head``;
- ResNet-18: ``stem`` (conv-BN-ReLU), ``layer1`` .. ``layer4``, ``pool``, ``fc``;
- an ``nn.Sequential``: its children, by name;
- any other model: what its ``split_stages()`` method returns, a list of
  ``(name, module)`` pairs whose composition is ``forward``.

The head and the tail are views of the same modules (no copies): loading a
state into the model loads it into both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from testbed.models.deepcnn import POOL_AFTER, WIDTH_MULTIPLIERS, DeepCNN
from testbed.models.registry import ModelError
from testbed.models.resnet import ResNet18

INPUT = "input"  # the split point before the first stage: the device sends the input itself


class _ReLUAfter(nn.Module):
    def __init__(self, *modules: nn.Module):
        super().__init__()
        self.body = nn.Sequential(*modules)

    def forward(self, x):
        return torch.relu(self.body(x))


class _GlobalPool(nn.Module):
    def forward(self, x):
        return nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)


def _deepcnn_stages(model: DeepCNN) -> list[tuple[str, nn.Module]]:
    layers = list(model.features)
    stages, i = [], 0
    for block in range(len(WIDTH_MULTIPLIERS)):
        width = 4 if block in POOL_AFTER else 3  # conv, BN, ReLU (+ max pooling)
        stages.append((f"block{block + 1}", nn.Sequential(*layers[i : i + width])))
        i += width
    return stages + [("pool", nn.Sequential(model.pool, nn.Flatten(1))), ("head", model.head)]


def _resnet_stages(model: ResNet18) -> list[tuple[str, nn.Module]]:
    return [
        ("stem", _ReLUAfter(model.conv1, model.bn1)),
        ("layer1", model.layer1), ("layer2", model.layer2), ("layer3", model.layer3), ("layer4", model.layer4),
        ("pool", _GlobalPool()), ("fc", model.fc),
    ]


def stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's named stages, in order (see the module docstring)."""
    own = getattr(model, "split_stages", None)
    if callable(own):
        found = list(own())
    elif isinstance(model, DeepCNN):
        found = _deepcnn_stages(model)
    elif isinstance(model, ResNet18):
        found = _resnet_stages(model)
    elif isinstance(model, nn.Sequential):
        found = list(model.named_children())
    else:
        raise ModelError(
            f"model {type(model).__name__} has no split points: give it a split_stages() method returning "
            "[(name, module), ...] whose composition is its forward pass"
        )
    names = [name for name, _ in found]
    if INPUT in names or len(set(names)) != len(names):
        raise ModelError(f"model {type(model).__name__}: stage names must be unique and not {INPUT!r}: {names}")
    return found


@dataclass(frozen=True)
class SplitPoint:
    name: str  # the stage after which the model is cut ("input": before the first)
    shape: tuple[int, ...]  # the feature tensor of one sample there (C x H x W, or K after pooling)

    @property
    def elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@torch.no_grad()
def split_points(model: nn.Module, input_shape: Sequence[int]) -> list[SplitPoint]:
    """Every split point of the model with the shape of one sample's features there (the last
    stage's output, the logits, is not a split point: the device would hold the whole model)."""
    chain = stages(model)
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, *input_shape)
        points = [SplitPoint(INPUT, tuple(input_shape))]
        for name, stage in chain[:-1]:
            x = stage(x)
            points.append(SplitPoint(name, tuple(x.shape[1:])))
    finally:
        model.train(was_training)
    return points


def split_model(model: nn.Module, point: str) -> tuple[nn.Sequential, nn.Sequential]:
    """(head, tail): the stages up to and including ``point``, and the rest."""
    chain = stages(model)
    names = [INPUT] + [name for name, _ in chain[:-1]]
    if point not in names:
        raise ModelError(f"split point {point!r} is not one of {type(model).__name__}'s: {', '.join(names)}")
    cut = names.index(point)
    return nn.Sequential(*(m for _, m in chain[:cut])), nn.Sequential(*(m for _, m in chain[cut:]))
