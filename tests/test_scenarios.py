"""Scenarios as plug-ins: the registry, their config, device state kept between rounds."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, TINY, run_tiny, tiny_config
from testbed.config import ConfigError, load_config
from testbed.scenarios import SCENARIOS, Scenario
from testbed.tables import TRANSFERS


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "testbed", *args], capture_output=True, text=True, cwd=REPO,
                          env=env or os.environ.copy(), timeout=300)


def test_builtin_scenarios_are_registered_with_their_transfers():
    found = SCENARIOS.available()
    assert {"broadcast", "federated"} <= set(found)
    assert all(issubclass(cls, Scenario) for cls in found.values())
    assert [t.name for t in found["federated"].transfers] == ["down", "up"]
    assert [t.direction for t in found["federated"].transfers] == ["down", "up"]


def test_a_scenario_from_an_installed_package_is_listed_and_runs_by_name():
    # conftest installed the test scenarios as a package with entry points (on PYTHONPATH).
    result = _cli("scenarios", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["counter"]["transfers"] == ["tick (server->device)"]
    assert "drop_round" in rows["counter"]["options"]
    assert rows["broadcast"]["transfers"] == ["down (server->device)"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    without = _cli("scenarios", "--json", env=env)
    assert "counter" not in {row["name"] for row in json.loads(without.stdout)}


@pytest.mark.parametrize(
    "override, expected",
    [
        ("scenario.name=nosuch", "scenario.name: unknown scenario 'nosuch'; registered: "),
        ("scenario.local.lr=0", "scenario.local"),  # broadcast has no local training
        ("scenario.measurements=[nmse_everything]", "scenario.measurements.0"),
    ],
)
def test_a_bad_scenario_is_one_line_naming_the_key_and_the_file(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(TINY, [override])
    message = str(info.value)
    assert message.startswith(f"{TINY}: ") and expected in message and "\n" not in message


def test_federated_options_are_checked_at_load():
    with pytest.raises(ConfigError, match=r"scenario\.local\.lr: Input should be greater than 0"):
        load_config(TINY, ["scenario.name=federated", "scenario.local.lr=0"])
    with pytest.raises(ConfigError, match=r"scenario\.uplink: quantise\.bits"):
        load_config(TINY, ["scenario.name=federated", "scenario.uplink={strategy: quantise, bits: 40}"])
    config = load_config(TINY, ["scenario.name=federated", "scenario.local.lr=0.2"])
    assert config.scenario == {"name": "federated", "local": {"lr": 0.2}}


def test_a_config_with_the_old_mode_key_is_told_what_replaced_it(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text(TINY.read_text().replace("scenario: {name: broadcast}", "mode: federated"))
    with pytest.raises(ConfigError, match=r"old\.yaml: mode: replaced by 'scenario'"):
        load_config(old)


def test_the_measurement_table_of_a_scenario_has_its_own_columns():
    from testbed.scenarios import build_scenario

    federated = build_scenario(tiny_config("scenario.name=federated"))
    names = federated.measurements_table(federated.options).names
    assert names[:3] == ("round", "label", "device_id") and "train_loss" in names and "accuracy" in names
    assert "recon_nmse_conv_db" not in names
    conv = build_scenario(tiny_config("scenario.measurements=[nmse_conv]"))
    assert "recon_nmse_conv_db" in conv.measurements_table(conv.options).names


def test_the_device_side_and_the_scenarios_import_nothing_from_flower():
    code = ("import sys, testbed.device, testbed.scenarios.broadcast, testbed.scenarios.federated, testbed.transfer; "
            "print(sorted(m for m in sys.modules if m == 'flwr' or m.startswith('flwr.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


COUNTER = ["scenario.name=counter", "fleet.link={model: ideal}", "rounds=3"]


@pytest.mark.slow
def test_devices_keep_their_state_between_rounds_whatever_the_cohorts(tmp_path):
    from testbed.scenarios import build_scenario

    one = run_tiny(tmp_path / "one", *COUNTER, "scenario.drop_round=2", "engine.devices_per_node=1")
    table = build_scenario(tiny_config(*COUNTER)).measurements_table()
    rows = table.read(one)
    assert len(rows) == 3 * 3 * 8 and (rows["failure"] == "").all()
    # round 1: 1, round 2 dropped: still 1, round 3: 2 -- on every device, for every label
    expected = {1: 1, 2: 1, 3: 2}
    assert (rows["count"] == rows["round"].map(expected)).all()
    assert set(TRANSFERS.read(one)["transfer"]) == {"tick"}
    three = run_tiny(tmp_path / "three", *COUNTER, "scenario.drop_round=2", "engine.devices_per_node=3",
                     "engine.num_workers=1")
    for name in ("measurements.csv", "transfers.csv", "rounds.csv"):
        assert (three / name).read_text() == (one / name).read_text(), name
