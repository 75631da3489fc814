"""The device side of a round: what a node rebuilds once per process, and running its cohort.

A node (a Flower ClientApp in a Ray worker, or any process) gets a
:class:`RoundJob`, rebuilds the experiment's world from the
config text once per process (fleet, dataset, strategies, receiver models,
the scenario), and runs every (label, device) of its cohort through the
scenario's ``run_device``. Results depend only on the rng keys, never on the
cohort or the worker. A device that raises is a failed device, never a lost
round. Nothing here imports Flower.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import traceback
from dataclasses import dataclass, field

import torch

from testbed.allocator import keep_freed_memory
from testbed.payload import Payload, PayloadError
from testbed.scenarios.base import DeviceRun, RoundPlan, State, Upload
from testbed.shared_evaluation import SharedEvaluation


# ---- a node's job and its reply (testbed.messages turns them into Flower records) ---------

DeviceKey = tuple[str, int]  # (label, device_id)


@dataclass
class RoundJob:
    config_text: str
    base_dir: str
    round: int
    devices: list[int]
    labels: list[str]
    plan: RoundPlan
    device_states: dict[DeviceKey, State] = field(default_factory=dict)


@dataclass
class CohortReply:
    transfers: list[dict]
    measurements: list[dict]
    uploads: dict[DeviceKey, Upload] = field(default_factory=dict)
    device_states: dict[DeviceKey, State] = field(default_factory=dict)


class NodeWorld:
    """What a node needs to emulate devices of one experiment (built once per process)."""

    def __init__(self, config, base_dir: str):
        from strategies.registry import build
        from testbed.data import load_data
        from testbed.fleet import Fleet
        from testbed.scenarios import build_scenario

        self.config = config
        self.fleet = Fleet.from_config(config.fleet, config.seed, base_dir=base_dir)
        self.dataset = load_data(config.data, base_dir)
        self.strategies = {label: build(spec) for label, spec in config.strategy_specs().items()}
        self.scenario = build_scenario(config)
        self.measurements = self.scenario.measurements_table(self.scenario.options)
        self._models: dict = {}
        self._templates: dict = {}
        self._splits: dict = {}
        self._parsed: dict = {}  # (label, payload digest) -> Payload
        self._clean: dict = {}  # (label, payload digest) -> clean decode or None
        self._costs: dict = {}  # label -> ModelCosts
        self._memo: dict = {}  # a scenario's per-node results (memo)

    # ---- models ----------------------------------------------------------------------
    def model(self, label: str) -> torch.nn.Module:
        """The receiver model a label's payload decodes into (one per label, reused by its devices)."""
        if label not in self._models:
            from testbed.training import receiver_model

            model = receiver_model(self.strategies[label], self.config, self.dataset)
            self._models[label] = model
            self._templates[label] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return self._models[label]

    def template(self, label: str) -> dict:
        self.model(label)
        return self._templates[label]

    def parse(self, label: str, raw: bytes) -> Payload:
        """The payload the server sent (parsed once per node and round)."""
        key = (label, hashlib.sha256(raw).digest())
        if key not in self._parsed:
            if len(self._parsed) > 4 * len(self.strategies):
                self._parsed.clear()
            self._parsed[key] = self.strategies[label].read(raw, self.template(label))
        return self._parsed[key]

    def clean_decode(self, label: str, raw: bytes):
        """The payload decoded as sent (what an ideal link delivers), or None if it does not decode."""
        key = (label, hashlib.sha256(raw).digest())
        if key not in self._clean:
            if len(self._clean) > 4 * len(self.strategies):
                self._clean.clear()
            try:
                self._clean[key] = self.strategies[label].decode(self.parse(label, raw), self.template(label))
            except PayloadError:
                self._clean[key] = None
        return self._clean[key]

    def memo(self, key, compute):
        """``compute()``, once per node and ``key`` (a scenario's result that every device of the node
        would compute alike: the key must name everything it depends on)."""
        if key not in self._memo:
            if len(self._memo) > 16 * len(self.strategies):
                self._memo.clear()
            self._memo[key] = compute()
        return self._memo[key]

    def forward_flops(self, label: str) -> float:
        """One test image's forward pass through the label's receiver model (testbed.compute), once per node."""
        from testbed.compute import forward_flops

        return self.memo(("forward-flops", label), lambda: forward_flops(self.model(label), self.dataset.test_x[0]))

    def costs(self, label: str, raw: bytes):
        """The label's model costs in FLOPs (testbed.compute), counted once per process and label
        on the first payload it decodes (the shapes, and so the counts, are the same every round)."""
        if label not in self._costs:
            from testbed.compute import model_costs

            strategy, template = self.strategies[label], self.template(label)
            payload = self.parse(label, raw)
            self._costs[label] = model_costs(self.model(label), self.dataset.test_x[0], self.dataset.test_y[0],
                                             lambda: strategy.decode(payload, template))
        return self._costs[label]

    def timing(self, device) -> dict:
        """The device's compute_s, latency_s and late for the round (testbed.compute)."""
        from testbed.compute import device_timing

        speed = self.fleet.flops_per_s(device.device_id, self.config.fleet.reference_flops_per_s)
        return device_timing(device.flops, (r["airtime_s"] for r in device.transfers), speed, self.config.round.deadline_s)

    # ---- devices ---------------------------------------------------------------------
    def split(self, device_id: int):
        if device_id not in self._splits:
            from testbed.data import device_split

            device = self.fleet.device(device_id)
            cfg = self.config
            self._splits[device_id] = device_split(self.dataset, cfg.data, len(self.fleet.devices), device.partition, cfg.seed)
        return self._splits[device_id]

    def link(self, device_id: int, hop: str):
        """The link that serves ``hop`` for the device: its device<->fog hop link for the fog hops
        (:meth:`testbed.fleet.Fleet.fog_link`), the device's link for every other hop."""
        return self.fleet.fog_link(device_id) if "fog" in hop else self.fleet.link(device_id)

    def link_model(self, device_id: int) -> str:
        return str(self.fleet.device(device_id).link.model)


_worlds: dict[str, NodeWorld] = {}
_world_lock = threading.Lock()
_threads_set = False


def node_world(config_text: str, base_dir: str | None = None) -> NodeWorld:
    """The world of the config (built once per process and config)."""
    global _threads_set
    if not _threads_set:
        # Metrics must not depend on thread scheduling; one thread per worker is also fastest here.
        torch.set_num_threads(1)
        # Flower's worker-side notices ("Manually terminating ClientAppActor" at every shutdown)
        # drown the run's own output; device errors are recorded in the measurement rows instead.
        logging.getLogger("flwr").setLevel(logging.ERROR)
        keep_freed_memory()  # a cohort's received models are freed together (testbed.allocator)
        _threads_set = True
    key = hashlib.sha256(config_text.encode()).hexdigest() + "|" + (base_dir or "")
    with _world_lock:
        if key not in _worlds:
            import yaml

            from testbed.config import validate_tree

            config = validate_tree(yaml.safe_load(config_text), "run config")
            _worlds.clear()  # one experiment at a time per process
            _worlds[key] = NodeWorld(config, base_dir or ".")
        return _worlds[key]


def run_cohort(job: RoundJob) -> CohortReply:
    """Every (label, device) of the job's cohort through the scenario's device side."""
    world = node_world(job.config_text, job.base_dir or None)
    scenario = world.scenario
    reply = CohortReply(transfers=[], measurements=[])
    evaluations = SharedEvaluation()
    for label in job.labels:
        devices = []
        for device_id in job.devices:
            device = DeviceRun(world, job.plan, job.round, label, device_id, job.device_states.get((label, device_id)),
                               world.measurements, evaluations)
            try:
                scenario.run_device(device)
            except Exception as exc:  # a device that raises is a failed device, never a lost round
                device.fail(f"error: {type(exc).__name__}: {exc}")
                logging.getLogger("testbed.device").debug(traceback.format_exc())
            devices.append(device)
            reply.transfers.extend(device.transfers)
            reply.measurements.append(device.measurement)
            if device.upload is not None:
                reply.uploads[(label, device_id)] = device.upload
            if scenario.keeps_device_state and device.state is not None:
                reply.device_states[(label, device_id)] = device.state
        evaluations.run(world)  # the label's distinct received models, each once (the rows are updated in place)
        for device in devices:
            device.measurement.update(world.timing(device))
    return reply
