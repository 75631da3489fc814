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
    decoded = strategy.decode(Payload.from_bytes(strategy.encode(update).to_bytes()), update)
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


def test_energy_rule_picks_the_smallest_sufficient_rank_and_small_matrices_go_whole():
    update = low_rank_update(3)
    payload = build({"strategy": "lowrank", "energy": 0.999999}).encode(update)
    assert int.from_bytes(payload["conv.weight/rank"].data, "little") == 3
    # A full-rank 10x48 matrix at 99.9999% energy needs (nearly) full rank: sent whole.
    assert int.from_bytes(payload["fc.weight/rank"].data, "little") == 0
    assert "fc.weight" in payload and "fc.weight/u" not in payload


def test_options_and_a_lying_rank_are_rejected_clearly():
    with pytest.raises(Exception, match="exactly one of rank or energy"):
        build({"strategy": "lowrank"})
    update = low_rank_update(2)
    strategy = build({"strategy": "lowrank", "rank": 2})
    payload = strategy.encode(update)
    forged = Payload([s.replace_data((500).to_bytes(2, "little")) if s.name == "conv.weight/rank" else s
                      for s in payload.segments])
    with pytest.raises(PayloadError, match="conv.weight/rank"):
        strategy.decode(forged, update)
