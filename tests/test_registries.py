"""The dataset and model registries: built-ins, registrations, and a real installed package's entry points."""

from __future__ import annotations

import textwrap

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from plugins import install_plugin

from strategies.registry import build
from testbed.config import ConfigError, DataConfig, ModelConfig, load_config
from testbed.data import DATASETS, DatasetError, data_info, dataset_info, load_data, load_dataset, register_dataset
from testbed.models import MODELS, ModelError, MonoConv2d, build_model, register_model
from testbed.models.symmetric import make_symmetric
from testbed.training import model_template

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = """
    import numpy as np
    import torch
    from torch import nn

    from testbed.data import dataset_from_arrays


    def load_stripes(source):
        # 8x8 grey images of horizontal (class 0) or vertical (class 1) stripes
        rng = np.random.default_rng(0)
        base = np.zeros((2, 8, 8), np.uint8)
        base[0, ::2, :] = 255
        base[1, :, ::2] = 255
        y = rng.integers(0, 2, 64)
        x = base[y]
        return dataset_from_arrays("stripes", "stripes, 8x8", x[:48], y[:48], x[48:], y[48:])


    class TinyNet(nn.Module):
        def __init__(self, in_channels, num_classes, width=3):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
            self.conv2 = nn.Conv2d(width, width, 3, padding=1)
            self.head = nn.Linear(width, num_classes)

        def forward(self, x):
            return self.head(self.conv2(self.conv(x)).mean((2, 3)))
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A package ``stripes_plugin`` with a dataset and a model, installed on sys.path for this test."""
    install_plugin(
        tmp_path,
        "stripes-plugin",
        {"stripes_plugin.py": textwrap.dedent(PLUGIN)},
        {"testbed.datasets": {"stripes": "stripes_plugin:load_stripes"}, "testbed.models": {"tinynet": "stripes_plugin:TinyNet"}},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.fixture
def registrations(monkeypatch):
    """Registrations made by a test are forgotten after it."""
    for registry in (DATASETS, MODELS):
        monkeypatch.setattr(registry, "_registered", dict(registry._registered))


def test_builtins_are_registered():
    assert {"mnist", "mnist-sample", "cifar10", "files"} <= set(DATASETS.names())
    assert {"deepcnn", "resnet18"} <= set(MODELS.names())
    assert dataset_info("cifar10").input_shape == (3, 32, 32)  # declared: no files needed


def test_a_dataset_and_a_model_from_an_installed_package(plugin, tmp_path):
    assert "stripes" in DATASETS.names() and "tinynet" in MODELS.names()
    config_file = tmp_path / "exp.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "data": {"dataset": "stripes", "test_per_device": 4},
                "model": {"arch": "tinynet", "width": 5},
                "strategies": [{"label": "mono", "strategy": "monocnn", "seeds_per_layer": 2}],
            }
        )
    )
    config = load_config(config_file)
    data = load_data(config.data)
    assert data.input_shape == (1, 8, 8) and data.num_classes == 2 and len(data.train_y) == 48
    assert load_dataset("stripes") is data  # one cache, whichever entry point is used
    assert data_info(config.data).input_shape == (1, 8, 8)  # not declared: from loading it
    model = build_model(config.model, data.input_shape, data.num_classes)
    assert type(model).__name__ == "TinyNet" and model.conv.out_channels == 5
    assert model(data.test_x).shape == (16, 2)
    # the strategies' trained forms are made from any registered model
    strategy = build(config.strategy_specs()["mono"])
    mono = model_template(strategy, config.model, data.input_shape, data.num_classes)
    assert isinstance(mono.conv2, MonoConv2d) and not isinstance(mono.conv, MonoConv2d)  # the stem stays
    sym = make_symmetric(build_model(config.model, (1, 8, 8), 2), "central_skew")
    w = sym.conv2.weight
    assert torch.equal(w, -torch.flip(w, dims=(2, 3)))


def test_a_package_is_found_by_the_command_line(plugin, tmp_path):
    config_file = tmp_path / "exp.yaml"
    config_file.write_text(
        yaml.safe_dump({"data": {"dataset": "stripes"}, "model": {"arch": "tinynet"}, "strategies": [{"label": "fp32", "strategy": "raw"}]})
    )
    run = subprocess.run(
        [sys.executable, "-m", "testbed", "inspect", str(config_file), "--json"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(plugin)},
    )
    assert run.returncode == 0, run.stderr
    (report,) = json.loads(run.stdout)
    assert report["label"] == "fp32" and report["total_bytes"] > 0


def test_registered_in_code_with_the_decorators(registrations):
    @register_dataset("two-dots")
    def load_two_dots(source):
        from testbed.data import dataset_from_arrays

        x = torch.zeros(20, 4, 4, dtype=torch.uint8)
        x[10:, 1, 1] = 200
        y = torch.arange(20) // 10
        return dataset_from_arrays("two-dots", "two dots", x.numpy(), y.numpy(), x.numpy(), y.numpy())

    @register_model("linear")
    def linear(in_channels, num_classes, width=None):
        return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(in_channels, num_classes))

    data = load_data(DataConfig(dataset="two-dots"))
    model = build_model(ModelConfig(arch="linear"), data.input_shape, data.num_classes)
    assert model(data.train_x).shape == (20, 2)
    assert data.train_x[:10].std() == 0 and abs(data.train_x.mean()) < 1e-6  # standardised from the split


def test_unknown_names_are_one_line_at_config_load(tmp_path):
    path = tmp_path / "bad.yaml"
    for section, message in (
        ({"data": {"dataset": "imagenet"}}, "data.dataset: Value error, unknown dataset 'imagenet'; registered:"),
        ({"model": {"arch": "vgg"}}, "model.arch: Value error, unknown model arch 'vgg'; registered:"),
    ):
        path.write_text(yaml.safe_dump({**section, "strategies": [{"label": "a", "strategy": "raw"}]}))
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert str(err.value).startswith(f"{path}: {message}") and "\n" not in str(err.value)


def test_bad_factories_and_packages_are_one_line(registrations, tmp_path, monkeypatch):
    @register_model("no-width")
    def no_width(in_channels, num_classes):
        return torch.nn.Identity()

    @register_model("not-a-module")
    def not_a_module(in_channels, num_classes, width=1):
        return "model"

    with pytest.raises(ModelError, match=r"model arch 'no-width': .* cannot be called as factory\(in_channels, num_classes, width\)"):
        build_model(ModelConfig(arch="no-width", width=4), (1, 8, 8), 2)
    assert isinstance(build_model(ModelConfig(arch="no-width"), (1, 8, 8), 2), torch.nn.Identity)
    with pytest.raises(ModelError, match="returned a str, not an nn.Module"):
        build_model(ModelConfig(arch="not-a-module"), (1, 8, 8), 2)

    install_plugin(tmp_path, "broken-plugin", {"broken_plugin.py": "import no_such_module\n"},
                   {"testbed.datasets": {"broken": "broken_plugin:load"}})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(DatasetError) as err:
        load_dataset("broken")
    assert "dataset 'broken': entry point broken_plugin:load cannot be loaded (No module named 'no_such_module')" == str(err.value)

    @register_dataset("not-a-dataset")
    def not_a_dataset(source):
        return [1, 2]

    with pytest.raises(DatasetError, match="dataset 'not-a-dataset': its loader returned a list, not a Dataset"):
        load_dataset("not-a-dataset")
