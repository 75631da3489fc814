"""The federated scenario's server side: FedAvg over what arrived."""

from __future__ import annotations

from conftest import tiny_config


def test_federated_aggregate_leaves_out_updates_that_are_not_finite():
    import torch

    from strategies.registry import build
    from testbed.scenarios import RoundResults, Upload
    from testbed.scenarios.federated import Federated

    scenario = Federated(Federated.Options(uplink={"strategy": "raw"}), tiny_config("scenario.name=federated"))
    server = type("Server", (), {"labels": ["a"], "strategies": {"a": build({"strategy": "raw"})}})()
    scenario.states = {"a": {"w": torch.zeros(3)}}
    scenario.payloads = {}
    good = scenario.uplink.encode({"w": torch.ones(3)}).to_bytes()
    bad = scenario.uplink.encode({"w": torch.tensor([float("nan"), 1.0, 1.0])}).to_bytes()
    rows = [{"label": "a", "device_id": d, "failure": ""} for d in (0, 1)]
    scenario.absorb(server, 1, RoundResults(rows, {("a", 0): Upload(good, {"weight": 10}), ("a", 1): Upload(bad, {"weight": 10})}))
    assert torch.equal(scenario.states["a"]["w"], torch.ones(3))
    assert rows[0]["failure"] == "" and rows[1]["failure"].startswith("up update not finite")
    # the next round's downlink is the new global model
    assert torch.equal(build({"strategy": "raw"}).decode(scenario.payloads["a"], {"w": torch.zeros(3)})["w"], torch.ones(3))
