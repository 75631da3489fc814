"""The update scenario and its codecs: exact bytes, the right base, missed updates, determinism, resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import TINY, kill_after_first_round, resume_run, run_tiny, tiny_config
from strategies.registry import build
from testbed.payload import CRC_BYTES, FINGERPRINT_BYTES

FIXED_FRAMING = 1 + FINGERPRINT_BYTES + CRC_BYTES  # version byte, fingerprint, checksum

STRATEGIES = ("strategies=[{label: fp32, strategy: raw}, {label: delta-raw, strategy: raw}, "
              "{label: delta-q8, strategy: quantise, bits: 8}, {label: topk, strategy: topk, keep: 0.1, bits: 8}, "
              "{label: fact, strategy: factorised, rank: 2, bits: 8}]")
UPDATE = ["scenario={name: update, drift: shift, deploy_size: 300, update_size: 300, full_model: [fp32], "
          "retrain: {epochs: 1}, eval_images: 200}", STRATEGIES, "model.train.epochs=1"]


# ---- codecs --------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.integers(64, 600), st.floats(0.01, 1.0), st.integers(0, 2**31 - 1))
def test_topk_keeps_the_largest_entries_exactly_and_its_bytes_are_the_closed_form(n, keep, seed):
    from strategies.prune import positions_nbytes

    delta = torch.from_numpy(np.random.default_rng(seed).standard_normal(n).astype(np.float32))
    strategy = build({"strategy": "topk", "keep": keep})  # raw float32 values: exact
    payload = strategy.encode({"w": delta})
    decoded = strategy.decode(strategy.read(payload.to_bytes(), {"w": delta}), {"w": delta})["w"]
    m = min(n, max(1, round(keep * n)))
    kept = torch.argsort(delta.abs(), descending=True, stable=True)[:m]
    rest = torch.ones(n, dtype=torch.bool)
    rest[kept] = False
    assert torch.equal(decoded[kept], delta[kept]) and not decoded[rest].any()
    open_length = 0  # every segment's size is fixed by n and m: no lengths in the header
    assert payload.nbytes == FIXED_FRAMING + open_length + 4 * m + positions_nbytes(n, m)[1]


def _tiny_model():
    from testbed.models import build_model
    from testbed.config import ModelConfig

    torch.manual_seed(0)
    return build_model(ModelConfig(arch="deepcnn", width=4), (1, 28, 28), 10)


def _retrained_delta(strategy) -> dict:
    """The tiny model prepared by ``strategy``, three SGD steps in training mode, its float delta."""
    from torch.nn.utils import parametrize

    model = _tiny_model()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    model = strategy.prepare_update(model)
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.endswith("original"))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    model.train()
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for module in model.modules():
        if parametrize.is_parametrized(module):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    new = model.state_dict()
    return {k: new[k] - base[k] for k in base if base[k].dtype.is_floating_point}


def test_a_factorised_update_is_rank_r_per_layer_and_its_factors_give_it_back():
    strategy = build({"strategy": "factorised", "rank": 2})
    delta = _retrained_delta(strategy)
    sizes = 0
    for name, d in delta.items():
        if d.dim() >= 2:
            m, n = d.shape[0], d.numel() // d.shape[0]
            r = strategy._fixed_rank(m, n)
            rank = int(torch.linalg.matrix_rank(d.reshape(m, -1), atol=1e-5))
            assert rank <= (r or min(m, n)) and rank > 0, name
            sizes += 4 * (r * (m + n) if r else m * n)
        else:
            sizes += 4 * d.numel()
    payload = strategy.encode(delta)
    assert payload.nbytes == FIXED_FRAMING + sizes  # float32 factors and vectors, no open lengths
    decoded = strategy.decode(payload, delta, delta=True)
    for name in delta:
        torch.testing.assert_close(decoded[name], delta[name], atol=1e-5, rtol=1e-4)


def _varint_nbytes(x: int) -> int:
    return 1 if x < 1 << 7 else 2 if x < 1 << 14 else 3


def _random_delta(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    state = _tiny_model().state_dict()
    return {k: torch.from_numpy(rng.standard_normal(tuple(v.shape)).astype(np.float32))
            for k, v in state.items() if v.dtype.is_floating_point}


def _sent_ranks(payload, delta) -> dict:
    return {k: int.from_bytes(payload[f"{k}/rank"].data, "little") for k, d in delta.items() if d.dim() >= 2}


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(0, 6000), st.sampled_from([None, 4, 8]), st.booleans())
def test_a_byte_budget_is_met_exactly_and_no_further_rank_step_would_fit(seed, extra, bits, entropy):
    import re

    delta = _random_delta(seed)
    coding = {} if bits is None else {"bits": bits, "entropy": entropy}
    with pytest.raises(ValueError, match="below the smallest update") as refused:
        build({"strategy": "factorised", "budget_bytes": 1, "max_rank": 3, **coding}).encode(delta)
    smallest = int(re.search(r"\((\d+) bytes", str(refused.value)).group(1))
    strategy = build({"strategy": "factorised", "budget_bytes": smallest + extra, "max_rank": 3, **coding})
    payload = strategy.encode(delta)
    assert payload.nbytes <= smallest + extra
    back = strategy.read(payload.to_bytes(), delta)
    assert back == payload
    ranks = _sent_ranks(payload, delta)
    # greedy to the end: the next step of any one matrix (a rank more up to the training rank, then
    # the whole matrix for one retrained whole) no longer fits
    for name, r in ranks.items():
        m, n = delta[name].shape[0], delta[name].numel() // delta[name].shape[0]
        cap = max(k for k in range(1, 4) if k * (m + n) < m * n)
        assert r == 0 and cap < 3 or 1 <= r <= cap, (name, r)
        nxt = None if r == 0 else r + 1 if r < cap else 0 if cap < 3 else None
        if nxt is not None:
            assert strategy.encode_at_ranks(delta, {**ranks, name: nxt}).nbytes > smallest + extra, name
    if bits is None:  # float32 factors: the size is a closed form of the ranks
        size = FIXED_FRAMING
        for name, d in delta.items():
            if d.dim() < 2:
                size += 4 * d.numel()
                continue
            m, n, r = d.shape[0], d.numel() // d.shape[0], ranks[name]
            if r == 0:  # rank, whole, u and v absent
                size += 2 + _varint_nbytes(1 + 4 * m * n) + 4 * m * n + 2
            else:  # rank, whole absent, u, v
                size += 2 + 1 + sum(_varint_nbytes(1 + 4 * k * r) + 4 * k * r for k in (m, n))
        assert payload.nbytes == size


def test_the_energy_rule_keeps_the_smallest_rank_holding_the_energy_of_the_retrained_delta():
    delta = _random_delta(7)
    for name, d in delta.items():  # rank-3 deltas with spread singular values, like a factorised retraining's
        if d.dim() >= 2:
            m = d.shape[0]
            u, _, vt = torch.linalg.svd(d.reshape(m, -1), full_matrices=False)
            delta[name] = (u[:, :3] * torch.tensor([3.0, 1.0, 0.3]) @ vt[:3]).reshape(d.shape)
    for energy in (0.5, 0.95, 0.999):
        strategy = build({"strategy": "factorised", "energy": energy, "max_rank": 3})
        ranks = _sent_ranks(strategy.encode(delta), delta)
        kept = np.cumsum([9.0, 1.0, 0.09]) / 10.09
        r = int(np.searchsorted(kept, energy) + 1)
        for name, got in ranks.items():
            m, n = delta[name].shape[0], delta[name].numel() // delta[name].shape[0]
            assert got == (r if r * (m + n) < m * n else 0), (energy, name, got)  # not smaller: whole
    assert strategy.update_training_key() == build({"strategy": "factorised", "budget_bytes": 9, "max_rank": 3}).update_training_key()


def test_without_vector_refresh_biases_and_batchnorm_stay_deployed_and_are_not_sent():
    strategy = build({"strategy": "factorised", "rank": 2, "refresh_vectors": False})
    assert strategy.update_training_key() != build({"strategy": "factorised", "rank": 2}).update_training_key()
    delta = _retrained_delta(strategy)
    vectors = [k for k, d in delta.items() if d.dim() < 2]
    assert vectors and all(not delta[k].any() for k in vectors)  # BatchNorm's running statistics included
    assert any(delta[k].any() for k in delta if k not in vectors)
    payload = strategy.encode(delta)
    assert not any(s.name.split("/")[0] in vectors for s in payload.segments)
    matrices = sum(4 * 2 * (d.shape[0] + d.numel() // d.shape[0]) for k, d in delta.items() if k not in vectors)
    assert payload.nbytes == FIXED_FRAMING + matrices  # every matrix of the tiny model is worth rank 2
    decoded = strategy.decode(strategy.read(payload.to_bytes(), delta), delta)
    for name in delta:
        torch.testing.assert_close(decoded[name], delta[name], atol=1e-5, rtol=1e-4)


def test_factorised_options_name_the_rule_that_is_wrong():
    with pytest.raises(Exception, match="exactly one of rank, energy or budget_bytes"):
        build({"strategy": "factorised", "rank": 2, "energy": 0.9})
    with pytest.raises(Exception, match="max_rank"):
        build({"strategy": "factorised", "energy": 0.9})


def test_a_bundle_costs_one_framing_and_splits_back_into_its_updates():
    from testbed.scenarios.update import bundle, bundle_schema, unbundle

    strategy = build({"strategy": "quantise", "bits": 4, "entropy": True})
    template = {"a": torch.zeros(40, 9), "b": torch.zeros(5)}
    parts = {v: strategy.encode({k: torch.randn_like(t) for k, t in template.items()}) for v in (3, 4, 5)}
    sent = bundle(parts)
    assert sent.nbytes == sum(p.nbytes for p in parts.values()) - 2 * FIXED_FRAMING
    schema = strategy.payload_schema(template)
    got = unbundle(type(sent).from_bytes(sent.to_bytes(), bundle_schema(schema, [3, 4, 5])), schema, [3, 4, 5])
    for v, part in parts.items():
        assert got[v].to_bytes() == part.to_bytes()


def test_rotation_is_the_documented_transformation():
    from testbed.scenarios.update import rotate

    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 6] = 1.0  # right of the centre
    turned = rotate(x, 90.0)
    assert turned[0, 0].argmax().item() == 9 * 2 + 4  # above it: counter-clockwise
    assert torch.equal(rotate(x, 0.0), x)


# ---- the scenario, in this process (the real server and device sides, without Ray) ----------


def _drive(tmp_path, *overrides):
    """Every round of the config: the scenario's plan, every available device through the device
    pipeline (testbed.device.run_cohort, one cohort), absorb; the experiment and the rows."""
    from testbed.device import RoundJob, run_cohort
    from testbed.orchestrator import Experiment
    from testbed.scenarios import RoundResults

    cfg = tiny_config(*UPDATE, *overrides)
    exp = Experiment(cfg, tmp_path / "run", progress=False, config_path=TINY)
    exp.prepare()
    rows, exp.transfer_rows = [], []
    for r in range(1, cfg.rounds + 1):
        plan = exp.scenario.plan_round(exp, r)
        devices = sorted(d.device_id for d in exp.fleet.available(r, cfg.seed))
        reply = run_cohort(RoundJob(exp.config_text, exp.base_dir, r, devices, exp.labels, plan,
                                    {k: s for k, s in exp.device_states.items() if k[1] in devices}))
        exp.device_states.update(reply.device_states)
        exp.scenario.absorb(exp, r, RoundResults(reply.measurements, reply.uploads))
        rows += reply.measurements
        exp.transfer_rows += reply.transfers
    return exp, rows


@pytest.fixture(scope="module")
def missed_updates(tmp_path_factory):
    """4 rounds on ideal links with devices missing rounds (availability 0.5)."""
    return _drive(tmp_path_factory.mktemp("update"), "fleet.link={model: ideal}", "rounds=4",
                  "fleet.compute.availability=0.5")


def test_an_update_applied_to_the_right_base_reproduces_the_servers_model(missed_updates):
    exp, rows = missed_updates
    scenario = exp.scenario
    for label in ("delta-raw", "fp32"):  # float32 delta, float32 model: exact up to float rounding
        for h in scenario.history[label][1:]:
            assert h["accuracy"] == pytest.approx(h["server_accuracy"], abs=0.002), (label, h)
    assert all(not r["failure"] for r in rows)
    # every device that took part holds exactly the reference of the version it reports
    assert all(r["recon_nmse_db"] == -math.inf for r in rows), [r["recon_nmse_db"] for r in rows][:5]


def test_a_missed_update_is_sent_with_the_next_one_and_yields_the_right_model(missed_updates):
    exp, rows = missed_updates
    caught_up = [r for r in rows if r["label"] == "fact" and r["updates_sent"] > 1]
    assert caught_up, "no device missed a round: choose another seed"
    assert all(r["lag"] == 0 and r["recon_nmse_db"] == -math.inf for r in caught_up)
    full = [r for r in rows if r["sent"] == "full"]  # more than max_gap behind: none in 4 rounds
    assert all(r["round"] - 1 > 3 for r in full)
    # the server's record is what the devices hold
    for (label, device), state in exp.device_states.items():
        assert exp.scenario.acked[label][str(device)] == int(state["version"])


def test_bundle_bytes_on_the_wire_are_the_sum_of_the_updates_less_their_framings(missed_updates):
    exp, rows = missed_updates
    sent = {(t["round"], t["label"], t["device_id"]): t for t in exp.transfer_rows}
    checked = 0
    for label in ("delta-q8", "topk", "fact"):
        payloads = exp.scenario.payloads[label]
        for r in rows:
            if r["label"] == label and r["updates_sent"]:
                versions = range(r["version"] - r["updates_sent"] + 1, r["version"] + 1)
                framings = (r["updates_sent"] - 1) * FIXED_FRAMING
                t = sent[(r["round"], label, r["device_id"])]
                assert t["transfer"] == "update" and t["payload_bytes"] == sum(len(payloads[v]) for v in versions) - framings
                checked += 1
    assert checked


def test_a_device_whose_version_disagrees_with_the_servers_record_fails_and_keeps_its_model(missed_updates):
    from testbed.device import RoundJob, run_cohort
    from testbed.scenarios.update import device_state

    exp, _ = missed_updates
    plan = exp.scenario.plan_round(exp, exp.config.rounds)  # the last round again: no retraining
    wrong = device_state(-1, None, None)
    expected = exp.scenario.acked["fact"]["0"]
    reply = run_cohort(RoundJob(exp.config_text, exp.base_dir, exp.config.rounds, [0], ["fact"], plan,
                                {("fact", 0): wrong}))
    (row,) = reply.measurements
    assert row["failure"] == f"device holds version -1, the server's record says {expected}"
    assert int(reply.device_states[("fact", 0)]["version"]) == -1 and not reply.transfers


def test_a_full_model_label_that_is_not_a_strategy_is_one_line(tmp_path):
    from testbed.config import ConfigError
    from testbed.orchestrator import Experiment

    cfg = tiny_config(*UPDATE, "scenario.full_model=[fp32, nosuch]")
    with pytest.raises(ConfigError, match=r"^scenario.full_model: 'nosuch' is not a strategy label \(fp32, "):
        Experiment(cfg, tmp_path / "run", progress=False, config_path=TINY).prepare()


# ---- with Flower on Ray ---------------------------------------------------------------------

NOISY = [*UPDATE, "rounds=3", "fleet.compute.availability=0.7"]


@pytest.fixture(scope="module")
def noisy_runs(tmp_path_factory):
    """The same noisy update run with one and with three devices per node."""
    base = tmp_path_factory.mktemp("noisy")
    one = run_tiny(base / "one", *NOISY, "engine.devices_per_node=1")
    three = run_tiny(base / "three", *NOISY, "engine.devices_per_node=3", "engine.num_workers=1")
    return one, three


@pytest.mark.slow
def test_update_runs_are_the_same_whatever_the_cohorts(noisy_runs):
    one, three = noisy_runs
    for name in ("measurements.csv", "transfers.csv", "rounds.csv"):
        assert (three / name).read_text() == (one / name).read_text(), name
    summary = json.loads((one / "summary.json").read_text())
    assert [v["version"] for v in summary["strategies"]["fact"]["versions"]] == [0, 1, 2, 3]
    # on-device compute: every device that holds a model evaluated it; a bundle of two updates costs
    # more to decode than one (the same evaluation: every test split has the same size)
    rows = pd.read_csv(one / "measurements.csv")
    held = rows[rows["accuracy"].notna()]
    assert len(held) and (held["compute_s"] > 0).all() and held["n_test"].nunique() == 1
    fact = held[(held["label"] == "fact") & (held["sent"] == "update")]
    one_update, two = fact[fact["updates_sent"] == 1]["compute_s"], fact[fact["updates_sent"] == 2]["compute_s"]
    assert len(one_update) and len(two) and two.min() > one_update.max()


@pytest.mark.slow
def test_the_report_of_an_update_run_draws_every_devices_lag_and_accuracy_over_rounds(noisy_runs, tmp_path):
    from browser import open_report
    from testbed.report import load_run
    from testbed.scenarios.update import fleet_lag

    one, _ = noisy_runs
    result = open_report(one, tmp_path / "update.html", "update-rounds")
    assert "Versions and accuracy over rounds" in result.text and "version lag, every device" in result.text
    run = load_run(one)
    rows = run.measurements[run.measurements["label"] == "fact"].dropna(subset=["lag"])
    lag = fleet_lag(run, rows)
    assert len(lag) == 8 * 3 and set(lag["round"]) == {1, 2, 3}  # every device, every round
    took_part = lag.merge(rows[["round", "device_id", "lag"]].astype(int), on=["round", "device_id"],
                          suffixes=("", "_measured"))
    assert len(took_part) == len(rows) and (took_part["lag"] == took_part["lag_measured"]).all()
    # a device that sat a round out falls one version further behind (installed deployment: version r in round r)
    sat_out = lag.merge(rows[["round", "device_id"]].astype(int), how="left", indicator=True)
    sat_out = sat_out[sat_out["_merge"] == "left_only"]
    assert len(sat_out), "every device took part in every round: choose another seed"
    before = lag.set_index(["round", "device_id"])["lag"]
    for r in sat_out.itertuples():
        assert r.lag == (before.get((r.round - 1, r.device_id), 0) + 1), r


@pytest.mark.slow
def test_an_update_run_resumed_after_a_kill_gives_the_uninterrupted_metrics(tmp_path, noisy_runs):
    killed = tmp_path / "killed"
    assert 1 <= kill_after_first_round(killed, *NOISY) < 3
    resume_run(killed)
    whole = noisy_runs[0]  # uninterrupted (its cohort size does not change the metrics: tested above)
    for name in ("measurements.csv", "transfers.csv", "rounds.csv"):
        assert (killed / name).read_text() == (whole / name).read_text(), name


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([{"strategy": "topk", "keep": 0.05, "bits": 8}, {"strategy": "topk", "keep": 0.5},
                        {"strategy": "factorised", "rank": 2, "bits": 4, "entropy": True}]),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=4))
def test_damaged_update_payloads_decode_or_raise_a_payload_error(spec, flips):
    from testbed.payload import PayloadError

    template = {"a.weight": torch.zeros(24, 3, 3, 3), "a.bias": torch.zeros(24), "b.weight": torch.zeros(10, 24)}
    gen = torch.Generator().manual_seed(1)
    delta = {k: torch.randn(v.shape, generator=gen) for k, v in template.items()}
    strategy = build(spec)
    wire = bytearray(strategy.encode(delta).to_bytes())
    for pos, xor in flips:
        wire[pos % len(wire)] ^= xor
    try:
        decoded = strategy.decode(strategy.read(bytes(wire), template), template)
    except PayloadError:
        return
    assert {k: v.shape for k, v in decoded.items()} == {k: v.shape for k, v in template.items()}
