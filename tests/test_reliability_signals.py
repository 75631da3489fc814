"""Ctrl-C and SIGTERM stop a run cleanly; a SIGKILLed driver leaves none of its Ray processes behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, TEST_FLEET, TINY, resume_run, run_tiny
from testbed.engine import descendants, still_running

ROUNDS = ["rounds=4"]


def _start_run(out):
    args = [sys.executable, "-m", "testbed", "run", str(TINY), "--out", str(out), "--quiet"]
    for item in [*TEST_FLEET, *ROUNDS]:
        args += ["--set", item]
    return subprocess.Popen(args, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _after_round_one(proc, out) -> dict[int, str]:
    """Wait until round 1 is committed; return the run's processes (Ray's included) at that moment."""
    progress = out / "progress.json"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if progress.exists() and json.loads(progress.read_text())["rounds_done"] >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    processes = descendants(proc.pid)
    assert any("raylet" in _name(pid) for pid in processes), "Ray's processes are the run's children"
    return processes


def _assert_gone_soon(processes: dict[int, str], within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while still_running(processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert still_running(processes) == [], [_name(p) for p in still_running(processes)]


def _name(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace").replace("\0", " ").strip()
    except OSError:
        return ""


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return run_tiny(tmp_path_factory.mktemp("whole") / "run", *ROUNDS)


@pytest.mark.slow
@pytest.mark.parametrize("sig, to_group", [(signal.SIGINT, True), (signal.SIGTERM, False)], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_the_run_cleanly_and_resume_gives_the_uninterrupted_metrics(tmp_path, uninterrupted, sig, to_group):
    out = tmp_path / "stopped"
    proc = _start_run(out)
    try:
        processes = _after_round_one(proc, out)
        # Ctrl-C in a terminal signals the whole foreground group (Ray's processes too); kill(1) the driver.
        os.killpg(proc.pid, sig) if to_group else os.kill(proc.pid, sig)
        sent = time.monotonic()
        code = proc.wait(timeout=60)
        stopped_in = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stderr = proc.stderr.read().decode()
    assert code == 128 + sig, stderr
    assert "Traceback" not in stderr and "SIGTERM received" not in stderr, stderr
    assert f"continue with --resume {out}" in stderr.strip().splitlines()[-1]
    assert stopped_in < 30, stopped_in
    _assert_gone_soon(processes)  # Ray's own shutdown may take its last processes a moment longer

    done = json.loads((out / "progress.json").read_text())["rounds_done"]
    assert 1 <= done < 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds_done"] == done
    assert (out / "report.html").exists()
    kept = sorted({int(line.split(",")[0]) for line in (out / "measurements.csv").read_text().splitlines()[1:]})
    assert kept == list(range(1, done + 1)), "every finished round is on disk, the abandoned one is not"

    resume_run(out)
    for name in ("measurements.csv", "transfers.csv", "rounds.csv", "metrics.csv"):
        assert (out / name).read_text() == (uninterrupted / name).read_text(), name


@pytest.mark.slow
def test_a_killed_driver_leaves_no_ray_process_behind(tmp_path):
    out = tmp_path / "killed"
    proc = _start_run(out)
    try:
        processes = _after_round_one(proc, out)
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone: nothing of it can clean up
        proc.wait()
        _assert_gone_soon(processes)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
