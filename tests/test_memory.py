"""A training that cannot fit in memory is refused in one line before it starts."""

from __future__ import annotations

import pytest
import torch

from testbed import memory
from testbed.errors import ConfigError
from testbed.models.deepcnn import DeepCNN


def test_the_estimate_counts_parameters_optimiser_state_and_activations():
    model = DeepCNN(in_channels=1, num_classes=10, width=8)
    params = sum(p.numel() for p in model.parameters()) * 4
    one = memory.training_bytes(model, (1, 28, 28), 1, "adam")
    many = memory.training_bytes(model, (1, 28, 28), 101, "adam")
    assert one > 4 * params
    assert many - one == 100 * (one - 4 * params)  # activations scale with the batch
    assert memory.training_bytes(model, (1, 28, 28), 1, "sgd") == one - params


def test_a_model_too_large_for_the_memory_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 10 * 2**20)  # 10 MiB left
    model = DeepCNN(in_channels=1, num_classes=10, width=64)
    with pytest.raises(ConfigError) as err:
        memory.check_fits(model, (1, 28, 28), 512, "adam", "model deepcnn")
    message = str(err.value)
    assert message.startswith("model deepcnn: training needs about") and "lower model.width" in message
    assert "\n" not in message
    memory.check_fits(torch.nn.Linear(2, 2), (2,), 1, "adam", "tiny")  # a small one passes


def test_this_machine_reports_its_available_memory():
    have = memory.available_bytes()
    assert have is None or have > 2**20
