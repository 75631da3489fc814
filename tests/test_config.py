"""Config loading: validation, overrides and one-line errors."""

from __future__ import annotations

import pytest

from testbed.config import ConfigError, dump_config, load_config, validate_tree

BASE = """
name: t
rounds: 2
fleet:
  devices: 4
  link: {model: awgn, snr_db: {uniform: [0, 20]}}
strategies:
  - {label: fp32, strategy: raw}
  - {label: q8, strategy: quantise, bits: 8}
"""


def write(tmp_path, text=BASE):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_overrides_reach_nested_keys_and_list_entries(tmp_path):
    config = load_config(write(tmp_path), ["rounds=5", "fleet.link.snr_db=7.5", "strategies.1.bits=4"])
    assert config.rounds == 5
    assert config.fleet.link.snr_db == 7.5
    assert config.strategy_specs()["q8"] == {"label": "q8", "strategy": "quantise", "bits": 4}


def test_the_resolved_config_round_trips(tmp_path):
    config = load_config(write(tmp_path))
    again = write(tmp_path, dump_config(config))
    assert load_config(again) == config


def test_an_override_with_an_impossible_value_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"c\.yaml: strategies\.1 \(q8\): quantise\.bits"):
        load_config(write(tmp_path), ["strategies.1.bits=1"])
    with pytest.raises(ConfigError, match=r"fleet\.devices"):
        load_config(write(tmp_path), ["fleet.devices=0"])


def test_duplicate_labels_and_invalid_yaml_are_reported(tmp_path):
    with pytest.raises(ConfigError, match="repeated: a"):
        validate_tree({"strategies": [{"label": "a", "strategy": "raw"}, {"label": "a", "strategy": "raw"}]}, "x.yaml")
    with pytest.raises(ConfigError, match=r"c\.yaml line \d+: not valid YAML"):
        load_config(write(tmp_path, "rounds: [1,\n"))
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
