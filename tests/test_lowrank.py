"""The low-rank (truncated SVD) strategy: exact on low-rank updates, exact byte counts."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.registry import build
from testbed.payload import Payload, PayloadError


def low_rank_update(rank: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(48, rank, generator=g) @ torch.randn(rank, 16 * 9, generator=g)).reshape(48, 16, 3, 3)
    return {"conv.weight": w, "conv.bias": torch.randn(48, generator=g), "fc.weight": torch.randn(10, 48, generator=g)}


@given(rank=st.integers(1, 6))
@settings(max_examples=10, deadline=None)
def test_an_update_of_rank_r_is_recovered_at_rank_r(rank):
    update = low_rank_update(rank)
    strategy = build({"strategy": "lowrank", "rank": rank})
    decoded = strategy.decode(strategy.read(strategy.encode(update).to_bytes(), update), update)
    err = ((decoded["conv.weight"] - update["conv.weight"]) ** 2).sum() / (update["conv.weight"] ** 2).sum()
    assert err < 1e-10
    assert torch.equal(decoded["conv.bias"], update["conv.bias"])


def test_factor_bytes_are_r_times_m_plus_n_values():
    update = low_rank_update(4)
    bits = 6
    payload = build({"strategy": "lowrank", "rank": 4, "bits": bits}).encode(update)
    assert payload["conv.weight/u"].nbytes == math.ceil(48 * 4 * bits / 8)
    assert payload["conv.weight/v"].nbytes == math.ceil(16 * 9 * 4 * bits / 8)
    # fc.weight (10 x 48): rank-4 factors, 4*(10+48) = 232 < 480 values, so factorised too.
    assert payload["fc.weight/u"].nbytes == math.ceil(10 * 4 * bits / 8)
    # a fixed rank is known to the receiver from the shapes: no rank segment, nothing open in the header
    assert not any(name.endswith("/rank") for name in payload.names())
    factors = sum(math.ceil(r * bits / 8) + 8 for r in (48 * 4, 144 * 4, 10 * 4, 48 * 4))
    assert payload.nbytes == 9 + factors + math.ceil(48 * bits / 8) + 8  # framing, factors, conv.bias


def test_energy_rule_picks_the_smallest_sufficient_rank_and_small_matrices_go_whole():
    update = low_rank_update(3)
    payload = build({"strategy": "lowrank", "energy": 0.999999}).encode(update)
    assert int.from_bytes(payload["conv.weight/rank"].data, "little") == 3
    # A full-rank 10x48 matrix at 99.9999% energy needs (nearly) full rank: sent whole.
    assert int.from_bytes(payload["fc.weight/rank"].data, "little") == 0
    assert "fc.weight" in payload and "fc.weight/u" not in payload


def test_energy_payloads_cross_the_wire_with_their_optional_segments():
    update = low_rank_update(3)
    strategy = build({"strategy": "lowrank", "energy": 0.999999, "bits": 8, "entropy": True})
    payload = strategy.encode(update)
    back = strategy.read(payload.to_bytes(), update)
    assert back == payload and "fc.weight/u" not in back and "conv.weight" not in back
    decoded, expected = strategy.decode(back, update), strategy.decode(payload, update)
    for name in update:
        assert torch.equal(decoded[name], expected[name]), name


def test_options_and_a_lying_rank_are_rejected_clearly():
    with pytest.raises(Exception, match="exactly one of rank or energy"):
        build({"strategy": "lowrank"})
    update = low_rank_update(2)
    strategy = build({"strategy": "lowrank", "energy": 0.99})
    payload = strategy.encode(update)

    def forged(rank: int) -> Payload:
        data = rank.to_bytes(2, "little")
        segments = [s.replace_data(data) if s.name == "conv.weight/rank" else s for s in payload.segments]
        return payload.with_segments(segments)

    with pytest.raises(PayloadError, match="conv.weight/rank.*exceeds"):
        strategy.decode(forged(500), update)
    with pytest.raises(PayloadError, match="'conv.weight/u': surplus"):  # rank 0: sent whole, yet factors came
        strategy.decode(forged(0), update)
    with pytest.raises(PayloadError, match="'conv.weight/u': holds"):  # another rank than the factors' sizes
        strategy.decode(forged(3), update)
