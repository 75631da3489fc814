"""A device's compute: a deterministic cost model, so on-device times do not depend on this machine.

A device's work in a round is counted in FLOPs (:meth:`DeviceRun.compute`) from costs counted
once per model with torch's FLOP counter (:class:`torch.utils.flop_counter.FlopCounterMode`):

- decoding a payload: the matrix products and convolutions the strategy's decoder runs, plus one
  operation per value of the decoded state (**our choice**: the counter sees only matrix products
  and convolutions; dequantisation and entropy decoding are element-wise, one operation per value);
- evaluating: one image's forward pass, times the images of the device's test split;
- training (federated): one image's forward and backward pass (counted on a batch of two, halved:
  BatchNorm needs two), times the images trained on (split size x epochs); the optimiser's update
  is left out (a few operations per parameter per step, small beside the passes).

The device's time is its FLOPs over its speed, ``fleet.reference_flops_per_s`` x its
``speed_factor`` (the trace's ``compute_factor``); its round latency is the airtime of its
transfers plus that time, and with ``round.deadline_s`` a device whose latency exceeds the
deadline is late. Counts depend on shapes only, so every figure here is the same on any
machine, cohort size or worker count.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def count_flops(work: Callable[[], object]) -> int:
    """FLOPs of the matrix products and convolutions ``work()`` runs (torch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        work()
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class ModelCosts:
    """FLOPs of one model's work on a device, counted once per model."""

    decode: float  # decoding one payload into the model
    forward: float  # one image's forward pass (evaluation)
    train: float  # one image's forward and backward pass (local training)


def model_costs(model: torch.nn.Module, image: torch.Tensor, label: torch.Tensor, decode: Callable[[], dict]) -> ModelCosts:
    """The costs of ``model`` for images shaped like ``image`` (C x H x W); ``decode()`` decodes a
    payload into a state."""
    decoded: list = []
    decode_flops = count_flops(lambda: decoded.append(decode()))
    decode_flops += sum(t.numel() for t in decoded[0].values() if t.dtype.is_floating_point)
    probe = copy.deepcopy(model)
    pair, targets = image.unsqueeze(0).expand(2, *image.shape).contiguous(), label.reshape(1).expand(2).contiguous()
    probe.eval()
    with torch.no_grad():
        forward = count_flops(lambda: probe(pair[:1]))
    probe.train()
    train = count_flops(lambda: F.cross_entropy(probe(pair), targets).backward()) / 2
    return ModelCosts(decode=float(decode_flops), forward=float(forward), train=float(train))


def device_timing(flops: float, airtimes, flops_per_s: float, deadline_s: float | None) -> dict:
    """A device's ``compute_s`` (NaN: no work counted), ``latency_s`` (airtime + compute) and ``late``."""
    airtime = sum(float(a) for a in airtimes if a is not None and math.isfinite(float(a)))
    compute_s = flops / flops_per_s if flops else math.nan
    latency = airtime + (compute_s if flops else 0.0)
    return {"compute_s": compute_s, "latency_s": latency, "late": deadline_s is not None and latency > deadline_s}
