"""Scenarios for the tests only, installed as a plug-in package (entry points) by conftest.py.

- ``faulty-broadcast``: broadcast whose chosen devices raise (``fail_devices``) or kill
  their worker process on the spot (``kill_devices``), as a lost Ray worker would: fault
  injection that stays out of the production paths.
- ``counter``: a scenario whose devices keep state between rounds: each device counts the
  rounds whose ``down`` transfer reached it, and a dropped round leaves its count as it was.
"""

from __future__ import annotations

import os

import torch

from strategies.registry import build
from testbed.scenarios import RoundPlan, Scenario, ScenarioOptions
from testbed.scenarios.broadcast import Broadcast, ModelDeliveryOptions
from testbed.tables import Column
from testbed.transfer import Transfer


class FaultyOptions(ModelDeliveryOptions):
    fail_devices: list[int] = []
    kill_devices: list[int] = []


class FaultyBroadcast(Broadcast):
    name = "faulty-broadcast"
    description = "Broadcast with injected device faults (tests only)."
    Options = FaultyOptions

    def run_device(self, device) -> None:
        if device.device_id in self.options.kill_devices:
            os._exit(17)
        if device.device_id in self.options.fail_devices:
            raise RuntimeError("injected failure")
        super().run_device(device)


class CounterOptions(ScenarioOptions):
    drop_round: int = 0  # devices lose their state in this round (0: never)


TICK = Transfer("tick", "server->device", "a one-value payload that bumps the device's counter")


class Counter(Scenario):
    name = "counter"
    description = "Devices count the rounds that reached them (tests only)."
    Options = CounterOptions
    transfers = (TICK,)
    measurement_columns = (Column("count", "int", "", "rounds received so far"),)
    keeps_device_state = True

    def start(self, server) -> None:
        self.raw = build({"strategy": "raw"})

    def plan_round(self, server, round_: int) -> RoundPlan:
        return RoundPlan(blobs={"tick": self.raw.encode({"one": torch.ones(1)}).to_bytes()})

    def run_device(self, device) -> None:
        count = 0 if device.state is None else int(device.state["count"])
        raw = build({"strategy": "raw"})
        result = device.transfer(TICK, raw.read(device.plan.blobs["tick"], {"one": torch.zeros(1)}),
                                 decode=lambda p: raw.decode(p, {"one": torch.zeros(1)}))
        if result.ok and device.round != self.options.drop_round:
            count += int(result.value["one"].item())
        device.state = {"count": torch.tensor(count)}
        device.measure(count=count)
