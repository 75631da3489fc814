"""The split scenario: split points, its config, ideal-link accuracy at 8 bits, and a run on Flower/Ray."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from conftest import TINY, run_tiny, tiny_config
from testbed.config import ConfigError, load_config
from testbed.models import DeepCNN, ModelError, ResNet18
from testbed.models.split import INPUT, split_model, split_points

SPLIT = ["scenario={name: split, split: block2, batch: 16, features: {codec: rans-features, bits: 8}}"]


@pytest.mark.parametrize("model, shape, names", [
    (DeepCNN(1, 10, 4), (1, 28, 28), [INPUT, "block1", "block2", "block3", "block4", "block5", "block6", "pool"]),
    (ResNet18(3, 10, 8), (3, 32, 32), [INPUT, "stem", "layer1", "layer2", "layer3", "layer4", "pool"]),
    (nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 2)), (3, 2, 2), [INPUT, "0", "1", "2"]),
])
def test_every_split_point_recomposes_the_model_and_gives_its_feature_shape(model, shape, names):
    model.eval()
    points = split_points(model, shape)
    assert [p.name for p in points] == names
    x = torch.randn(3, *shape)
    with torch.no_grad():
        reference = model(x)
        for point in points:
            head, tail = split_model(model, point.name)
            features = head(x)
            assert tuple(features.shape[1:]) == point.shape
            assert torch.allclose(tail(features), reference, atol=1e-5), point.name


def test_a_model_names_its_own_stages_and_an_unknown_point_is_one_line():
    class Own(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 3), nn.Linear(3, 2)

        def split_stages(self):
            return [("a", self.a), ("b", self.b)]

    assert [p.name for p in split_points(Own(), (4,))] == [INPUT, "a"]
    with pytest.raises(ModelError, match=r"split point 'layer9' is not one of DeepCNN's: input, block1"):
        split_model(DeepCNN(1, 10, 4), "layer9")
    with pytest.raises(ModelError, match="split_stages"):
        split_points(nn.Linear(3, 3), (3,))


@pytest.mark.parametrize("override, expected", [
    ("scenario={name: split}", "scenario.split: Field required"),
    ("scenario={name: split, split: block2, features: {codec: rans-features, bits: 1}}",
     "scenario.features: rans-features.bits"),
    ("scenario={name: split, split: block2, head: carried}", "scenario.head"),
])
def test_a_bad_split_config_is_one_line_naming_the_key(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(TINY, [override])
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_per_label_codecs_must_cover_the_labels():
    from testbed.scenarios import build_scenario

    config = tiny_config("scenario={name: split, split: block2, features: {fp32: {codec: float}}}")
    with pytest.raises(ConfigError, match=r"scenario.features: no codec for label\(s\) q8, skew-dof8"):
        build_scenario(config)


def test_ideal_links_at_8_bits_give_the_unsplit_accuracy_within_half_a_point():
    from strategies.registry import build
    from testbed.data import load_data
    from testbed.features import build_codec
    from testbed.training import central_model

    config = tiny_config()
    data = load_data(config.data, ".")
    model = central_model(build({"strategy": "raw"}), config.model, data, config.seed, progress=False)
    x, y = data.test_x[:640], data.test_y[:640]
    with torch.no_grad():
        unsplit = (model(x).argmax(1) == y).float().mean().item()
        for point in split_points(model, data.input_shape)[1:]:
            head, tail = split_model(model, point.name)
            for spec in ({"codec": "rans-features", "bits": 8}, {"codec": "quantised", "bits": 8}):
                codec = build_codec(spec)
                correct = 0
                for start in range(0, len(x), 32):
                    features = head(x[start : start + 32])
                    received = codec.decode(codec.read(codec.encode(features).to_bytes(), features.shape), features.shape)
                    correct += int((tail(received).argmax(1) == y[start : start + 32]).sum())
                assert abs(correct / len(x) - unsplit) <= 0.005, (point.name, spec)


TIMING = ["encode_ms", "decode_ms"]  # wall clock: the one thing allowed to differ between runs


RUN = [*SPLIT, "scenario.head=deliver", "rounds=2",
       "strategies=[{label: q8, strategy: quantise, bits: 8}, {label: fp32, strategy: raw}]"]


@pytest.fixture(scope="module")
def split_runs(tmp_path_factory):
    """The same split run with one and with three devices per node."""
    base = tmp_path_factory.mktemp("split")
    one = run_tiny(base / "one", *RUN, "engine.devices_per_node=1")  # the session's Ray: a worker per CPU
    three = run_tiny(base / "three", *RUN, "engine.devices_per_node=3", "engine.num_workers=1")
    return one, three


@pytest.mark.slow
def test_the_split_run_is_the_same_whatever_the_cohorts_and_scores_every_device(split_runs):
    from testbed.scenarios import build_scenario

    overrides = RUN
    one, three = split_runs
    table = build_scenario(tiny_config(*overrides)).measurements_table()
    a, b = table.read(one), table.read(three)
    pd.testing.assert_frame_equal(a.drop(columns=TIMING), b.drop(columns=TIMING))
    for name in ("transfers.csv", "rounds.csv"):
        assert (one / name).read_text() == (three / name).read_text(), name
    transfers = pd.read_csv(one / "transfers.csv")
    # the head goes down once per device (round 1 on these always-available devices), features up every round
    heads = transfers[transfers["transfer"] == "head"]
    assert set(heads["round"]) == {1} and len(heads) == 2 * 8
    assert len(transfers[transfers["transfer"] == "up"]) == 2 * 2 * 8
    ideal = a[a["link_model"] == "ideal"]
    assert (ideal["failure"] == "").all() and ideal["accuracy"].notna().all()
    assert (ideal["n_test"] == 16).all() and (ideal["agreement"] >= 0.9).all()
    # on-device compute: the head's forward pass and the feature encoding every round, the head's decode in round 1
    assert (ideal["compute_s"] > 0).all()
    per_label = ideal.groupby(["label", "round"])["compute_s"].agg(["min", "max"])
    assert (per_label["min"] == per_label["max"]).all()  # the same work on every ideal device: shapes only
    rounds = ideal.groupby(["label", "round"])["compute_s"].first().unstack()
    assert (rounds[1] > rounds[2]).all()  # round 1 also decoded the head it received


@pytest.mark.slow
def test_the_report_of_a_split_run_draws_accuracy_against_feature_bytes_per_label(split_runs, tmp_path):
    import matplotlib
    from matplotlib.figure import Figure

    from browser import open_report
    from testbed.report import load_run
    from testbed.report.figures import STYLE, View, series_of
    from testbed.report.tables import Report
    from testbed.scenarios.split import draw_split_bytes

    one, _ = split_runs
    result = open_report(one, tmp_path / "split.html", "split-bytes")
    assert "accuracy against feature bytes" in result.text
    # the points are the labels' means over the scored device-rounds
    runs = [load_run(one)]
    fig = Figure()
    with matplotlib.rc_context(STYLE):
        draw_split_bytes(View(Report.of(runs).only(runs), series_of(runs)), fig)
    left, right = fig.axes
    rows = runs[0].measurements
    for label, line, agreement in zip(runs[0].strategies, left.lines, right.lines):
        scored = rows[(rows["label"] == label) & rows["accuracy"].notna()]
        assert line.get_xdata()[0] == pytest.approx(scored["bytes_per_sample"].mean())
        assert line.get_ydata()[0] == pytest.approx(scored["accuracy"].mean())
        assert agreement.get_xdata()[0] == pytest.approx(scored["bits_per_element"].mean())
    unsplit = left.lines[-1]  # the dashed line: the unsplit model on the same images
    means = [rows[(rows["label"] == k) & rows["accuracy"].notna()]["accuracy_unsplit"].mean() for k in ("q8", "fp32")]
    assert list(unsplit.get_ydata()) == pytest.approx([np.mean(means)] * 2)
    assert 0 < agreement.get_xdata()[0] < 8  # 8-bit codes through rANS: fewer bits than the codes
