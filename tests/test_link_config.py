"""A config's fleet.link and fleet.compute, checked when the config is loaded: one line naming file and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from testbed.attributes import Choice, Uniform
from testbed.config import ConfigError, dump_config, load_config
from testbed.fleet import Fleet
from testbed.links.schema import LinkSection

ROOT = Path(__file__).resolve().parents[1]
KNOWN = "ideal, bsc, awgn, analog, erasure, fading, gilbert_elliott, nr"


def config_file(tmp_path: Path, link: dict, compute: dict | None = None) -> Path:
    tree = {
        "name": "t",
        "fleet": {"devices": 4, "link": link, **({"compute": compute} if compute else {})},
        "strategies": [{"label": "fp32", "strategy": "raw"}],
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


AWGN_PARAMS = "bandwidth_mbps, latency_ms, packet_bytes, max_attempts, protected_repetition, snr_db, modulation"


@pytest.mark.parametrize(
    "link, compute, message",
    [
        ({"model": "awgm"}, None, f"fleet.link.model: unknown link model 'awgm'; known: {KNOWN}"),
        ({"model": ["ideal", "awgm"]}, None, f"fleet.link.model: unknown link model 'awgm'; known: {KNOWN}"),
        ({"model": {"choice": ["bsc", "wifi"]}}, None, f"fleet.link.model.choice: unknown link model 'wifi'; known: {KNOWN}"),
        ({"model": "awgn", "ber": 0.1}, None,
         f"fleet.link.ber: not a parameter of link model awgn (parameters: {AWGN_PARAMS}); ber is a parameter of bsc"),
        ({"snr_db": 5, "loss": 0.1}, None,  # model: awgn by default
         f"fleet.link.loss: not a parameter of link model awgn (parameters: {AWGN_PARAMS}); loss is a parameter of erasure"),
        ({"model": ["ideal", "awgn"], "ber": 0.1}, None,
         f"fleet.link.ber: not a parameter of link models ideal, awgn (parameters: {AWGN_PARAMS}); ber is a parameter of bsc"),
        ({"model": "awgn", "snr": 5}, None, f"fleet.link.snr: not a parameter of link model awgn (parameters: {AWGN_PARAMS})"),
        ({"snr_db": {"uniform": [20, 0]}}, None, "fleet.link.snr_db: uniform: low 20.0 is above high 0.0"),
        ({"snr_db": {"normal": [10, -1]}}, None, "fleet.link.snr_db: normal: std -1.0 must be >= 0"),
        ({"bandwidth_mbps": {"lognormal": [1, -0.5]}}, None, "fleet.link.bandwidth_mbps: lognormal: sigma -0.5 must be >= 0"),
        ({"snr_db": {"uniform": [1]}}, None, "fleet.link.snr_db: uniform needs [low, high], got {'uniform': [1]}"),
        ({"snr_db": {"beta": [1, 2]}}, None,
         "fleet.link.snr_db: expected a value, a list with one value per device, or a distribution ({uniform: [low, high]}, "
         "{normal: [mean, std]}, {lognormal: [mu, sigma]}, {choice: [values...] (weights: [...])})"),
        ({"modulation": {"uniform": [0, 1]}}, None,
         "fleet.link.modulation: expected a value, a list with one value per device, or {choice: [...]}"),
        ({"modulation": ["bpsk", "64qam"]}, None, "fleet.link.modulation: list item 1: '64qam' must be one of bpsk, qpsk, 16qam"),
        ({"model": "erasure", "loss": 1.0}, None, "fleet.link.loss: 1.0 must be a number in [0, 1)"),
        ({"snr_db": []}, None, "fleet.link.snr_db: the list of values is empty"),
        ({"packet_bytes": [512, 0.5]}, None, "fleet.link.packet_bytes: list item 1: 0.5 must be a whole number >= 1"),
        ({"protected_repetition": [2, 0]}, None, "fleet.link.protected_repetition: list item 1: 0 must be 'auto' or a whole number >= 1"),
        ({"model": {"choice": ["awgn", "bsc"], "weights": [-1, 2]}}, None,
         "fleet.link.model: weights must be non-negative with a positive sum, got [-1.0, 2.0]"),
        ({"model": "bsc", "ber": {"choice": ["1e-4"]}}, None,  # YAML reads 1e-4 (no dot) as a string
         "fleet.link.ber: choice item 0: '1e-4' must be a number in [0, 1]"),
        ({"model": "gilbert_elliott", "p_bad_to_good": 0}, None, "fleet.link.p_bad_to_good: 0 must be a number in (0, 1]"),
        ({}, {"availability": 1.5}, "fleet.compute.availability: 1.5 must be a number in [0, 1]"),
        ({}, {"speed_factor": {"uniform": [2, 1]}}, "fleet.compute.speed_factor: uniform: low 2.0 is above high 1.0"),
        ({}, {"speed": 1}, "fleet.compute.speed: Extra inputs are not permitted"),
    ],
)
def test_a_bad_link_or_compute_section_is_one_line_at_load(tmp_path, link, compute, message):
    path = config_file(tmp_path, link, compute)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: {message}"


def test_overrides_are_checked_the_same_way(tmp_path):
    path = config_file(tmp_path, {"model": "awgn", "snr_db": 5})
    with pytest.raises(ConfigError, match=r"bad\.yaml: fleet\.link\.ber: not a parameter of link model awgn"):
        load_config(path, ["fleet.link.ber=0.1"])
    # switching the model: the other model's parameters must go too
    with pytest.raises(ConfigError, match=r"fleet\.link\.snr_db: not a parameter of link model bsc"):
        load_config(path, ["fleet.link.model=bsc"])
    assert load_config(path, ["fleet.link={model: bsc, ber: 0.01}"]).fleet.link.ber == 0.01


def test_the_cli_refuses_before_any_run_folder_is_written(tmp_path):
    path = config_file(tmp_path, {"model": "awgm"})
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "testbed", "run", str(path), "--out", str(out), "--quiet"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr == f"testbed run: error: {path}: fleet.link.model: unknown link model 'awgm'; known: {KNOWN}\n"
    assert not out.exists()


def test_each_model_takes_its_own_parameters(tmp_path):
    cfg = load_config(config_file(tmp_path, {"model": "bsc", "ber": [1e-3, 0.01], "packet_bytes": {"uniform": [64, 128]}}))
    link = cfg.fleet.link
    assert isinstance(link, LinkSection) and link.models == ("bsc",)
    assert link.ber == [1e-3, 0.01] and isinstance(link.packet_bytes, Uniform)
    assert not hasattr(link, "snr_db")
    ge = load_config(config_file(tmp_path, {"model": "gilbert_elliott", "ber_bad": 0.2})).fleet.link
    assert ge.ber_bad == 0.2 and ge.p_bad_to_good == 0.1  # the model's defaults for the rest


def test_a_mixed_fleet_takes_the_parameters_of_every_model_in_it(tmp_path):
    link = {"model": {"choice": ["bsc", "awgn", "erasure"]}, "ber": 1e-3, "snr_db": {"uniform": [0, 20]}, "loss": 0.1}
    cfg = load_config(config_file(tmp_path, link))
    assert cfg.fleet.link.models == ("bsc", "awgn", "erasure") and isinstance(cfg.fleet.link.model, Choice)
    fleet = Fleet.from_config(cfg.fleet, cfg.seed)
    for d in fleet:
        assert set(type(d.link).model_fields) - {"model", "bandwidth_mbps", "latency_ms", "packet_bytes", "max_attempts",
                                                 "protected_repetition"} == {
            "bsc": {"ber"}, "awgn": {"snr_db", "modulation"}, "erasure": {"loss"}}[d.link.model]


@pytest.mark.parametrize(
    "link",
    [
        {"model": "awgn", "snr_db": {"uniform": [0, 20]}},
        {"model": ["ideal", "awgn"], "snr_db": [1, 2, 3], "protected_repetition": ["auto", 2]},
        {"model": {"choice": ["bsc", "gilbert_elliott"], "weights": [1, 3]}, "ber": {"choice": [0.01, 0.1]}, "ber_bad": 0.3},
    ],
)
def test_the_resolved_config_round_trips(tmp_path, link):
    config = load_config(config_file(tmp_path, link))
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(config))
    assert load_config(again) == config
    assert yaml.safe_load(dump_config(config))["fleet"]["link"]["max_attempts"] == 8  # defaults written out
