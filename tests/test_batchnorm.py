"""BatchNorm in models sent for inference: folded into the conv before it, and, where its
statistics are sent, never turned into an invalid model by the channel."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.base import VARIANCE_FLOOR, valid_variance
from strategies.registry import build
from testbed.config import ModelConfig
from testbed.links import link_params, make_link
from testbed.models import build_model
from testbed.models.batchnorm import fold_batchnorm
from testbed.models.symmetric import make_symmetric, strip_symmetric
from testbed.rng import derive_rng
from testbed.symmetry import symmetry_group
from testbed.training import model_template


def trained_like(group: str | None = None, seed: int = 0) -> torch.nn.Module:
    """A DeepCNN with non-trivial BatchNorm statistics and affine parameters (a few training-mode passes)."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch="deepcnn", width=4), (1, 28, 28), 10)
    if group:
        strip_symmetric(make_symmetric(model, group))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 1, 28, 28) * 2 + 0.5)
    return model.eval()


@pytest.mark.parametrize("group", [None, "central_skew", "central"])
def test_folded_model_gives_the_same_outputs_in_eval_mode(group):
    model = trained_like(group)
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        before = model(x)
        folded = fold_batchnorm(model)
        after = folded(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert torch.allclose(before, after, atol=1e-4, rtol=1e-4)
    assert not any("running_var" in name for name in folded.state_dict())


@pytest.mark.parametrize("group", ["central_skew", "central", "mirror_h", "dihedral"])
def test_folding_keeps_every_kernel_symmetric(group):
    folded = fold_batchnorm(trained_like(group))
    basis = torch.from_numpy(symmetry_group(group, 3).basis.astype(np.float32))
    for name, w in folded.state_dict().items():
        if w.dim() == 4 and w.shape[-1] == 3:
            kernels = w.reshape(-1, 9)
            assert torch.allclose(kernels @ basis @ basis.T, kernels, atol=1e-6), name
    # and the DoF codec (which refuses unsymmetric kernels) sends it
    strategy = build({"strategy": "symmetry", "group": group, "mode": "dof"})
    state = folded.state_dict()
    decoded = strategy.decode(strategy.encode(state), state)
    assert all(torch.allclose(decoded[k], v, atol=1e-6) for k, v in state.items())


def test_the_receiver_template_of_a_folded_model_matches_the_sent_model():
    cfg = ModelConfig(arch="deepcnn", width=4, fold_batchnorm=True)
    strategy = build({"strategy": "quantise", "bits": 8})
    template = model_template(strategy, cfg, (1, 28, 28), 10).state_dict()
    sent = fold_batchnorm(trained_like()).state_dict()
    assert {k: v.shape for k, v in template.items()} == {k: v.shape for k, v in sent.items()}
    assert "features.0.bias" in template and not any("running" in k for k in template)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=20))
def test_a_received_variance_is_always_valid(values):
    variance = valid_variance(torch.tensor(values, dtype=torch.float32))
    assert bool(torch.all(variance >= VARIANCE_FLOOR)) and bool(torch.isfinite(variance).all())
    positive = [v for v in values if math.isfinite(v) and v >= VARIANCE_FLOOR]
    kept = [float(x) for x, v in zip(variance, values) if math.isfinite(v) and v >= VARIANCE_FLOOR]
    assert kept == [float(np.float32(v)) for v in positive]  # valid variances pass unchanged


def test_the_analog_link_no_longer_produces_nan_models():
    """BatchNorm statistics sent (not folded) over a noisy analog link: the variances that turn
    negative are clamped at the floor, so every received model gives finite outputs."""
    model = trained_like()
    state = model.state_dict()
    strategy = build({"strategy": "raw"})
    payload = strategy.encode(state)
    link = make_link(link_params("analog", snr_db=0.0, packet_bytes=64, protected_repetition="auto", max_attempts=50))
    x = torch.randn(4, 1, 28, 28)
    negative_seen = 0
    for device in range(10):
        tx = link.transmit(payload, derive_rng(0, "link", 1, device, "down"))
        raw = np.frombuffer(tx.received[[n for n in tx.received.names() if n.endswith("running_var")][0]].data, "<f4")
        negative_seen += int((raw < 0).sum())
        received = strategy.decode(tx.received, state)
        model.load_state_dict(received)
        with torch.no_grad():
            assert torch.isfinite(model(x)).all(), device
    assert negative_seen > 0  # the link did make variances negative: the clamp was needed


def test_a_delta_keeps_its_negative_variance_change():
    # An update or a federated upload carries a change of variance, which may be negative: only the
    # model a receiver builds is made valid, never the delta itself.
    strategy = build({"strategy": "raw"})
    delta = {"bn.weight": torch.ones(3), "bn.running_var": torch.tensor([-0.5, 0.25, -2.0])}
    payload = strategy.encode(delta)
    assert torch.equal(strategy.decode(payload, delta, delta=True)["bn.running_var"], delta["bn.running_var"])
    assert (strategy.decode(payload, delta)["bn.running_var"] >= VARIANCE_FLOOR).all()
