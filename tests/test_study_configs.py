"""The kernel-symmetry study's configs, the study's expansion over training seeds, and its statistics.

No training and no fleet: the configs, the strategies they build, the smoke-test subset, and the
paired tests and Holm correction on numbers whose answer is known.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from strategies.registry import build
from testbed.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DIGITAL = ROOT / "configs" / "study" / "symmetry_digital.yaml"
ANALOG = ROOT / "configs" / "study" / "symmetry_analog.yaml"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("reproduce_symmetry", ROOT / "scripts" / "reproduce_symmetry.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_model_gets_the_reference_recipe_and_folded_batchnorm():
    for path in (DIGITAL, ANALOG):
        config = load_config(path)
        assert config.model.train.epochs == 2.0  # the reference recipe, not a shortened one
        assert config.model.fold_batchnorm
        prunes = [s for s in config.strategy_specs().values() if s["strategy"] == "prune" and s.get("finetune")]
        # fine-tuning comes out of the same 2-epoch budget
        assert prunes and all(build(s).finetune_epochs_within_budget() == 0.5 for s in prunes)


def test_the_equal_redundancy_baseline_sits_beside_every_full_project():
    for path in (DIGITAL, ANALOG):
        specs = load_config(path).strategy_specs()
        full = {(s["group"], s.get("bits")) for s in specs.values() if s["strategy"] == "symmetry" and s["mode"] == "full+project"}
        twice = {(s["group"], s.get("bits")) for s in specs.values()
                 if s["strategy"] == "symmetry" and s["mode"] == "dof" and s.get("repeat") == 2}
        assert full and full == twice


def test_the_expansion_gives_each_label_every_training_seed_on_one_fleet(script):
    config = script.study_config("digital", fleet_seed=1)
    base = load_config(DIGITAL)
    assert config.seed == 1 and len(config.strategies) == len(script.TRAIN_SEEDS) * len(base.strategies)
    for label in config.strategy_specs():
        name, seed = script.split_label(label)
        assert config.train_seed(label) == seed and name in base.strategy_specs()
    assert {**config.strategy_specs()["q4@t2"], "label": "q4"} == base.strategy_specs()["q4"]


def test_distinct_trained_models_stay_few():
    keys = {build(s).training_key() for path in (DIGITAL, ANALOG) for s in load_config(path).strategy_specs().values()}
    assert len(keys) == 5  # plain, three symmetric groups, fine-tuned magnitude pruning: x 3 seeds = 15 trainings


def test_tiny_subset_is_a_valid_smaller_study(script):
    for kind in ("digital", "analog"):
        tiny = script.study_config(kind, tiny=True, train_seeds=(0, 1))
        full = script.study_config(kind)
        assert {e.label for e in tiny.strategies} < {e.label for e in full.strategies}
        assert tiny.rounds == 1 and tiny.model.train.train_subset == 2000


@pytest.mark.parametrize("label, expected", [
    ("q4@t1", {"family": "quantise", "group": "", "bits": 4}),
    ("fp32", {"family": "fp32", "group": "", "bits": None}),
    ("dofx2-central_skew-8@t0", {"family": "dofx2", "group": "central_skew", "bits": 8}),
    ("fullproj-central", {"family": "fullproj", "group": "central", "bits": None}),
    ("prune-mag-ft-posexp-4@t2", {"family": "prune-mag-ft-posexp", "group": "central_skew", "bits": 4}),
])
def test_labels_describe_their_strategy(script, label, expected):
    assert script.describe_label(label) == expected


def test_labels_agree_with_the_specs(script):
    for path in (DIGITAL, ANALOG):
        for label, spec in load_config(path).strategy_specs().items():
            d = script.describe_label(label)
            assert d["bits"] == spec.get("bits"), label
            if spec["strategy"] == "symmetry":
                assert d["group"] == spec["group"], label


def test_holm_matches_its_definition(script):
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1, running maximum
    assert np.allclose(script.holm(p), [0.03, 0.06, 0.06, 0.02])
    assert np.all(script.holm([0.5, 0.9]) <= 1.0)


def test_paired_tests_pair_devices_and_detect_only_a_real_difference(script):
    """Two strategies on the same device-rounds: B = A + a device effect shared by both; a constant
    gap of 4-6 points per seed is significant over the seeds, a gap whose sign changes is not."""
    rng = np.random.default_rng(0)
    rows = []
    for t in range(3):
        for f in range(2):
            for d in range(10):
                shared = rng.normal(0.7, 0.2)
                for label, gap in (("a", 0.05 + (0.01, -0.01, 0.0)[t]), ("b", 0.0), ("c", (0.01, -0.012, 0.003)[t])):
                    rows.append({"kind": "digital", "train_seed": t, "fleet_seed": f, "round": 1, "device_id": d,
                                 "strategy": label, "snr_db": 0.0, "failed": False, "accuracy": shared + gap})
    rows = pd.DataFrame(rows)
    both = script.paired_differences(rows, "digital", "a", "b", (0.0,), "accuracy")
    assert len(both) == 60 and np.allclose(both.groupby("train_seed")["diff"].mean(), [0.06, 0.04, 0.05])
    script.VERDICTS[:] = [("gap", "digital", "a", "b", (0,), "accuracy", 1), ("none", "digital", "c", "b", (0,), "accuracy", 1)]
    tests = script.verdict_tests(rows).set_index("verdict")
    assert tests.loc["gap", "verdict_seeds"] == "A better" and tests.loc["gap", "verdict_devices"] == "A better"
    assert tests.loc["none", "verdict_seeds"] == "not significant"
    assert tests.loc["gap", "p_seeds_holm"] == pytest.approx(2 * tests.loc["gap", "p_seeds"])
    assert tests.loc["gap", "mean_diff"] == pytest.approx(0.05)


def test_dataset_flag_names_a_registered_dataset_or_dataset_files(script, tmp_path):
    assert script.dataset_overrides(None) == []
    assert script.dataset_overrides("mnist-sample") == ["data.dataset=mnist-sample"]
    npz = tmp_path / "mine.npz"
    npz.write_bytes(b"")
    assert script.dataset_overrides(str(npz))[-1] == "data.format=npz"
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    assert script.dataset_overrides(str(tmp_path / "idx"))[-1] == "data.format=idx"
    config = script.study_config("digital", overrides=script.dataset_overrides("mnist-sample"))
    assert config.data.dataset == "mnist-sample"
