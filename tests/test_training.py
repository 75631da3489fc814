"""Training, evaluation and the checkpoint cache, on real data."""

from __future__ import annotations

import math

import pytest
from conftest import mnist_data_dir, needs_mnist
import torch
from torch import nn

from strategies.registry import build
from testbed.config import ModelConfig, TrainConfig
from testbed.data import load_dataset
from testbed.models import DeepCNN, make_monocnn
from testbed.training import central_model, evaluate, grad_clip_norm, train_epochs, train_local


DATA_DIR = mnist_data_dir()


@pytest.fixture(scope="module")
def sample():
    return load_dataset("mnist-sample")


class Constant(nn.Module):
    """Predicts class 3 with logits (0, ..., 0, 1 at 3, 0, ...)."""

    def forward(self, x):
        out = torch.zeros(len(x), 10)
        out[:, 3] = 1.0
        return out


def test_evaluate_accuracy_and_loss_are_exact(sample):
    y = sample.test_y
    accuracy, loss = evaluate(Constant(), sample.test_x, y, batch_size=333)
    assert accuracy == pytest.approx((y == 3).float().mean().item())
    p3 = math.e / (math.e + 9)
    expected = -((y == 3).float() * math.log(p3) + (y != 3).float() * math.log(1 / (math.e + 9))).mean().item()
    assert loss == pytest.approx(expected, rel=1e-6)


@needs_mnist
def test_short_training_on_real_mnist_learns():
    data = load_dataset("mnist", DATA_DIR, download=False)
    torch.manual_seed(0)
    model = DeepCNN(1, 10, 16)
    cfg = TrainConfig(epochs=3, batch_size=64, lr=3e-3)
    loss = train_epochs(model, data.train_x[:6000], data.train_y[:6000], cfg, seed=0)  # 282 steps
    accuracy, test_loss = evaluate(model, data.test_x[:2000], data.test_y[:2000])
    assert accuracy > 0.95, accuracy
    assert loss < 0.5 and test_loss < 0.3


def test_training_is_reproducible_per_seed(sample):
    x, y = sample.train_x[:300], sample.train_y[:300]
    cfg = TrainConfig(epochs=1, batch_size=50)

    def run(seed):
        torch.manual_seed(0)
        model = DeepCNN(1, 10, 4)
        loss = train_epochs(model, x, y, cfg, seed=seed)
        return loss, model.state_dict()

    (la, a), (lb, b), (lc, _) = run(1), run(1), run(2)
    assert la == lb and all(torch.equal(a[k], b[k]) for k in a)
    assert la != lc


def test_train_local_constant_rate_and_fractional_epochs(sample):
    torch.manual_seed(0)
    model = DeepCNN(1, 10, 4)
    cfg = TrainConfig(epochs=0.5, batch_size=32, optimizer="sgd", lr=0.05)
    seen = []
    from testbed import training

    x, y = sample.train_x[:320], sample.train_y[:320]
    loss = training._train(model, x, y, cfg, 0, "constant", lambda step, total, loss: seen.append(total))
    assert len(seen) == 5 and seen[0] == 5  # half of 10 batches
    assert math.isfinite(loss) and math.isfinite(train_local(model, sample.train_x[:320], sample.train_y[:320], cfg, 1))
    with pytest.raises(ValueError, match="cannot train on 1 image"):
        train_local(model, sample.train_x[:1], sample.train_y[:1], cfg, 1)


def test_monocnn_gradients_are_clipped_at_5(sample):
    torch.manual_seed(0)
    model = make_monocnn(DeepCNN(1, 10, 8), 2, 0)
    x, y = sample.train_x[:64], sample.train_y[:64]
    with torch.no_grad():
        model.head.weight.mul_(1000)  # huge logits make large gradients everywhere
    nn.functional.cross_entropy(model(x), y).backward()
    unclipped = torch.norm(torch.stack([p.grad.norm() for p in model.parameters()])).item()
    assert unclipped > 5
    model.zero_grad()
    train_epochs(model, x, y, TrainConfig(epochs=1, batch_size=64, lr=1e-9), seed=0)
    clipped = torch.norm(torch.stack([p.grad.norm() for p in model.parameters()])).item()
    assert clipped <= 5.0 + 1e-4


def test_any_module_can_ask_for_gradient_clipping(sample):
    x, y = sample.train_x[:64], sample.train_y[:64]

    def grad_norm_after_training(model):
        with torch.no_grad():
            model.head.weight.mul_(1000)
        train_epochs(model, x, y, TrainConfig(epochs=1, batch_size=64, lr=1e-9), seed=0)
        return torch.norm(torch.stack([p.grad.norm() for p in model.parameters()])).item()

    torch.manual_seed(0)
    plain = DeepCNN(1, 10, 4)
    assert grad_clip_norm(plain) is None and grad_norm_after_training(plain) > 1.0
    torch.manual_seed(0)
    asking = DeepCNN(1, 10, 4)
    asking.features[3].grad_clip_norm = 2.0  # a layer's bound holds for the whole model
    asking.grad_clip_norm = 1.0  # the smallest bound wins
    assert grad_clip_norm(asking) == 1.0 and grad_norm_after_training(asking) <= 1.0 + 1e-5
    assert grad_clip_norm(make_monocnn(DeepCNN(1, 10, 4), 2, 0)) == 5.0


def test_checkpoint_cache_hits_on_second_call_and_misses_on_new_seed(sample, tmp_path):
    cfg = ModelConfig(width=4, train=TrainConfig(epochs=1, batch_size=64, train_subset=256))
    strategy = build({"strategy": "quantise", "bits": 8})
    first = central_model(strategy, cfg, sample, seed=0, cache_dir=tmp_path, progress=False)
    assert first.checkpoint_info["cached"] is False
    files = sorted(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt"  # no temporary files left behind
    second = central_model(strategy, cfg, sample, seed=0, cache_dir=tmp_path, progress=False)
    assert second.checkpoint_info["cached"] is True
    assert second.checkpoint_info["test_accuracy"] == first.checkpoint_info["test_accuracy"]
    s1, s2 = first.state_dict(), second.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    # a raw strategy trains the same plain model: same key, a hit
    assert central_model(build({"strategy": "raw"}), cfg, sample, 0, tmp_path, False).checkpoint_info["cached"]
    third = central_model(strategy, cfg, sample, seed=1, cache_dir=tmp_path, progress=False)
    assert third.checkpoint_info["cached"] is False and len(list(tmp_path.iterdir())) == 2


def test_monocnn_checkpoint_loads_into_its_architecture(sample, tmp_path):
    cfg = ModelConfig(width=4, train=TrainConfig(epochs=1, batch_size=64, train_subset=256))
    strategy = build({"strategy": "monocnn", "seeds_per_layer": 2})
    trained = central_model(strategy, cfg, sample, seed=0, cache_dir=tmp_path, progress=False)
    cached = central_model(strategy, cfg, sample, seed=0, cache_dir=tmp_path, progress=False)
    assert cached.checkpoint_info["cached"]
    x = sample.test_x[:16]
    assert torch.equal(trained(x), cached(x))
    other = central_model(build({"strategy": "monocnn", "seeds_per_layer": 3}), cfg, sample, 0, tmp_path, False)
    assert not other.checkpoint_info["cached"]


def test_damaged_checkpoint_is_a_miss_not_a_crash(sample, tmp_path):
    cfg = ModelConfig(width=4, train=TrainConfig(epochs=0.25, batch_size=64, train_subset=256))
    strategy = build({"strategy": "raw"})
    central_model(strategy, cfg, sample, 0, tmp_path, False)
    (path,) = tmp_path.iterdir()
    path.write_bytes(path.read_bytes()[:100])
    again = central_model(strategy, cfg, sample, 0, tmp_path, False)
    assert again.checkpoint_info["cached"] is False


def test_symmetric_checkpoint_reloads_as_a_plain_symmetric_model(sample, tmp_path):
    pytest.importorskip("strategies.symmetry")
    cfg = ModelConfig(width=4, train=TrainConfig(epochs=1, batch_size=64, train_subset=256))
    strategy = build({"strategy": "symmetry", "group": "central_skew"})
    trained = central_model(strategy, cfg, sample, 0, tmp_path, False)
    cached = central_model(strategy, cfg, sample, 0, tmp_path, False)
    assert cached.checkpoint_info["cached"]
    assert list(trained.state_dict()) == list(cached.state_dict())
    w = cached.features[4].weight
    assert torch.equal(w, -torch.flip(w, dims=(2, 3)))
    x = sample.test_x[:16]
    assert torch.equal(trained(x), cached(x))
