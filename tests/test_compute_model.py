"""Devices that compute and come and go: the cost model, deadlines, availability schedules."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run_tiny
from testbed.compute import count_flops, device_timing, model_costs


# ---- the cost model -------------------------------------------------------------------------


def test_flops_are_counted_from_shapes():
    layer = torch.nn.Linear(30, 20)
    x = torch.randn(7, 30)
    assert count_flops(lambda: layer(x)) == 2 * 7 * 30 * 20  # a multiply and an add per weight and row


def test_model_costs_of_the_quickstart_model():
    from strategies.registry import build
    from testbed.config import ModelConfig
    from testbed.models import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="deepcnn", width=8), (1, 28, 28), 10)
    strategy = build({"strategy": "quantise", "bits": 8})
    state = model.state_dict()
    payload = strategy.encode(state)
    image, label = torch.randn(1, 28, 28), torch.tensor(3)
    costs = model_costs(model, image, label, lambda: strategy.decode(payload, state))
    values = sum(t.numel() for t in state.values() if t.dtype.is_floating_point)
    assert costs.forward > 1e5
    assert 2 * costs.forward <= costs.train <= 3.5 * costs.forward  # backward: about twice the forward pass
    assert costs.decode >= values  # one operation per decoded value at least
    again = model_costs(model, torch.randn(1, 28, 28), torch.tensor(1), lambda: strategy.decode(payload, state))
    assert again == costs  # shapes only: not the values, not the machine
    assert model.training  # the model it was given is left as it was


@settings(max_examples=200, deadline=None)
@given(
    flops=st.one_of(st.just(0.0), st.floats(1, 1e15)),
    airtimes=st.lists(st.one_of(st.floats(0, 1e3), st.just(math.nan), st.none()), max_size=4),
    speed=st.floats(1e3, 1e13),
    deadline=st.one_of(st.none(), st.floats(1e-3, 1e4)),
)
def test_latency_is_airtime_plus_compute_and_late_past_the_deadline(flops, airtimes, speed, deadline):
    timing = device_timing(flops, airtimes, speed, deadline)
    airtime = sum(a for a in airtimes if a is not None and not math.isnan(a))
    if flops:
        assert timing["compute_s"] == flops / speed
        assert timing["latency_s"] == airtime + flops / speed
    else:  # no work counted: no compute time, the latency is the air's
        assert math.isnan(timing["compute_s"]) and timing["latency_s"] == airtime
    assert timing["late"] == (deadline is not None and timing["latency_s"] > deadline)


# ---- availability: probability and schedule ----------------------------------------------


def _fleet(*overrides):
    from conftest import tiny_config
    from testbed.fleet import Fleet

    config = tiny_config(*overrides)
    return Fleet.from_config(config.fleet, config.seed)


def test_a_schedule_says_in_which_rounds_a_device_can_take_part():
    fleet = _fleet("fleet.devices=4", "fleet.compute.schedule=['1', '10', '011', '0']")
    taking_part = {r: [d.device_id for d in fleet.available(r, 7)] for r in range(1, 7)}
    assert taking_part == {1: [0, 1], 2: [0, 2], 3: [0, 1, 2], 4: [0], 5: [0, 1, 2], 6: [0, 2]}


def test_schedules_and_probabilities_combine():
    fleet = _fleet("fleet.devices=200", "fleet.compute.schedule='01'", "fleet.compute.availability=0.5")
    assert fleet.available(1, 7) == []
    share = len(fleet.available(2, 7)) / 200
    assert 0.35 < share < 0.65
    assert fleet.available(2, 7) == fleet.available(2, 7)  # keyed draws


def test_a_schedule_comes_from_the_trace_and_goes_back_to_it(tmp_path):
    from testbed.fleet import Fleet

    trace = tmp_path / "trace.csv"
    trace.write_text("device_id,snr_db,bandwidth_mbps,latency_ms,compute_factor,availability,schedule\n"
                     "0,10,1,1,2.5,1,0110\n1,12,1,1,0.5,1,\n")
    fleet = Fleet.from_csv(trace)
    assert [d.schedule for d in fleet] == ["0110", "1"] and [d.speed_factor for d in fleet] == [2.5, 0.5]
    assert [d.device_id for d in fleet.available(1, 0)] == [1]
    fleet.to_csv(tmp_path / "devices.csv")
    assert Fleet.from_csv(tmp_path / "devices.csv") == fleet


@pytest.mark.parametrize("cell, message", [("012", "'012' is not a string of 0 and 1"), ("yes", "'yes' is not a string of 0 and 1")])
def test_a_bad_schedule_cell_is_one_line(tmp_path, cell, message):
    from testbed.fleet import FleetError, Fleet

    trace = tmp_path / "trace.csv"
    trace.write_text(f"device_id,snr_db,bandwidth_mbps,latency_ms,availability,schedule\n0,10,1,1,1,{cell}\n")
    with pytest.raises(FleetError) as err:
        Fleet.from_csv(trace)
    assert str(err.value) == f"{trace} line 2, column schedule: {message}"


@pytest.mark.parametrize("override, key", [("fleet.compute.schedule=1010", "fleet.compute.schedule"),
                                           ("fleet.compute.schedule=''", "fleet.compute.schedule"),
                                           ("round.deadline_s=0", "round.deadline_s"),
                                           ("fleet.reference_flops_per_s=-1", "fleet.reference_flops_per_s")])
def test_bad_compute_settings_are_refused_at_load(override, key):
    from conftest import tiny_config
    from testbed.config import ConfigError

    with pytest.raises(ConfigError) as err:
        tiny_config(override)
    assert f": {key}: " in str(err.value) and "\n" not in str(err.value)


# ---- a run with compute, deadlines and availability ----------------------------------------

COMPUTE = ["rounds=3", "fleet.compute.speed_factor={lognormal: [0, 1]}", "fleet.compute.availability=0.7",
           "fleet.compute.schedule=['1', '1', '110', '1']", "fleet.reference_flops_per_s=2e7"]
# A round's work here is about 2e7 FLOPs: about 1 s at the reference speed, so this splits the fleet.
DEADLINE_S = 1.0


@pytest.fixture(scope="module")
def compute_runs(tmp_path_factory):
    """The same run twice: one device per node on the session's Ray (a worker per CPU), automatic
    cohorts on one worker."""
    root = tmp_path_factory.mktemp("compute")
    first = run_tiny(root / "one", *COMPUTE, f"round.deadline_s={DEADLINE_S}", "engine.devices_per_node=1")
    second = run_tiny(root / "auto", *COMPUTE, f"round.deadline_s={DEADLINE_S}", "engine.devices_per_node=null",
                      "engine.num_workers=1")
    return first, second


@pytest.mark.slow  # two runs on Flower and Ray
def test_compute_and_availability_do_not_depend_on_cohorts_or_workers(compute_runs):
    first, second = compute_runs
    for name in ("measurements.csv", "transfers.csv", "rounds.csv"):
        assert (first / name).read_text() == (second / name).read_text(), name


@pytest.mark.slow
def test_a_run_records_compute_latency_lateness_and_absence(compute_runs):
    from conftest import tiny_config
    from testbed.fleet import Fleet
    from testbed.scenarios.broadcast import Broadcast
    from testbed.tables import ROUNDS, TRANSFERS

    run = compute_runs[0]
    config = tiny_config(*COMPUTE)
    rows = Broadcast.measurements_table().read(run)
    fleet = Fleet.from_config(config.fleet, config.seed)
    for round_ in (1, 2, 3):
        taking_part = {d.device_id for d in fleet.available(round_, config.seed)}
        mine = rows[rows["round"] == round_]
        assert set(mine.loc[~mine["unavailable"], "device_id"]) == taking_part
        assert len(mine) == len(fleet) * len(config.strategies)  # every device has its row
    absent = rows[rows["unavailable"]]
    assert len(absent) and (absent["failure"].fillna("") == "").all() and absent["accuracy"].isna().all()
    assert rows.loc[(rows["device_id"] == 2) & (rows["round"] == 3), "unavailable"].all()  # schedule 110
    present = rows[~rows["unavailable"]]
    assert (present["compute_s"] > 0).all()
    speeds = {d.device_id: d.speed_factor * config.fleet.reference_flops_per_s for d in fleet}
    # The same work for every device of a label: its compute time scales with its speed alone.
    work = present["compute_s"] * present["device_id"].map(speeds)
    assert (work.groupby(present["label"]).nunique() == 1).all()
    transfers = TRANSFERS.read(run)
    airtime = transfers.groupby(["round", "label", "device_id"])["airtime_s"].sum()
    keyed = present.set_index(["round", "label", "device_id"])
    assert ((keyed["latency_s"] - (airtime.reindex(keyed.index) + keyed["compute_s"])).abs() < 1e-12).all()
    assert (keyed["late"] == (keyed["latency_s"] > DEADLINE_S)).all()
    assert keyed["late"].any() and not keyed["late"].all()  # the deadline splits this fleet
    rounds = ROUNDS.read(run)
    for _, r in rounds.iterrows():
        mine = rows[(rows["round"] == r["round"]) & (rows["label"] == r["label"])]
        taking = mine[~mine["unavailable"]]
        assert r["unavailable"] == mine["unavailable"].sum() and r["devices"] == len(taking)
        assert r["late"] == taking["late"].sum()
        assert r["on_time"] == ((taking["failure"].fillna("") == "") & ~taking["late"]).sum()
        assert r["latency_s_max"] == taking["latency_s"].max()


@pytest.mark.slow  # two federated runs on Flower and Ray
def test_late_federated_updates_are_not_aggregated(tmp_path):
    from testbed.scenarios.federated import Federated

    federated = ["scenario.name=federated", "rounds=2", "fleet.reference_flops_per_s=1e6"]

    def compression_error(run):  # clean decode vs the global model: channel-free, changes with the model
        rows = Federated.measurements_table().read(run)
        q8 = rows[rows["label"] == "q8"]
        return rows, [set(q8.loc[q8["round"] == r, "recon_nmse_compression_db"].round(12)) for r in (1, 2)]

    late, (one, two) = compression_error(run_tiny(tmp_path / "late", *federated, "round.deadline_s=1e-9"))
    assert late["late"].all()
    assert len(one) == 1 and one == two  # nothing aggregated: round 2 sends round 1's model
    rows, (one, two) = compression_error(run_tiny(tmp_path / "on-time", *federated))
    assert not rows["late"].any() and len(one) == 1 and one != two  # aggregated
    # Round 1 is the same in both runs but for lateness: being late is not a failure.
    first = [r[r["round"] == 1].drop(columns=["late"]).reset_index(drop=True) for r in (late, rows)]
    assert first[0].equals(first[1])
