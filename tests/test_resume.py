"""A run killed mid-way keeps its finished rounds, and --resume reaches the uninterrupted metrics."""

from __future__ import annotations

import json

import pytest

from conftest import kill_after_first_round, resume_run, run_tiny

FEDERATED = ["scenario.name=federated", "rounds=3"]
COUNTER = ["scenario.name=counter", "fleet.link={model: ideal}", "rounds=3"]  # devices keep state


@pytest.mark.slow
@pytest.mark.parametrize("scenario", [FEDERATED, COUNTER], ids=["federated", "device-state"])
def test_resume_after_kill_gives_the_uninterrupted_metrics(tmp_path, scenario):
    killed = tmp_path / "killed"
    done = kill_after_first_round(killed, *scenario, timeout_s=240)
    assert 1 <= done < 3
    assert (killed / "state" / "scenario.pt").exists()
    kept = {int(line.split(",")[0]) for line in (killed / "measurements.csv").read_text().splitlines()[1:]}
    assert set(range(1, done + 1)) <= kept

    resume_run(killed)
    whole = run_tiny(tmp_path / "whole", *scenario)
    for name in ("measurements.csv", "transfers.csv", "rounds.csv", "metrics.csv"):
        assert (killed / name).read_text() == (whole / name).read_text(), name
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["rounds_done"] == 3
    assert summary["strategies"] == json.loads((whole / "summary.json").read_text())["strategies"]
