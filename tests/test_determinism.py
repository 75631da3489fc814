"""The same seed gives the same metrics whatever the cohort size and the number of Ray workers."""

from __future__ import annotations

import pytest

from conftest import FAULTY, run_tiny

pytestmark = pytest.mark.slow  # starts Flower on Ray


def test_metrics_do_not_depend_on_cohorts_workers_or_rounds_sent_ahead(tiny_run, tmp_path, monkeypatch):
    from testbed.scenarios.broadcast import Broadcast

    # The reference run used two devices per node and a worker per CPU, and (broadcast plans ahead)
    # pushed round 2's messages before round 1 was committed; this one sends a round at a time.
    monkeypatch.setattr(Broadcast, "plans_ahead", False)
    other = run_tiny(tmp_path / "run", *FAULTY, "scenario.measurements=[nmse_conv]", "engine.devices_per_node=5",
                     "engine.num_workers=1")
    ahead, one_at_a_time = ((run / "run.log").read_text() for run in (tiny_run, other))
    assert ahead.index("round 2: 4 messages pushed") < ahead.index("round 1 done in")
    assert one_at_a_time.index("round 1 done in") < one_at_a_time.index("round 2: 2 messages pushed")
    reference = (tiny_run / "measurements.csv").read_text()
    assert reference.count("\n") == 1 + 2 * 3 * 8
    assert (other / "measurements.csv").read_text() == reference
    for name in ("transfers.csv", "rounds.csv", "metrics.csv"):
        assert (other / name).read_text() == (tiny_run / name).read_text(), name
    assert (other / "payloads.json").read_text() == (tiny_run / "payloads.json").read_text()


def test_federated_metrics_do_not_depend_on_cohorts_or_workers(tmp_path):
    federated = ["scenario.name=federated", "rounds=2"]
    one = run_tiny(tmp_path / "one", *federated, "engine.devices_per_node=1")  # the session's Ray: a worker per CPU
    four = run_tiny(tmp_path / "four", *federated, "engine.devices_per_node=4", "engine.num_workers=1")
    for name in ("measurements.csv", "transfers.csv", "rounds.csv"):
        assert (four / name).read_text() == (one / name).read_text(), name
    assert "up" in (one / "transfers.csv").read_text()  # the uplink is there to agree on
