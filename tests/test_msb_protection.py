"""Unequal error protection of quantised codes: ``protection: {msb: m}`` (strategies/values.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.registry import StrategySpecError, build
from strategies.values import ValueCoding, decode_values, encode_values, value_specs
from testbed.links import link_params, make_link
from testbed.payload import Payload, PayloadSchema
from testbed.rng import derive_rng
from tests.test_strategies import FIXED_FRAMING, round_trip, tiny_state


@settings(max_examples=200, deadline=None)
@given(count=st.integers(0, 300), bits=st.integers(2, 16), msb=st.integers(0, 16), per_channel=st.booleans(), seed=st.integers(0, 2**16))
def test_split_codes_sizes_and_round_trip(count, bits, msb, per_channel, seed):
    rows = 3 if per_channel and count % 3 == 0 and count else 1
    values = np.random.default_rng(seed).standard_normal(count).astype(np.float32)
    plain, split = ValueCoding(bits=bits, per_channel=per_channel), ValueCoding(bits=bits, per_channel=per_channel, protection={"msb": msb})
    segments = encode_values("w", values, split, rows=rows)
    payload = Payload(segments, PayloadSchema(tuple(value_specs("w", count, split, rows=rows))))  # follows its schema
    m = min(msb, bits)
    sides = 8 * (rows if per_channel and count else 1)
    top = math.ceil(count * m / 8) if 0 < m < bits else 0
    low = math.ceil(count * (bits - m) / 8) if m < bits else math.ceil(count * bits / 8)
    assert sum(s.nbytes for s in segments) == top + low + sides  # closed form
    assert sum(s.nbytes for s in segments if s.protected) == sides + (top if m < bits else low)
    reference = decode_values(Payload(encode_values("w", values, plain, rows=rows)), "w", count, plain, rows=rows)
    assert np.array_equal(decode_values(payload, "w", count, split, rows=rows), reference)  # the same codes


def test_strategy_option_bytes_and_exact_round_trip():
    state = tiny_state()
    plain, decoded_plain = round_trip({"strategy": "quantise", "bits": 8}, state)
    for m in (1, 2, 8):
        payload, decoded = round_trip({"strategy": "quantise", "bits": 8, "protection": {"msb": m}}, state)
        floats = [t for t in state.values() if t.dtype.is_floating_point]
        codes = sum(math.ceil(t.numel() * m / 8) + math.ceil(t.numel() * (8 - m) / 8) if m < 8 else t.numel() for t in floats)
        assert payload.nbytes == FIXED_FRAMING + codes + 8 * len(floats)
        assert payload.protected_nbytes == FIXED_FRAMING + 8 * len(floats) + sum(math.ceil(t.numel() * m / 8) for t in floats)
        for name in state:
            assert torch.equal(decoded[name], decoded_plain[name]), (m, name)
    assert plain.schema.fingerprint == build({"strategy": "quantise", "bits": 8}).encode(state).schema.fingerprint


def test_the_top_planes_survive_a_noisy_link():
    """Over a BSC at BER 0.05 the protected top 2 planes arrive intact: every error is below them."""
    state = tiny_state()
    strategy = build({"strategy": "quantise", "bits": 8, "protection": {"msb": 2}})
    payload = strategy.encode(state)
    t = make_link(link_params("bsc", ber=0.05, max_attempts=64)).transmit(payload, derive_rng(0, "uep"))
    assert t.stats.delivered and t.stats.bit_errors > 100
    decoded = strategy.decode(t.received, state)
    name = "conv2.weight"
    x = state[name].reshape(-1).double()
    step = (x.max() - x.min()) / 255
    error = (decoded[name].reshape(-1).double() - x).abs()
    assert torch.all(error <= 64 * step + 1e-4)  # low 6 bits wrong at most: under 2^6 steps
    unprotected = make_link(link_params("bsc", ber=0.05, max_attempts=64)).transmit(build({"strategy": "quantise", "bits": 8}).encode(state), derive_rng(0, "uep"))
    worst = (build({"strategy": "quantise", "bits": 8}).decode(unprotected.received, state)[name].reshape(-1).double() - x).abs().max()
    assert worst > 64 * step  # without it some top bit flips


@pytest.mark.parametrize("spec, match", [
    ({"strategy": "quantise", "bits": 8, "entropy": True, "protection": {"msb": 2}}, "needs bits and no entropy"),
    ({"strategy": "quantise", "bits": 8, "protection": {"msb": -1}}, "msb"),
    ({"strategy": "quantise", "bits": 8, "protection": {"top": 2}}, "protection.msb: Field required"),
])
def test_bad_protection_is_refused(spec, match):
    with pytest.raises((StrategySpecError, ValueError), match=match):
        build(spec)


def test_symmetry_and_pruning_take_it_too():
    for spec in ({"strategy": "symmetry", "group": "central_skew", "mode": "dof", "bits": 8},
                 {"strategy": "prune", "match": "central_skew", "finetune": False, "bits": 8}):
        state = tiny_state(symmetric="central_skew") if spec["strategy"] == "symmetry" else tiny_state()
        plain, decoded_plain = round_trip(spec, state)
        split, decoded = round_trip({**spec, "protection": {"msb": 2}}, state)
        assert split.protected_nbytes > plain.protected_nbytes and split.exposed_nbytes < plain.exposed_nbytes
        for name in state:
            assert torch.equal(decoded[name], decoded_plain[name]), name
