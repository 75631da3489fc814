"""Federated: FedAvg with a compressed, noisy downlink and uplink.

Every round each device receives the label's global model (``down``, as in
broadcast), trains it on its local training split, and sends the compressed
update (trained - received) back over the same link (``up``, encoded by the
``uplink`` strategy). The server decodes the updates that arrived, leaves out
any that cannot be decoded or are not finite (that device fails for the round,
never the run), and averages them weighted by the devices' training-set sizes,
in device-id order so the sum is the same whatever the cohorts. Models trained
in a strategy's own form (symmetric kernels) are put back into it after
averaging. The global models are saved with every round, so a resumed run
continues from them.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from pydantic import field_validator

from strategies.base import valid_model
from testbed.recipes import LocalTrainConfig
from testbed.rng import derive_seed
from testbed.scenarios.base import DeviceRun, RoundResults, plain_state
from testbed.scenarios.broadcast import DOWN, ModelDelivery, ModelDeliveryOptions
from testbed.tables import TRAIN_LOSS
from testbed.transfer import Transfer

UP = Transfer("up", "device->server", "the device's model update, encoded by the uplink strategy")


class FederatedOptions(ModelDeliveryOptions):
    local: LocalTrainConfig = LocalTrainConfig()  # the device's training in a round
    uplink: dict[str, Any] = {"strategy": "quantise", "bits": 8}  # the strategy of the updates

    @field_validator("uplink")
    @classmethod
    def _uplink_strategy(cls, value):
        from strategies.registry import checked_spec

        return checked_spec(value)


def constrained(strategy, model: torch.nn.Module, train=None) -> torch.nn.Module:
    """``model`` in the strategy's trained form, optionally trained (``train(model)``) in it."""
    if not strategy.keeps_form_in_federated_training():
        if train is not None:
            train(model)
        return model
    model = strategy.prepare_model(model)
    if train is not None:
        train(model)
    return strategy.after_training(model, lambda m: None)


class Federated(ModelDelivery):
    name = "federated"
    description = "FedAvg: the global model down, local training, the compressed update up, averaged."
    Options: ClassVar = FederatedOptions
    transfers = (DOWN, UP)
    measurement_columns = ModelDelivery.measurement_columns + (TRAIN_LOSS,)

    def __init__(self, options, config):
        super().__init__(options, config)
        from strategies.registry import build

        self.uplink = build(dict(options.uplink))

    # ---- server side -----------------------------------------------------------------
    def initial_states(self, server) -> dict:
        from testbed.training import receiver_model

        if server.restore is not None:
            return {label: server.restore["states"][label] for label in server.labels}
        # FedAvg from the same starting model: the receiver architecture, seeded init.
        return {
            label: plain_state(receiver_model(s, self.config, server.dataset).state_dict())
            for label, s in server.strategies.items()
        }

    def saved_state(self) -> dict:
        return {"states": self.states}

    def absorb(self, server, round_: int, results: RoundResults) -> None:
        """FedAvg over the updates that arrived, in device-id order (the same sum whatever the cohorts)."""
        from testbed.payload import PayloadError

        for label in server.labels:
            glob = self.states[label]
            template = {k: v for k, v in glob.items() if v.dtype.is_floating_point}
            total = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in template.items()}
            weight = 0.0
            for row in results.measurements:  # sorted by device id within the label
                upload = results.uploads.get((label, row["device_id"])) if row["label"] == label else None
                if upload is None or row.get("late"):  # a late update missed the round (kept in the metrics)
                    continue
                try:
                    delta = self.uplink.decode(self.uplink.read(upload.data, template), template, delta=True)
                except PayloadError as exc:
                    row["failure"] = f"{UP.name} decode: {exc}"
                    continue
                if not all(bool(torch.isfinite(t).all()) for t in delta.values()):
                    # One NaN would poison the global model of every later round.
                    row["failure"] = f"{UP.name} update not finite: left out of the aggregate"
                    continue
                w = float(upload.meta.get("weight", 1))
                for k in total:
                    total[k] += w * delta[k].double()
                weight += w
            if weight > 0:
                new = {k: (v + (total[k] / weight).to(v.dtype)) if k in total else v for k, v in glob.items()}
                self.states[label] = self._constrain(server, label, valid_model(new))
                self.payloads[label] = server.strategies[label].encode(self.states[label])  # next round's downlink

    def _constrain(self, server, label: str, state: dict) -> dict:
        """Put an aggregate back into the strategy's trained form (symmetric kernels)."""
        from testbed.training import receiver_model

        strategy = server.strategies[label]
        if not strategy.keeps_form_in_federated_training():
            return state
        model = receiver_model(strategy, self.config, server.dataset)
        model.load_state_dict(state)
        return plain_state(constrained(strategy, model).state_dict())

    # ---- device side -----------------------------------------------------------------
    def run_device(self, device: DeviceRun) -> None:
        from testbed.training import train_local

        received = self.receive_model(device)
        if received is None:
            return
        world = device.world
        split = device.split
        x, y = world.dataset.train_x[split.train_idx], world.dataset.train_y[split.train_idx]
        losses = []
        train_seed = derive_seed(device.seed, "train", device.round, device.device_id)
        local = constrained(
            device.strategy, copy.deepcopy(world.model(device.label)),
            lambda m: losses.append(train_local(m, x, y, self.options.local, train_seed)),
        )
        device.measure(train_loss=float(losses[0]))
        device.compute(world.costs(device.label, device.plan.blobs[f"payload/{device.label}"]).train
                       * len(y) * self.options.local.epochs)
        trained = local.state_dict()
        delta = {k: (trained[k] - received[k]).detach().float() for k, v in received.items() if v.dtype.is_floating_point}
        result = device.transfer(UP, self.uplink.encode(delta), strategy_name=self.uplink.name)
        if result.received is not None:
            device.send(result.received.to_bytes(), weight=int(len(y)))
