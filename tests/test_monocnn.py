"""The MonoCNN codec: learnable tensors + BN + seeds, buffers regenerated at the receiver."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strategies.base import encode_plain, is_batch_counter
from strategies.registry import build
from strategies.monocnn import MonoCNNStrategy
from testbed.models import DeepCNN
from testbed.models.monoconv import SEED_BUFFER, is_fgf_buffer
from testbed.payload import Payload, PayloadError


def _trained_like(strategy: MonoCNNStrategy, width=8, init_seed=0) -> torch.nn.Module:
    """A MonoCNN model with non-trivial BN statistics and weights (a few forward passes in train mode)."""
    torch.manual_seed(init_seed)
    model = strategy.prepare_model(DeepCNN(1, 10, width))
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 1, 28, 28))
    return model.eval()


def _template(options: dict, width=8) -> dict:
    # a receiver's model: same architecture, different init and a different base seed, so
    # nothing can be read from its values by accident
    receiver = MonoCNNStrategy(**{**options, "base_seed": options.get("base_seed", 0) + 1000})
    return _trained_like(receiver, width, init_seed=99).state_dict()


def test_round_trip_exact_at_fp32_and_outputs_identical():
    strategy = MonoCNNStrategy(seeds_per_layer=4, base_seed=7)
    model = _trained_like(strategy)
    state = model.state_dict()
    template = _template({"seeds_per_layer": 4, "base_seed": 7})
    payload = strategy.read(strategy.encode(state).to_bytes(), template)
    decoded = strategy.decode(payload, template)
    assert list(decoded) == list(state)
    for name, tensor in state.items():
        expected = torch.zeros_like(tensor) if is_batch_counter(name) else tensor  # counters are not sent
        assert decoded[name].dtype == tensor.dtype and torch.equal(decoded[name], expected), name
    fresh = _trained_like(MonoCNNStrategy(seeds_per_layer=4, base_seed=1234), init_seed=5)
    fresh.load_state_dict(decoded)
    x = torch.randn(8, 1, 28, 28)
    assert torch.equal(fresh.eval()(x), model(x))


def test_bytes_are_learnable_tensors_bn_and_seeds_exactly():
    strategy = MonoCNNStrategy(seeds_per_layer=4)
    state = _trained_like(strategy).state_dict()
    payload = strategy.encode(state)
    sent = [n for n in state if not is_fgf_buffer(n) and not n.endswith(SEED_BUFFER) and not is_batch_counter(n)]
    assert all(state[n].is_floating_point() for n in sent)
    float_bytes = sum(4 * state[n].numel() for n in sent)
    assert payload.nbytes - payload.framing_nbytes == float_bytes + 8 * 5  # five MonoConv layers' seeds
    seeds = [s for s in payload.segments if s.name.endswith(SEED_BUFFER)]
    assert len(seeds) == 5 and all(s.protected and s.nbytes == 8 for s in seeds)
    assert not any(is_fgf_buffer(s.name) or is_batch_counter(s.name) for s in payload.segments)
    # the generated buffers it saves are most of a plain model's kernel bytes
    generated = sum(4 * t.numel() for n, t in state.items() if is_fgf_buffer(n))
    assert generated > float_bytes


def test_decode_regenerates_buffers_instead_of_copying_template_values():
    strategy = MonoCNNStrategy(seeds_per_layer=2, family="gaussian", fgf_bias=True)
    state = _trained_like(strategy).state_dict()
    template = {n: (torch.full_like(t, 7) if is_fgf_buffer(n) else t) for n, t in _template(
        {"seeds_per_layer": 2, "family": "gaussian", "fgf_bias": True}).items()}
    decoded = strategy.decode(strategy.encode(state), template)
    for name in state:
        if is_fgf_buffer(name):
            assert torch.equal(decoded[name], state[name]), name


def test_quantised_values_leave_seeds_and_buffers_exact():
    strategy = MonoCNNStrategy(seeds_per_layer=4, bits=6, per_channel=True, entropy=True)
    state = _trained_like(strategy).state_dict()
    template = _template({"seeds_per_layer": 4})
    decoded = strategy.decode(strategy.read(strategy.encode(state).to_bytes(), template), template)
    for name, tensor in state.items():
        if is_batch_counter(name):
            assert int(decoded[name]) == 0  # not sent: the receiver fills it
        elif is_fgf_buffer(name) or name.endswith(SEED_BUFFER):
            assert torch.equal(decoded[name], tensor)
        else:
            span = (tensor.max() - tensor.min()).item()
            assert (decoded[name] - tensor).abs().max().item() <= span / 63 / 2 + 1e-5, name


def test_damaged_or_foreign_payloads_are_one_error():
    strategy = MonoCNNStrategy(seeds_per_layer=2)
    state = _trained_like(strategy).state_dict()
    template = _template({"seeds_per_layer": 2})
    payload = strategy.encode(state)
    seed = "features.7.fgf_seed"
    short = Payload([s if s.name != seed else s.replace_data(s.data[:-2]) for s in payload.segments])
    with pytest.raises(PayloadError, match=r"'features\.7\.fgf_seed': holds 6 bytes, expected 8"):
        strategy.decode(short, template)
    foreign = Payload(payload.segments + encode_plain("intruder.weight", torch.zeros(3), strategy.coding))
    with pytest.raises(PayloadError, match="'intruder.weight': surplus"):
        strategy.decode(foreign, template)
    missing = Payload([s for s in payload.segments if s.name != seed])
    with pytest.raises(PayloadError, match=r"'features\.7\.fgf_seed': missing"):
        strategy.decode(missing, template)
    with pytest.raises(PayloadError, match="fingerprint"):  # another MonoCNN configuration's payload
        MonoCNNStrategy(seeds_per_layer=3).read(payload.to_bytes(), template)


def test_options_training_key_and_registry():
    a = build({"strategy": "monocnn", "seeds_per_layer": 4, "bits": 8})
    b = build({"strategy": "monocnn", "seeds_per_layer": 4})
    c = build({"strategy": "monocnn", "seeds_per_layer": 8})
    assert isinstance(a, MonoCNNStrategy)
    assert a.training_key() == b.training_key() != c.training_key()  # bits do not change the model
    assert a.training_key().startswith("monocnn:")
    with pytest.raises(ValueError):
        MonoCNNStrategy(family="cubic")
    with pytest.raises(ValueError, match="no MonoConv2d layers"):
        a.encode(DeepCNN(1, 10, 8).state_dict())
    gaussian = MonoCNNStrategy(seeds_per_layer=4, family="gaussian")
    with pytest.raises(ValueError, match="is not a gaussian MonoConv2d"):
        gaussian.decode(gaussian.encode(_trained_like(a).state_dict()), _template({"seeds_per_layer": 4}))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    family=st.sampled_from(["monomial", "gaussian", "inverse_multiquadric"]),
    seeds=st.integers(1, 10),
    base_seed=st.integers(-(2**40), 2**40),
    bits=st.sampled_from([None, 4, 12]),
    bias=st.booleans(),
)
def test_round_trip_property(family, seeds, base_seed, bits, bias):
    options = dict(family=family, seeds_per_layer=seeds, base_seed=base_seed, fgf_bias=bias)
    strategy = MonoCNNStrategy(bits=bits, **options)
    state = _trained_like(strategy, width=4).state_dict()
    template = _template(options, width=4)
    decoded = strategy.decode(strategy.read(strategy.encode(state).to_bytes(), template), template)
    for name, tensor in state.items():
        exact = bits is None or is_fgf_buffer(name) or not tensor.is_floating_point()
        if is_batch_counter(name):
            assert int(decoded[name]) == 0
        elif exact:
            assert torch.equal(decoded[name], tensor), name
        else:
            assert np.isfinite(decoded[name].numpy()).all()
