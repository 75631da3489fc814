"""A device's compute: a deterministic cost model, so on-device times do not depend on this machine.

A device's work in a round is counted in FLOPs (:meth:`DeviceRun.compute`) from costs counted
once per model with torch's FLOP counter (:class:`torch.utils.flop_counter.FlopCounterMode`):

- decoding a payload: the matrix products and convolutions the strategy's decoder runs (those done
  in numpy, a low-rank factor product, are counted by the decoder itself: :func:`add_flops`), plus
  one operation per value of the decoded state (**our choice**: the counter sees only matrix
  products and convolutions; dequantisation and entropy decoding are element-wise, one operation
  per value);
- evaluating: one image's forward pass, times the images of the device's test split;
- training (federated, and the data-sharing devices' learning): one image's forward and backward
  pass (counted on a batch of two, halved: BatchNorm needs two), times the images trained on
  (images x epochs); the optimiser's update is left out (a few operations per parameter per step,
  small beside the passes);
- the other scenarios' device work, by the same rules: an update's decode (its matrix products,
  and one operation per value of each delta it adds) and the evaluation on the new and the old
  task's images; split inference's head (one image's forward pass through the device's part, times
  the images) and feature encoding (one operation per feature value); data sharing's INR decoding
  (the SIRENs' forward passes over every pixel), JPEG encoding and decoding (one operation per
  pixel value: **our choice**, no torch counter sees them) and its models' training and evaluation.

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
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.nn.functional as F


_OWN_COUNTS: ContextVar[list[int] | None] = ContextVar("own_flop_counts", default=None)


def add_flops(flops: int) -> None:
    """Count ``flops`` of work torch's counter does not see (a product done in numpy, an element-wise
    step) towards the :func:`count_flops` running, if one is."""
    counts = _OWN_COUNTS.get()
    if counts is not None:
        counts.append(int(flops))


def count_flops(work: Callable[[], object]) -> int:
    """FLOPs of the matrix products and convolutions ``work()`` runs (torch's FLOP counter), plus what
    it counts itself (:func:`add_flops`)."""
    from torch.utils.flop_counter import FlopCounterMode

    own: list[int] = []
    token = _OWN_COUNTS.set(own)
    try:
        with FlopCounterMode(display=False) as counter:
            work()
    finally:
        _OWN_COUNTS.reset(token)
    return int(counter.get_total_flops()) + sum(own)


@dataclass(frozen=True)
class ModelCosts:
    """FLOPs of one model's work on a device, counted once per model."""

    decode: float  # decoding one payload into the model
    forward: float  # one image's forward pass (evaluation)
    train: float  # one image's forward and backward pass (local training)


def forward_flops(model: torch.nn.Module, image: torch.Tensor) -> float:
    """One image's forward pass through ``model`` (a copy, in eval mode, without gradients)."""
    probe = copy.deepcopy(model)
    probe.eval()
    with torch.no_grad():
        return float(count_flops(lambda: probe(image.unsqueeze(0))))


def train_flops(model: torch.nn.Module, image: torch.Tensor, label: torch.Tensor) -> float:
    """One image's forward and backward pass through a copy of ``model`` (counted on a batch of
    two, halved: BatchNorm needs two)."""
    probe = copy.deepcopy(model)
    pair, targets = image.unsqueeze(0).expand(2, *image.shape).contiguous(), label.reshape(1).expand(2).contiguous()
    probe.train()
    return count_flops(lambda: F.cross_entropy(probe(pair), targets).backward()) / 2


def decode_flops(decode: Callable[[], dict]) -> float:
    """Decoding a payload: its matrix products and convolutions, plus one operation per float value
    of the state it decodes into."""
    decoded: list = []
    flops = count_flops(lambda: decoded.append(decode()))
    return float(flops + sum(t.numel() for t in decoded[0].values() if t.dtype.is_floating_point))


def model_costs(model: torch.nn.Module, image: torch.Tensor, label: torch.Tensor, decode: Callable[[], dict]) -> ModelCosts:
    """The costs of ``model`` for images shaped like ``image`` (C x H x W); ``decode()`` decodes a
    payload into a state."""
    return ModelCosts(decode=decode_flops(decode), forward=forward_flops(model, image), train=train_flops(model, image, label))


def device_timing(flops: float, airtimes, flops_per_s: float, deadline_s: float | None) -> dict:
    """A device's ``compute_s`` (NaN: no work counted), ``latency_s`` (airtime + compute) and ``late``."""
    airtime = sum(float(a) for a in airtimes if a is not None and math.isfinite(float(a)))
    compute_s = flops / flops_per_s if flops else math.nan
    latency = airtime + (compute_s if flops else 0.0)
    return {"compute_s": compute_s, "latency_s": latency, "late": deadline_s is not None and latency > deadline_s}
