"""Broadcast: the server sends every strategy's model to every device, which measures what it received.

Server: each label's model is trained centrally (from the checkpoint cache when
there) and encoded once; every round the same payload goes to every device that
takes part. Device: one transfer, ``down`` (server->device): receive over the
device's link, decode into the receiver's model, measure the reconstruction
error against the server's float model (split into the part the compression
causes and the part the channel adds) and the accuracy on the device's local
test split.

:class:`ModelDelivery` is the part shared with the scenarios that also send a
model down first (federated).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from testbed import metrics
from testbed.scenarios.base import DeviceRun, RoundPlan, Scenario, ScenarioOptions, plain_state, state_digest
from testbed.tables import MODEL_QUALITY, NMSE_CONV
from testbed.transfer import Transfer

DOWN = Transfer("down", "server->device", "the label's model, encoded by its strategy")


def reconstruction_errors(world, label: str, raw: bytes, round_: int, received, digest: str, reference, power: float) -> dict:
    """The NMSE of a received model against the server's float model ``reference`` (``power``: its
    float power), split into the part the compression causes (the clean decode's) and the part the
    channel adds. A delivery bit-identical to the clean decode (``digest``: the received state's)
    takes the payload's errors, computed once per node, round and payload: the same numbers."""
    if not power:
        return {"recon_nmse_db": math.nan}
    clean = world.clean_decode(label, raw)
    if clean is None:  # a payload that does not decode as sent: no split
        return {"recon_nmse_db": metrics.to_db(metrics.squared_error(received, reference) / power)}
    key = ("clean-error", label, round_, raw)  # one reference per label and round; bytes cache their hash
    clean_digest, compression = world.memo(key, lambda: (state_digest(clean), metrics.squared_error(clean, reference)))
    if digest == clean_digest:
        total, channel = compression, 0.0
    else:
        total, channel = metrics.squared_error(received, reference), metrics.squared_error(received, clean)
    return {"recon_nmse_db": metrics.to_db(total / power), "recon_nmse_compression_db": metrics.to_db(compression / power),
            "recon_nmse_channel_db": metrics.to_db(channel / power)}


class ModelDeliveryOptions(ScenarioOptions):
    # Extra per-device measurements; nmse_conv: the conv kernels' NMSE alone (the symmetry study).
    measurements: list[Literal["nmse_conv"]] = []
    # summary.json's central_accuracy and clean_accuracy: every label's model and its clean decode
    # scored on the full test set at the end of the run. False skips them (a study with many labels
    # that scores its models elsewhere: each costs two full test-set passes).
    summary_accuracy: bool = True


class ModelDelivery(Scenario):
    """A round that starts with every label's model sent down to every device."""

    Options: ClassVar = ModelDeliveryOptions
    measurement_columns = MODEL_QUALITY

    @classmethod
    def columns_for(cls, options) -> tuple:
        conv = options is not None and "nmse_conv" in options.measurements
        return cls.measurement_columns + ((NMSE_CONV,) if conv else ())

    # ---- server side -----------------------------------------------------------------
    def start(self, server) -> None:
        self.states = self.initial_states(server)
        self.payloads = {label: server.strategies[label].encode(self.states[label]) for label in server.labels}
        server.write_payload_reports(self.states, self.payloads)

    def initial_states(self, server) -> dict:
        raise NotImplementedError

    def plan_round(self, server, round_: int) -> RoundPlan:
        plan = RoundPlan(values={"power": {}})
        for label in server.labels:
            plan.blobs[f"payload/{label}"] = self.payloads[label].to_bytes()
            plan.states[f"reference/{label}"] = self.states[label]
            plan.values["power"][label] = metrics.float_power(self.states[label])
        return plan

    def summary(self, server, label: str) -> dict:
        """End-of-run figures of a label: accuracy of the server's model and of its clean decode."""
        from testbed.training import evaluate, receiver_model

        if not self.options.summary_accuracy:
            return {}
        strategy = server.strategies[label]
        model = receiver_model(strategy, server.config, server.dataset)
        state = self.states[label]
        # What an ideal link delivers: the clean decode of what the strategy sends (pruned,
        # projected, quantised), which can differ much from the server's float model.
        clean = strategy.decode(strategy.encode(state), model.state_dict())
        out = {}
        for key, value in (("central_accuracy", state), ("clean_accuracy", clean)):
            sha = state_digest(value)
            if sha not in server.accuracy_cache:  # strategies sharing a model evaluate it once
                model.load_state_dict(value)
                server.accuracy_cache[sha] = float(evaluate(model, server.dataset.test_x, server.dataset.test_y)[0])
            out[key] = server.accuracy_cache[sha]
        return out

    # ---- device side -----------------------------------------------------------------
    def receive_model(self, device: DeviceRun):
        """The ``down`` transfer and the model measurements; the received state, or None if it failed."""
        world, label = device.world, device.label
        raw = device.plan.blobs[f"payload/{label}"]
        payload = world.parse(label, raw)
        model = world.model(label)

        def decode(p):
            received = device.strategy.decode(p, world.template(label))
            model.load_state_dict(received, strict=True)
            return received

        result = device.transfer(DOWN, payload, decode=decode)
        costs = world.costs(label, raw)
        if result.row["delivered"]:
            device.compute(costs.decode)  # a payload that arrived is decoded, whether it loads or not
        if not result.ok:
            return None
        received = result.value
        digest = state_digest(received)
        reference = device.plan.states[f"reference/{label}"]
        power = float(device.plan.values["power"][label])
        quality = {"decode_ok": True, **reconstruction_errors(world, label, raw, device.round, received, digest, reference, power)}
        if "nmse_conv" in self.options.measurements:
            quality["recon_nmse_conv_db"] = metrics.conv_nmse_db(received, reference)
        test_idx = device.split.test_idx
        device.measure(**quality, n_test=int(len(test_idx)))

        def record(accuracy, loss):
            device.measure(accuracy=float(accuracy), loss=float(loss))

        device.evaluate(received, test_idx, record, digest)  # shared by the devices that received the same model
        device.compute(costs.forward * len(test_idx))
        return received


class Broadcast(ModelDelivery):
    name = "broadcast"
    description = "A centrally trained model sent to every device over its own link, every round."
    transfers = (DOWN,)
    fleet_accuracy = "mean"
    plans_ahead = True  # the same payloads every round

    def initial_states(self, server) -> dict:
        from testbed.training import central_model

        states = {}
        for label, strategy in server.strategies.items():
            server.log(f"central model for {label} (training key {strategy.training_key()})")
            model = central_model(strategy, self.config.model, server.dataset, self.config.train_seed(label),
                                  progress=server.show_progress)
            states[label] = plain_state(model.state_dict())
        return states

    def run_device(self, device: DeviceRun) -> None:
        self.receive_model(device)
