"""Sweeps: the grid of point configs, and a real 2-point sweep that resumes only what is missing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import shared_ray_address
from testbed.cli import main as cli_main
from testbed.config import ConfigError, dump_config, load_config
from testbed.sweep import point_name, point_state, run_sweep, short_keys, sweep_points

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


def _config(*overrides: str):
    return load_config(TINY, list(overrides))


def test_grid_is_the_cartesian_product_with_stable_names():
    config = _config("sweep={fleet.link.snr_db: [0, 20], strategies.1.bits: [4, 8]}")
    points = sweep_points(config)
    assert [p.values for p in points] == [
        {"fleet.link.snr_db": 0, "strategies.1.bits": 4},
        {"fleet.link.snr_db": 0, "strategies.1.bits": 8},
        {"fleet.link.snr_db": 20, "strategies.1.bits": 4},
        {"fleet.link.snr_db": 20, "strategies.1.bits": 8},
    ]
    assert points[0].name == "fleet.link.snr_db=0__strategies.1.bits=4"
    assert points[3].label == "snr_db=20 bits=8"
    assert [p.name for p in sweep_points(config)] == [p.name for p in points]  # stable
    for point in points:
        assert point.config.sweep is None
        assert point.config.fleet.link.snr_db == point.values["fleet.link.snr_db"]
        assert point.config.strategies[1].model_dump()["bits"] == point.values["strategies.1.bits"]
        assert point.config.name == config.name and point.config.rounds == config.rounds


def test_point_names_are_safe_and_distinct():
    a = point_name({"fleet.link.snr_db": {"uniform": [0, 10]}})
    b = point_name({"fleet.link.snr_db": {"uniform": [0, 20]}})
    assert a != b and "/" not in a and " " not in a and '"' not in a
    assert point_name({"x": "a/b"}) != point_name({"x": "a b"})
    assert short_keys(["a.b.bits", "c.bits", "fleet.link.snr_db"]) == {
        "a.b.bits": "b.bits", "c.bits": "c.bits", "fleet.link.snr_db": "snr_db"
    }


def test_bad_sweeps_are_one_line_errors():
    with pytest.raises(ConfigError, match="no sweep"):
        sweep_points(_config())
    with pytest.raises(ConfigError, match="strategies.9.bits"):
        sweep_points(_config("sweep={strategies.9.bits: [4]}"))
    with pytest.raises(ConfigError, match="rounds"):
        sweep_points(_config("sweep={rounds: [0]}"))  # a value the schema refuses, caught before running
    with pytest.raises(ConfigError, match="non-empty list"):
        sweep_points(_config("sweep={rounds: []}"))


@pytest.mark.slow
def test_sweep_runs_every_point_then_only_the_missing_ones(tmp_path, capsys):
    config = _config(
        "fleet.devices=3",
        "rounds=1",
        "strategies=[{label: fp32, strategy: raw}, {label: q8, strategy: quantise, bits: 8}]",
        "sweep={fleet.link.snr_db: [2, 20]}",
    )
    out = tmp_path / "sweep"
    report = run_sweep(config, out, progress=True)
    first = capsys.readouterr().out
    assert first.count(": running") == 2
    points = sweep_points(config)
    dirs = [out / "points" / p.name for p in points]
    for point, folder in zip(points, dirs):
        assert point_state(folder, point.config) == "done"
    table = pd.read_csv(out / "sweep.csv")
    assert len(table) == 4  # 2 points x 2 strategies
    assert sorted(table["fleet.link.snr_db"].unique().tolist()) == [2, 20]
    assert set(table["strategy"]) == {"fp32", "q8"}
    html = report.read_text()
    assert "snr_db=2 / q8" in html and "snr_db=20 / fp32" in html

    # Interrupt: the second point is lost; a half-written first point would be resumed.
    kept = dirs[0] / "metrics.csv"
    kept_mtime = kept.stat().st_mtime_ns
    shutil.rmtree(dirs[1])
    assert point_state(dirs[1], points[1].config) == "new"
    run_sweep(config, out, progress=True, ray_address=shared_ray_address())  # the first call started its own Ray
    second = capsys.readouterr().out
    assert "snr_db=2: already done, skipped" in second
    assert "snr_db=20: running" in second and second.count(": running") == 1
    assert kept.stat().st_mtime_ns == kept_mtime  # the done point was not touched
    assert point_state(dirs[1], points[1].config) == "done"
    assert len(pd.read_csv(out / "sweep.csv")) == 4

    # A point with an incomplete summary is resumed; one run with other settings is refused.
    summary = json.loads((dirs[0] / "summary.json").read_text())
    (dirs[0] / "summary.json").write_text(json.dumps({**summary, "rounds_done": 0}))
    assert point_state(dirs[0], points[0].config) == "partial"
    (dirs[0] / "config.yaml").write_text(dump_config(points[1].config))
    with pytest.raises(ConfigError, match="another config"):
        point_state(dirs[0], points[0].config)

    # The command line lists the points and their state without running anything.
    config_file = tmp_path / "sweep.yaml"
    config_file.write_text(dump_config(config))
    assert cli_main(["sweep", str(config_file), "--out", str(out), "--dry-run"]) == 2  # the edited point
    (dirs[0] / "config.yaml").write_text(dump_config(points[0].config))
    assert cli_main(["sweep", str(config_file), "--out", str(out), "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert "partial" in listing and "done" in listing
