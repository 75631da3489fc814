"""Model architectures, MonoCNN layers and symmetric training."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from testbed.config import ModelConfig
from testbed.models import DeepCNN, ModelError, MonoConv2d, ResNet18, build_model, make_monocnn, parameter_counts
from testbed.models.monoconv import FAMILIES, generate_fgf_buffers, is_fgf_buffer
from testbed.rng import derive_seed

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_deepcnn_size_and_conv_dominance(shape):
    model = build_model(ModelConfig(), shape, 10)
    assert isinstance(model, DeepCNN)
    counts = parameter_counts(model)
    assert 250_000 <= counts["total"] <= 300_000
    assert counts["conv3x3"] / counts["total"] >= 0.9
    assert model(torch.randn(2, *shape)).shape == (2, 10)


def test_width_scales_deepcnn():
    small = parameter_counts(build_model(ModelConfig(width=8), (1, 28, 28), 10))["total"]
    assert small < 25_000


def test_resnet18_matches_the_published_size():
    model = build_model(ModelConfig(arch="resnet18"), (3, 32, 32), 10)
    assert isinstance(model, ResNet18)
    assert abs(parameter_counts(model)["total"] - 11_173_962) == 0
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_unknown_arch():
    # a config with it does not load (tests/test_registries.py); a ModelConfig built without checks fails here
    with pytest.raises(ModelError, match="unknown model arch 'vgg'; registered: .*deepcnn"):
        build_model(ModelConfig.model_construct(arch="vgg", width=None), (1, 28, 28), 10)


# ---- MonoCNN ---------------------------------------------------------------------


def _mono(base_seed=0, seeds=4, family="monomial", **kw):
    torch.manual_seed(0)
    return make_monocnn(DeepCNN(1, 10, 8), seeds, base_seed, family, **kw)


def test_make_monocnn_replaces_stride1_3x3_convs_but_the_stem():
    model = _mono()
    monos = [n for n, m in model.named_modules() if isinstance(m, MonoConv2d)]
    plain = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert plain == ["features.0"] and len(monos) == 5
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    # learnable: seed filters [s, C_in, 3, 3]; nothing generated is a parameter
    names = {n for n, _ in model.named_parameters()}
    assert "features.4.seed_filters" in names and not any("fgf" in n for n in names)
    assert tuple(model.get_submodule("features.4").seed_filters.shape) == (4, 8, 3, 3)


def test_make_monocnn_with_explicit_layers_and_errors():
    torch.manual_seed(0)
    model = make_monocnn(DeepCNN(1, 10, 8), 2, 0, layers=["features.0", "features.11"])
    assert isinstance(model.features[0], MonoConv2d) and isinstance(model.features[11], MonoConv2d)
    assert sum(isinstance(m, MonoConv2d) for m in model.modules()) == 2
    with pytest.raises(ModelError, match=r"monocnn layers: not conv layers of the model: head \(its convs: features.0, "):
        make_monocnn(DeepCNN(1, 10, 8), 2, 0, layers=["head"])
    with pytest.raises(ModelError, match="unknown FGF family"):
        make_monocnn(DeepCNN(1, 10, 8), 2, 0, family="cubic")


def test_bad_monocnn_layers_are_one_line_from_the_command_line(tmp_path):
    spec = "strategies=[{label: mono, strategy: monocnn, layers: [features.0, head]}]"
    run = subprocess.run(
        [sys.executable, "-m", "testbed", "run", "configs/tiny.yaml", "--out", str(tmp_path / "run"), "--quiet", "--set", spec],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert run.returncode == 2
    assert run.stderr.startswith("testbed run: error: monocnn layers: not conv layers of the model: head (its convs:")
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr


@pytest.mark.parametrize("family", FAMILIES)
def test_fgf_buffers_regenerate_bit_identically_from_seeds(family):
    model = _mono(base_seed=11, family=family, fgf_bias=True)
    layers = [m for m in model.modules() if isinstance(m, MonoConv2d)]
    seeds = [int(m.fgf_seed) for m in layers]
    assert seeds == [derive_seed(11, "monocnn", i) for i in range(len(layers))]
    assert len(set(seeds)) == len(seeds)
    for layer in layers:
        again = generate_fgf_buffers(
            int(layer.fgf_seed), family, layer.out_channels, layer.in_channels, layer.num_terms, True
        )
        for name, tensor in again.items():
            assert torch.equal(getattr(layer, name), tensor)
        # damage the buffers, then regenerate from the seed
        for name in again:
            getattr(layer, name).fill_(0.123)
        layer.regenerate()
        for name, tensor in again.items():
            assert torch.equal(getattr(layer, name), tensor)
    state = model.state_dict()
    generated = [n for n in state if is_fgf_buffer(n)]
    assert generated and all(n.rsplit(".", 1)[-1] in ("fgf_exponents", "fgf_eps", "fgf_bias") for n in generated)
    other = _mono(base_seed=12, family=family, fgf_bias=True).state_dict()
    assert not torch.equal(state[generated[0]], other[generated[0]])


def test_monomial_buffer_shapes_and_ranges():
    layer = MonoConv2d(6, 10, 3, seeds=3, fgf_seed=5, num_terms=5, fgf_bias=True, padding=1)
    assert tuple(layer.fgf_exponents.shape) == (5, 10, 6, 1, 1)
    assert 0 <= layer.fgf_exponents.min() and layer.fgf_exponents.max() < 10
    assert 0 <= layer.fgf_bias.min() and layer.fgf_bias.max() < 1
    eps = MonoConv2d(6, 10, 3, seeds=3, fgf_seed=5, family="gaussian").fgf_eps
    assert tuple(eps.shape) == (10, 6, 1, 1) and 1 <= eps.min() and eps.max() < 7


def test_generated_filters_are_standardised_and_tiled_from_seeds():
    layer = MonoConv2d(4, 9, 3, seeds=3, fgf_seed=1, padding=1)
    w = layer.generated_weight().detach().flatten(1)
    assert torch.allclose(w.mean(1), torch.zeros(9), atol=1e-5)
    assert torch.allclose(w.std(1), torch.ones(9), atol=0.01)  # std + 1e-5 in the denominator
    before = layer.generated_weight().detach()
    with torch.no_grad():
        layer.seed_filters[1].mul_(-2.0)
    changed = (layer.generated_weight().detach() != before).flatten(1).any(1)
    assert changed.tolist() == [o % 3 == 1 for o in range(9)]  # output o uses seed o mod s


def test_monoconv_gradients_are_finite_at_zero_seeds():
    layer = MonoConv2d(2, 4, 3, seeds=2, fgf_seed=3, padding=1)
    with torch.no_grad():
        layer.seed_filters[0, 0, 1, 1] = 0.0
    layer(torch.randn(2, 2, 5, 5)).sum().backward()
    assert torch.isfinite(layer.seed_filters.grad).all()


# ---- symmetric training (testbed.models.symmetric, written beside this) --------------

has_symmetric = importlib.util.find_spec("testbed.models.symmetric") is not None


@pytest.mark.skipif(not has_symmetric, reason="testbed.models.symmetric not present")
def test_symmetric_deepcnn_stays_exactly_central_skew_through_training():
    from testbed.config import TrainConfig
    from testbed.data import load_dataset
    from testbed.models.symmetric import make_symmetric, strip_symmetric
    from testbed.training import train_epochs

    data = load_dataset("mnist-sample")
    torch.manual_seed(0)
    model = make_symmetric(DeepCNN(1, 10, 8), "central_skew")
    train_epochs(model, data.train_x[:512], data.train_y[:512], TrainConfig(epochs=1, batch_size=64, lr=3e-3), seed=0)
    strip_symmetric(model)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 6
    for conv in convs:
        w = conv.weight.detach()
        assert torch.equal(w, -torch.flip(w, dims=(2, 3)))  # W = -rot180(W), bit for bit
        assert torch.count_nonzero(w[:, :, 1, 1]) == 0
        assert w.abs().sum() > 0
