"""What a traffic scenario is: a round planned on the server, run on the devices, absorbed on the server.

A scenario is one class (registered by name, see :mod:`testbed.scenarios`):

- ``Options``: its config options, a pydantic model validated when the config is loaded
  (the config's ``scenario: {name: ..., **options}``);
- ``transfers``: the kinds of transfer its round makes (name, hop), declared so that the
  docs and the report can list them; every transfer runs through
  :func:`testbed.transfer.run_transfer`;
- ``measurement_columns``: the columns its devices add to the measurements table;
- server side (in the ServerApp's process): :meth:`start` builds the state the server
  keeps (models, versions...), :meth:`plan_round` says what every device of the round
  needs (blobs and tensors shared by all, encoded once), :meth:`absorb` takes the
  devices' uploads (aggregation);
- device side (on the nodes, in Ray workers): :meth:`run_device` runs one device and one
  label through a :class:`DeviceRun`, which gives it the device's data, link, state and
  the round's shared items, and collects its transfers, measurements and uploads.

Devices may keep state between rounds (``keeps_device_state``): the state of each
(label, device) lives on the server, travels to the node with the device's round
message and back with the reply, and is saved with every finished round, so a node
(any node: cohorts are not pinned to workers) and a resumed run see the same state.
A scenario whose plan depends on neither the rounds before nor the devices' replies says so
(``plans_ahead``), and its rounds overlap on the nodes (:mod:`testbed.inflight`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from testbed.tables import MEASUREMENTS, Column, Table
from testbed.transfer import Transfer, TransferResult, run_transfer

State = dict[str, torch.Tensor]


def plain_state(state) -> State:
    """A detached CPU copy of a state_dict."""
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def state_digest(state) -> str:
    """A content hash of a state (names, dtypes, values): equal states share one copy or evaluation."""
    h = hashlib.sha256()
    for name, tensor in state.items():
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class ScenarioOptions(BaseModel):
    """Options every scenario has (none yet besides its name); subclasses add their own."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class RoundPlan:
    """What the server sends every node of a round (encoded once, shared by all devices)."""

    blobs: dict[str, bytes] = field(default_factory=dict)  # e.g. "payload/<label>": the payload's bytes
    states: dict[str, State] = field(default_factory=dict)  # e.g. "reference/<label>": a float model
    values: dict[str, Any] = field(default_factory=dict)  # small JSON-able values


@dataclass
class Upload:
    """Something a device sends the server through a transfer (already over its link)."""

    data: bytes
    meta: dict = field(default_factory=dict)  # small JSON-able values, e.g. the FedAvg weight


@dataclass
class RoundResults:
    """The replies of every device of a round, in (label order, device id) order."""

    measurements: list[dict]  # measurement rows; absorb may set a row's failure
    uploads: dict[tuple[str, int], Upload]  # (label, device_id) -> what arrived at the server

    def row(self, label: str, device_id: int) -> dict:
        for r in self.measurements:
            if r["label"] == label and r["device_id"] == device_id:
                return r
        raise KeyError((label, device_id))


class DeviceRun:
    """One device and one label in one round, as the scenario's device side sees it.

    ``world`` is the node's :class:`testbed.device.NodeWorld` (config, dataset, fleet,
    strategies, receiver models)."""

    def __init__(self, world, plan: RoundPlan, round_: int, label: str, device_id: int,
                 state: State | None, measurements: Table, evaluations=None):
        self.world = world
        self.evaluations = evaluations  # the node's SharedEvaluation (None: evaluate at once)
        self.flops = 0.0  # the device's work this round (the cost model: testbed.compute)
        self.plan = plan
        self.round = round_
        self.label = label
        self.device_id = device_id
        self.strategy = world.strategies[label]
        self.state = state  # the device's state from the previous round (None at first); set to keep
        self.transfers: list[dict] = []
        self.upload: Upload | None = None
        self.measurement = measurements.empty_row(
            round=round_, label=label, device_id=device_id, strategy=self.strategy.name, bits=self.strategy.bits,
            link_model=world.link_model(device_id),
        )

    @property
    def seed(self) -> int:
        return self.world.config.seed

    @property
    def split(self):
        """The device's local data split (indices into the dataset's train and test sets)."""
        return self.world.split(self.device_id)

    def transfer(self, transfer: Transfer, payload, strategy_name: str | None = None, decode=None) -> TransferResult:
        """Run ``transfer`` of ``payload`` over this device's link for its hop (see run_transfer).

        A failed transfer also fails the device for the round (the first failure is kept).
        """
        result = run_transfer(
            transfer, payload, link=self.world.link(self.device_id, transfer.hop), seed=self.seed,
            round_=self.round, label=self.label, device_id=self.device_id,
            strategy=strategy_name or self.strategy.name, decode=decode,
        )
        self.transfers.append(result.row)
        if result.failure:
            self.fail(f"{transfer.name} {result.failure}")
        return result

    def evaluate(self, state: State, test_idx, record, digest: str | None = None) -> None:
        """Evaluate ``state`` (the label's receiver model) on the test images ``test_idx`` and call
        ``record(accuracy, loss)``: shared with the devices of the node that hold the same state
        (``digest``: its :func:`state_digest`, when the caller has it)."""
        if self.evaluations is not None:
            self.evaluations.add(self, self.label, state, test_idx, record, digest)
            return
        from testbed.training import evaluate

        model, data = self.world.model(self.label), self.world.dataset
        model.load_state_dict(state, strict=True)
        record(*evaluate(model, data.test_x[test_idx], data.test_y[test_idx]))

    def compute(self, flops: float) -> None:
        """Count work the device does on its own processor (FLOPs, from testbed.compute's cost model)."""
        self.flops += float(flops)

    def measure(self, **values) -> None:
        unknown = set(values) - set(self.measurement)
        if unknown:
            raise KeyError(f"measurement column(s) not declared by the scenario: {', '.join(sorted(unknown))}")
        self.measurement.update(values)

    def fail(self, reason: str) -> None:
        if not self.measurement["failure"]:
            self.measurement["failure"] = reason

    def send(self, data: bytes, **meta) -> None:
        """Hand the server what arrived over the device's uplink (the absorb step reads it)."""
        self.upload = Upload(bytes(data), dict(meta))


class Scenario:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type[ScenarioOptions]] = ScenarioOptions
    transfers: ClassVar[tuple[Transfer, ...]] = ()
    measurement_columns: ClassVar[tuple[Column, ...]] = ()
    keeps_device_state: ClassVar[bool] = False
    # The round plan depends on neither the rounds before nor what devices sent (and devices keep
    # no state): the orchestrator pushes a round's messages while the round before still runs.
    plans_ahead: ClassVar[bool] = False
    # A device's fleet accuracy over the rounds: "mean" where every round measures the same
    # model (broadcast), "last" where it changes every round (federated).
    fleet_accuracy: ClassVar[str] = "last"

    def __init__(self, options: ScenarioOptions, config):
        self.options = options
        self.config = config  # the ExperimentConfig

    @classmethod
    def measurements_table(cls, options: ScenarioOptions | None = None) -> Table:
        return MEASUREMENTS.with_columns(cls.columns_for(options))

    @classmethod
    def columns_for(cls, options: ScenarioOptions | None) -> tuple[Column, ...]:
        """The measurement columns of a run with ``options`` (default: the declared ones)."""
        return cls.measurement_columns

    # ---- server side -----------------------------------------------------------------
    def start(self, server) -> None:
        """Build the server's state before the first round (``server`` is the Experiment:
        config, dataset, strategies, labels, log; ``server.restore`` is the saved scenario
        state on resume, else None)."""

    def plan_round(self, server, round_: int) -> RoundPlan:
        raise NotImplementedError

    def absorb(self, server, round_: int, results: RoundResults) -> None:
        """Take the round's results (default: nothing to do)."""

    def saved_state(self) -> dict | None:
        """What the server must save after a round to resume after it (tensors and plain values)."""
        return None

    def summary(self, server, label: str) -> dict:
        """End-of-run figures of a label for summary.json (default: none beyond the fleet's)."""
        return {}

    # ---- device side -----------------------------------------------------------------
    def run_device(self, device: DeviceRun) -> None:
        raise NotImplementedError


def transfer_names(scenario: type[Scenario]) -> list[str]:
    names = [t.name for t in scenario.transfers]
    if len(set(names)) != len(names):
        raise ValueError(f"scenario {scenario.name}: transfer names must be unique")
    return names
