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

FEDERATED = ["mode=federated", "rounds=3"]


@pytest.mark.slow
def test_resume_after_kill_gives_the_uninterrupted_metrics(tmp_path):
    from testbed.config import load_config
    from testbed.orchestrator import run_experiment

    killed = tmp_path / "killed"
    args = [sys.executable, "-m", "testbed", "run", str(TINY), "--out", str(killed), "--quiet"]
    for item in [*TEST_FLEET, *FEDERATED]:
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
    assert (killed / "state" / "global.pt").exists()
    kept = {int(line.split(",")[0]) for line in (killed / "metrics.csv").read_text().splitlines()[1:]}
    assert set(range(1, done + 1)) <= kept

    run_experiment(load_config(killed / "config.yaml"), killed, resume=True, progress=False, config_path=TINY)
    whole = run_tiny(tmp_path / "whole", *FEDERATED)
    assert (killed / "metrics.csv").read_text() == (whole / "metrics.csv").read_text()
    assert (killed / "rounds.csv").read_text() == (whole / "rounds.csv").read_text()
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["rounds_done"] == 3
    assert summary["strategies"] == json.loads((whole / "summary.json").read_text())["strategies"]
    # federated rows carry the uplink
    lines = (whole / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    row = dict(zip(header, lines[1].split(",")))
    assert int(row["bytes_up"]) > 0 and float(row["train_loss"]) > 0
