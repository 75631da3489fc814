"""The one small interface every compression strategy implements.

A strategy turns a model's state (a torch state_dict) into a :class:`Payload`
on the server and back into a state on the device, given the receiver's
template (a state_dict of the same architecture: names, shapes, dtypes; its
values are never read). Options are a pydantic model, so configs are checked
before anything runs. ``prepare_model`` is the optional training-time hook
(symmetric parametrisation, MonoCNN layers...).

The base class runs the per-tensor loop of encoding, decoding and the
payload schema. A strategy says which tensors it handles (``handles``) and,
for those, their segments (``tensor_specs``), how to encode them
(``encode_tensor``) and how to decode them (``decode_tensor``); every other
tensor goes through the value coding as it is (``plain_specs``,
``encode_plain``, ``decode_plain``). BatchNorm's ``num_batches_tracked``
counters are not sent: inference does not read them, and the receiver fills
them with 0. A received BatchNorm ``running_var`` is clamped at ``VARIANCE_FLOOR``
(``valid_variance``), so channel noise never builds a model that outputs NaN. A delta (an
update, a federated upload) is decoded with ``delta=True`` and is not clamped, since a change of
variance may be negative; the receiver makes the model it builds from it valid (``valid_model``).

Segment names start with the tensor name they carry (``conv1.weight``,
``conv1.weight/q``), which is how byte counts are attributed to tensors.
Tensors go in the natural order of their names (``wire_order``), not in the
order of the state dict: the order of a module's entries changes when a
parametrisation or a pruning mask is removed, and sender and receiver must
agree without sharing it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from strategies.values import ValueCoding, decode_values, encode_values, value_specs
from testbed.payload import FORMAT_BYTES, Payload, PayloadSchema, Segment, SegmentSpec

State = Mapping[str, torch.Tensor]

BATCH_COUNTER = "num_batches_tracked"
RUNNING_VAR = "running_var"
# The smallest BatchNorm variance a receiver accepts: BatchNorm adds its eps (> 0) before the
# square root, so every variance >= 0 gives finite outputs; a trained one is never below it.
VARIANCE_FLOOR = 0.0


class StrategyOptions(ValueCoding):
    """Options shared by all strategies: the value coding of the tensors they send."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Strategy:
    """A strategy with no structure stage codes every tensor as it is; subclasses handle some."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = StrategyOptions

    def __init__(self, **options):
        self.options = self.Options(**options)
        self._schemas: dict[tuple, PayloadSchema] = {}

    @property
    def coding(self) -> ValueCoding:
        o = self.options
        return ValueCoding(bits=o.bits, dtype=o.dtype, per_channel=o.per_channel, entropy=o.entropy, protection=o.protection)

    @property
    def bits(self) -> int | None:
        return getattr(self.options, "bits", None)

    # ---- training hooks --------------------------------------------------------
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

    def finetune_epochs_within_budget(self) -> float | None:
        """Epochs of ``after_training``'s fine-tuning taken out of the training recipe's budget.

        None (default): fine-tuning, where a strategy does it, repeats the whole recipe on top.
        A number e: central training runs epochs - e, the fine-tuning the last e epochs.
        """
        return None

    def after_training(self, model: torch.nn.Module, finetune) -> torch.nn.Module:
        """Finish a trained model before it is sent (default: leave it as it is).

        ``finetune(model)`` trains ``model`` further in place with the training
        config (or the epochs of ``finetune_epochs_within_budget``); strategies such as
        pruning with fine-tuning call it. The model
        returned must have plain parameters (no parametrisations), so that its
        state_dict matches the receiver's template.
        """
        return model

    # ---- update hooks (the update scenario: a deployed model retrained on the server) ----
    def update_training_key(self) -> str:
        """How the server retrains a deployed model for this strategy's update.

        ``"full"``: every weight is retrained (the update is whatever changed). Strategies
        with the same key and base share one retrained model.
        """
        return "full"

    def prepare_update(self, model: torch.nn.Module) -> torch.nn.Module:
        """Change a deployed model before the server retrains it (default: leave it as it is).

        Parametrisations added here are merged into plain weights after training.
        """
        return model

    # ---- per tensor: what a strategy with a structure stage says ------------------
    def handles(self, name: str, tensor: torch.Tensor) -> bool:
        """Whether this strategy codes the tensor itself (default: none, all go as they are)."""
        return False

    def tensor_specs(self, name: str, like: torch.Tensor) -> list[SegmentSpec]:
        """The segments of a handled tensor, from the template's tensor alone."""
        raise NotImplementedError(f"{type(self).__name__} handles {name} but gives no segment specs")

    def encode_tensor(self, name: str, tensor: torch.Tensor) -> list[Segment]:
        raise NotImplementedError(f"{type(self).__name__} handles {name} but cannot encode it")

    def decode_tensor(self, payload: Payload, name: str, like: torch.Tensor, template: State) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} handles {name} but cannot decode it")

    # ---- the loop ------------------------------------------------------------------
    def payload_schema(self, template: State) -> PayloadSchema:
        """The segments both ends expect for this template (cached per names, shapes, dtypes)."""
        signature = tuple((name, tuple(t.shape), str(t.dtype)) for name, t in wire_order(template))
        schema = self._schemas.get(signature)
        if schema is None:
            specs = []
            for name, like in wire_order(template):
                if is_batch_counter(name):
                    continue
                if self.handles(name, like):
                    specs += self.tensor_specs(name, like)
                else:
                    specs += plain_specs(name, like, self.coding)
            options = self.options.model_dump(mode="json")
            if options.get("protection", 0) is None:  # unset: the identity (and fingerprint) of before the option existed
                del options["protection"]
            identity = json.dumps(
                {"strategy": self.name, "options": options, "tensors": signature},
                sort_keys=True,
                separators=(",", ":"),
            )
            schema = self._schemas[signature] = PayloadSchema(tuple(specs), identity)
        return schema

    def encode(self, state: State) -> Payload:
        coding = self.coding
        segments: list[Segment] = []
        for name, tensor in wire_order(state):
            if is_batch_counter(name):
                continue
            if self.handles(name, tensor):
                segments += self.encode_tensor(name, tensor)
            else:
                segments += encode_plain(name, tensor, coding)
        return Payload(segments, self.payload_schema(state))

    def read(self, raw: bytes, template: State) -> Payload:
        """Parse received bytes against the receiver's schema (PayloadError if they do not fit)."""
        return Payload.from_bytes(raw, self.payload_schema(template))

    def decode(self, payload: Payload, template: State, delta: bool = False) -> dict[str, torch.Tensor]:
        """The state ``payload`` carries, shaped like ``template``; a model's BatchNorm variances made
        valid unless it is a ``delta``."""
        # Names, formats, protection and fixed sizes, checked once against the receiver's schema:
        # a surplus, missing or misshapen segment is a PayloadError naming it.
        self.payload_schema(template).check(payload.segments)
        coding = self.coding
        out = {}
        for name, like in template.items():
            if is_batch_counter(name):
                out[name] = torch.zeros_like(like)
            elif self.handles(name, like):
                out[name] = self.decode_tensor(payload, name, like, template)
            else:
                out[name] = decode_plain(payload, name, like, coding)
        return out if delta else valid_model(out)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.model_dump().items())
        return f"{self.name}({opts})"


# ---- shared tensor coding -----------------------------------------------------


def wire_order(state: State) -> list[tuple[str, torch.Tensor]]:
    """The tensors in the natural order of their names (``features.2`` before ``features.10``)."""

    def key(name: str) -> tuple:
        return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in name.split("."))

    return sorted(state.items(), key=lambda item: key(item[0]))


def is_conv_kernel(tensor: torch.Tensor) -> bool:
    """A conv kernel the structure stages apply to: float [C_out, C_in, k, k] with k > 1."""
    return (
        tensor.dtype.is_floating_point
        and tensor.dim() == 4
        and tensor.shape[2] == tensor.shape[3]
        and tensor.shape[2] > 1
    )


def is_batch_counter(name: str) -> bool:
    """BatchNorm's step counter: not needed for inference, so never sent."""
    return name.rsplit(".", 1)[-1] == BATCH_COUNTER


def is_running_var(name: str) -> bool:
    return name.rsplit(".", 1)[-1] == RUNNING_VAR


def valid_model(state: State) -> dict[str, torch.Tensor]:
    """``state`` with every BatchNorm variance valid (:func:`valid_variance`): what a receiver loads."""
    return {name: valid_variance(t) if is_running_var(name) else t for name, t in state.items()}


def valid_variance(variance: torch.Tensor) -> torch.Tensor:
    """A received BatchNorm variance the receiver can use: NaN or below VARIANCE_FLOOR becomes the
    floor, +inf the largest float32.

    Channel noise can make a variance negative (analog links, bit errors); sqrt(var + eps) is then
    NaN and so is every output. The sender's variances are never negative, so this changes nothing
    on a clean channel (our choice of the rule: clamping, not sending log-variance, keeps the wire
    format; a floor of 0 and not a positive one keeps tiny trained variances exactly).
    """
    return torch.nan_to_num(variance, nan=VARIANCE_FLOOR).clamp_min(VARIANCE_FLOOR)


def tensor_rows(t: torch.Tensor) -> int:
    """Rows for per-channel quantisation: output channels of weights, 1 for vectors."""
    return t.shape[0] if t.dim() >= 2 else 1


def _little_endian(t: torch.Tensor) -> np.dtype:
    return np.dtype(str(t.dtype).removeprefix("torch.")).newbyteorder("<")


def plain_specs(name: str, like: torch.Tensor, coding: ValueCoding) -> list[SegmentSpec]:
    """The segments of :func:`encode_plain` for a tensor shaped like ``like``."""
    if like.dtype.is_floating_point:
        return value_specs(name, like.numel(), coding, rows=tensor_rows(like))
    return [SegmentSpec(name, FORMAT_BYTES, True, like.numel() * _little_endian(like).itemsize)]


def encode_plain(name: str, tensor: torch.Tensor, coding: ValueCoding) -> list[Segment]:
    """A tensor sent as it is: floats through the value coding, integers raw and protected."""
    if tensor.dtype.is_floating_point:
        values = tensor.detach().to(torch.float32).cpu().numpy()
        return encode_values(name, values, coding, rows=tensor_rows(tensor))
    array = tensor.detach().cpu().numpy()
    return [Segment(name, array.astype(_little_endian(tensor)).tobytes(), True, FORMAT_BYTES)]


def decode_plain(payload: Payload, name: str, like: torch.Tensor, coding: ValueCoding) -> torch.Tensor:
    """Inverse of :func:`encode_plain`; the segment sizes were checked against the schema."""
    if like.dtype.is_floating_point:
        values = decode_values(payload, name, like.numel(), coding, rows=tensor_rows(like))
        return torch.from_numpy(values.reshape(tuple(like.shape))).to(like.dtype)
    dtype = _little_endian(like)
    array = np.frombuffer(payload[name].data, dtype=dtype).reshape(tuple(like.shape))
    return torch.from_numpy(array.astype(dtype.newbyteorder("="))).to(like.dtype)


def tensor_of_segment(segment_name: str) -> str:
    return segment_name.split("/", 1)[0]
