"""Models by name: the built-in ones, registered ones, and installed packages' entry points.

A model is a factory called with keywords, ``factory(in_channels=C, num_classes=K)``
plus ``width=W`` when the config sets ``model.width`` (else the factory's own
default applies), returning an ``nn.Module`` that takes N x C x H x W inputs
and gives N x K logits. A class is a factory. Register one in this module's
table, with ``@register_model("name")``, or from a package::

    [project.entry-points."testbed.models"]
    mynet = "mypackage.nets:MyNet"

A config names it in ``model.arch``. Strategies turn any of them into their
trained form (``prepare_model``: symmetric kernels, MonoCNN layers).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from torch import nn

from testbed.errors import ConfigError
from testbed.plugins import Registry


class ModelError(ConfigError):
    """A model config that cannot be built; the message is one line."""


MODELS = Registry(
    "model arch",
    "testbed.models",
    {"deepcnn": "testbed.models.deepcnn:DeepCNN", "resnet18": "testbed.models.resnet:ResNet18"},
    ModelError,
)
register_model = MODELS.register


def build_model(cfg, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """The model ``cfg.arch`` (a ModelConfig) for inputs C x H x W and ``num_classes`` outputs."""
    factory = MODELS.get(cfg.arch)
    kwargs = {"in_channels": int(input_shape[0]), "num_classes": int(num_classes)}
    if cfg.width is not None:
        kwargs["width"] = cfg.width
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # no signature to check (some C callables): just call it
        signature = None
    try:
        if signature is not None:
            signature.bind(**kwargs)
    except TypeError as exc:
        raise ModelError(
            f"model arch {cfg.arch!r}: {factory!r} cannot be called as factory({', '.join(kwargs)}) ({exc})"
        ) from None
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise ModelError(f"model arch {cfg.arch!r}: its factory returned a {type(model).__name__}, not an nn.Module")
    return model
