"""BatchNorm for models sent for inference: folded into the convolution before it.

A deployed model does not carry BatchNorm as a layer: in eval mode
y = gamma (conv(x) - mean) / sqrt(var + eps) + beta is one convolution with
weight W * s and bias beta + (b - mean) * s, s = gamma / sqrt(var + eps) per output
channel. A per-output-channel scale keeps every kernel symmetry of W (each kernel
is only multiplied by a number), so the symmetry codecs apply to folded models
unchanged. Folding replaces each ``nn.Conv2d`` directly followed by an
``nn.BatchNorm2d`` inside an ``nn.Sequential`` by the folded conv (which gets a
bias) and the BatchNorm by ``nn.Identity``; other BatchNorm layers stay.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """``model`` (changed in place, returned in eval mode) with every Conv2d-BatchNorm2d pair folded."""
    model.eval()
    for module in list(model.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            # exactly nn.Conv2d: a subclass may compute its weight (MonoCNN) and cannot take a folded one
            if type(conv) is nn.Conv2d and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
    return model

