"""The one small interface every compression strategy implements.

A strategy turns a model's state (a torch state_dict) into a :class:`Payload`
on the server and back into a state on the device, given the receiver's
template (a state_dict of the same architecture: names, shapes, dtypes; its
values are never read). Options are a pydantic model, so configs are checked
before anything runs. ``prepare_model`` is the optional training-time hook
(symmetric parametrisation, MonoCNN layers...).

Segment names start with the tensor name they carry (``conv1.weight``,
``conv1.weight/q``), which is how byte counts are attributed to tensors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from strategies.values import ValueCoding, decode_values, encode_values
from testbed.payload import FORMAT_BYTES, Payload, PayloadError, Segment

State = Mapping[str, torch.Tensor]


class StrategyOptions(ValueCoding):
    """Options shared by all strategies: the value coding of the tensors they send."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Strategy(ABC):
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = StrategyOptions

    def __init__(self, **options):
        self.options = self.Options(**options)

    @property
    def coding(self) -> ValueCoding:
        o = self.options
        return ValueCoding(bits=o.bits, dtype=o.dtype, per_channel=o.per_channel, entropy=o.entropy)

    @property
    def bits(self) -> int | None:
        return getattr(self.options, "bits", None)

    def training_key(self) -> str:
        """What the model this strategy sends must be trained as.

        Strategies with the same key share one trained model (and one cache
        entry); ``"plain"`` is an ordinary model.
        """
        return "plain"

    def keeps_form_in_federated_training(self) -> bool:
        """Whether federated rounds must keep the model in this strategy's trained form.

        When true, devices train in ``prepare_model``'s form and the server puts the
        aggregate back into it (``prepare_model`` then ``after_training``), so the next
        downlink can still be encoded. Default: plain weights are trained and averaged.
        """
        return False

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Change a model before training (default: leave it as it is)."""
        return model

    def after_training(self, model: torch.nn.Module, finetune) -> torch.nn.Module:
        """Finish a trained model before it is sent (default: leave it as it is).

        ``finetune(model)`` trains ``model`` further in place with the training
        config; strategies such as pruning with fine-tuning call it. The model
        returned must have plain parameters (no parametrisations), so that its
        state_dict matches the receiver's template.
        """
        return model

    @abstractmethod
    def encode(self, state: State) -> Payload: ...

    @abstractmethod
    def decode(self, payload: Payload, template: State) -> dict[str, torch.Tensor]: ...

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.model_dump().items())
        return f"{self.name}({opts})"


class PlainStrategy(Strategy):
    """A strategy with no structure stage: every tensor goes through the value coding as it is."""

    def encode(self, state: State) -> Payload:
        coding = self.coding
        return Payload([seg for name, t in state.items() for seg in encode_plain(name, t, coding)])

    def decode(self, payload: Payload, template: State) -> dict[str, torch.Tensor]:
        check_names(payload, set(template))
        coding = self.coding
        return {name: decode_plain(payload, name, like, coding) for name, like in template.items()}


# ---- shared tensor coding -----------------------------------------------------


def is_conv_kernel(tensor: torch.Tensor) -> bool:
    """A conv kernel the structure stages apply to: float [C_out, C_in, k, k] with k > 1."""
    return (
        tensor.dtype.is_floating_point
        and tensor.dim() == 4
        and tensor.shape[2] == tensor.shape[3]
        and tensor.shape[2] > 1
    )


def is_float(t: torch.Tensor) -> bool:
    return t.dtype.is_floating_point


def tensor_rows(t: torch.Tensor) -> int:
    """Rows for per-channel quantisation: output channels of weights, 1 for vectors."""
    return t.shape[0] if t.dim() >= 2 else 1


def encode_plain(name: str, tensor: torch.Tensor, coding: ValueCoding) -> list[Segment]:
    """A tensor sent as it is: floats through the value coding, integers raw and protected."""
    if is_float(tensor):
        values = tensor.detach().to(torch.float32).cpu().numpy()
        return encode_values(name, values, coding, rows=tensor_rows(tensor))
    array = tensor.detach().cpu().numpy()
    return [Segment(name, array.astype(array.dtype.newbyteorder("<")).tobytes(), True, FORMAT_BYTES)]


def decode_plain(payload: Payload, name: str, like: torch.Tensor, coding: ValueCoding) -> torch.Tensor:
    if is_float(like):
        values = decode_values(payload, name, like.numel(), coding, rows=tensor_rows(like))
        return torch.from_numpy(values.reshape(tuple(like.shape))).to(like.dtype)
    segment = payload[name]
    dtype = np.dtype(str(like.dtype).removeprefix("torch.")).newbyteorder("<")
    expected = like.numel() * dtype.itemsize
    if segment.nbytes != expected:
        raise PayloadError(name, f"holds {segment.nbytes} bytes, expected {expected}")
    array = np.frombuffer(segment.data, dtype=dtype).reshape(tuple(like.shape))
    return torch.from_numpy(array.astype(dtype.newbyteorder("="))).to(like.dtype)


def check_names(payload: Payload, expected: set[str]) -> None:
    """Every segment must belong to a tensor the receiver expects, and vice versa."""
    for seg in payload.segments:
        if seg.name.split("/", 1)[0] not in expected:
            raise PayloadError(seg.name, "not a tensor of the receiver's model")


def tensor_of_segment(segment_name: str) -> str:
    return segment_name.split("/", 1)[0]
