"""A run killed mid-way keeps its finished rounds, and --resume reaches the uninterrupted metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, TEST_FLEET, TINY, run_tiny

FEDERATED = ["scenario.name=federated", "rounds=3"]
COUNTER = ["scenario.name=counter", "fleet.link={model: ideal}", "rounds=3"]  # devices keep state


@pytest.mark.slow
@pytest.mark.parametrize("scenario", [FEDERATED, COUNTER], ids=["federated", "device-state"])
def test_resume_after_kill_gives_the_uninterrupted_metrics(tmp_path, scenario):
    from testbed.config import load_config
    from testbed.runner import run_experiment

    killed = tmp_path / "killed"
    args = [sys.executable, "-m", "testbed", "run", str(TINY), "--out", str(killed), "--quiet"]
    for item in [*TEST_FLEET, *scenario]:
        args += ["--set", item]
    proc = subprocess.Popen(args, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    progress = killed / "progress.json"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if progress.exists() and json.loads(progress.read_text())["rounds_done"] >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run, its Ray and its workers
        proc.wait()
    done = json.loads(progress.read_text())["rounds_done"]
    assert 1 <= done < 3
    assert (killed / "state" / "scenario.pt").exists()
    kept = {int(line.split(",")[0]) for line in (killed / "measurements.csv").read_text().splitlines()[1:]}
    assert set(range(1, done + 1)) <= kept

    # --resume from the folder alone (its config.yaml; the base folder comes from progress.json)
    run_experiment(load_config(killed / "config.yaml"), killed, resume=True, progress=False,
                   config_path=killed / "config.yaml")
    whole = run_tiny(tmp_path / "whole", *scenario)
    for name in ("measurements.csv", "transfers.csv", "rounds.csv", "metrics.csv"):
        assert (killed / name).read_text() == (whole / name).read_text(), name
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["rounds_done"] == 3
    assert summary["strategies"] == json.loads((whole / "summary.json").read_text())["strategies"]
