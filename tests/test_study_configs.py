"""The kernel-symmetry study's configs load and expand to the strategy set the study needs.

No training and no fleet: only the configs, the strategies they build and the smoke-test subset.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from strategies.registry import build
from testbed.config import load_config
from testbed.symmetry import GROUPS

ROOT = Path(__file__).resolve().parents[1]
DIGITAL = ROOT / "configs" / "study" / "symmetry_digital.yaml"
ANALOG = ROOT / "configs" / "study" / "symmetry_analog.yaml"
SNRS = [0, 2.5, 5, 7.5, 10, 15, 20]
BITS = [2, 4, 6, 8]


def _script():
    spec = importlib.util.spec_from_file_location("reproduce_symmetry", ROOT / "scripts" / "reproduce_symmetry.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _specs(path: Path) -> dict[str, dict]:
    return load_config(path).strategy_specs()


def test_digital_config_has_every_group_mode_and_baseline_at_every_bit_width():
    config = load_config(DIGITAL)
    specs = config.strategy_specs()
    sym = [s for s in specs.values() if s["strategy"] == "symmetry"]
    for bits in BITS:
        # every symmetry group in dof mode
        assert {s["group"] for s in sym if s["mode"] == "dof" and s["bits"] == bits} == set(GROUPS)
        # full+project and posthoc at least for central and central_skew
        for mode in ("full+project", "posthoc"):
            assert {s["group"] for s in sym if s["mode"] == mode and s["bits"] == bits} >= {"central", "central_skew"}
        # pruning matched to a group, magnitude and random, with and without fine-tuning
        prunes = {(s["method"], s["finetune"]) for s in specs.values()
                  if s["strategy"] == "prune" and s.get("bits") == bits and s.get("match") == "central_skew"}
        assert prunes == {("magnitude", False), ("magnitude", True), ("random", False), ("random", True)}
        assert any(s["strategy"] == "quantise" and s["bits"] == bits for s in specs.values())
        assert any(s["strategy"] == "monocnn" and s["bits"] == bits for s in specs.values())
    assert any(s["strategy"] == "raw" for s in specs.values())
    assert len(specs) == 1 + 4 + 40 + 16 + 16 + 4 + 4
    # every device's link is BPSK over AWGN at one of the study's SNRs, each SNR equally often
    link = config.fleet.link
    assert link.model == "awgn" and link.modulation == "bpsk" and list(link.snr_db) == SNRS
    assert config.fleet.devices % len(SNRS) == 0
    assert config.data.dataset == "mnist" and config.model.train.train_subset is None


def test_analog_config_sends_float32_only_and_matches_the_digital_fleet():
    digital, analog = load_config(DIGITAL), load_config(ANALOG)
    specs = analog.strategy_specs()
    assert all(s.get("bits") is None and s.get("dtype", "float32") == "float32" for s in specs.values())
    groups = {s["group"] for s in specs.values() if s["strategy"] == "symmetry" and s["mode"] == "dof"}
    assert groups == set(GROUPS)
    # the digital study's SNRs (matching), extended upwards; each SNR on the same number of devices
    analog_snrs = list(analog.fleet.link.snr_db)
    assert analog.fleet.link.model == "analog" and analog_snrs[: len(SNRS)] == SNRS
    assert analog_snrs == sorted(analog_snrs) and analog_snrs[-1] > SNRS[-1]
    assert analog.fleet.devices / len(analog_snrs) == digital.fleet.devices / len(SNRS)
    assert analog.rounds == digital.rounds
    # same model, data and seed: the central models are the same cached checkpoints
    assert analog.model == digital.model and analog.seed == digital.seed and analog.data == digital.data


def test_distinct_trained_models_stay_few():
    """Each training key trains once; the study must not need more than a handful of models."""
    keys = {build(s).training_key() for path in (DIGITAL, ANALOG) for s in _specs(path).values()}
    symmetric = {k for k in keys if k.startswith("symmetric:")}
    assert symmetric == {f"symmetric:{g}" for g in GROUPS}
    assert "plain" in keys
    assert len(keys) == 1 + len(GROUPS) + 1 + 2  # plain, ten groups, MonoCNN, two fine-tuned prunes


def test_tiny_subset_is_a_valid_smaller_study():
    script = _script()
    for kind in ("digital", "analog"):
        tiny = script.study_config(kind, tiny=True)
        full = script.study_config(kind)
        labels = {e.label for e in tiny.strategies}
        assert labels < {e.label for e in full.strategies}
        assert tiny.rounds == 1 and tiny.fleet.devices <= 10 and tiny.model.train.train_subset == 2000
        assert any(e.strategy == "prune" for e in tiny.strategies)


@pytest.mark.parametrize("label, expected", [
    ("q4", {"family": "quantise", "group": "", "bits": 4}),
    ("fp32", {"family": "fp32", "group": "", "bits": None}),
    ("dof-central_skew-8", {"family": "dof", "group": "central_skew", "bits": 8}),
    ("fullproj-central", {"family": "fullproj", "group": "central", "bits": None}),
    ("prune-mag-ft-posexp-2", {"family": "prune-mag-ft-posexp", "group": "central_skew", "bits": 2}),
    ("monocnn-6", {"family": "monocnn", "group": "", "bits": 6}),
])
def test_labels_describe_their_strategy(label, expected):
    assert _script().describe_label(label) == expected


def test_labels_agree_with_the_specs():
    script = _script()
    for path in (DIGITAL, ANALOG):
        for label, spec in _specs(path).items():
            d = script.describe_label(label)
            assert d["bits"] == spec.get("bits"), label
            if spec["strategy"] == "symmetry":
                assert d["group"] == spec["group"], label
