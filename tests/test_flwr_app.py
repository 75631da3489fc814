"""`flwr run .` runs the same ServerApp and ClientApp as a Flower App on a local SuperLink."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, TEST_FLEET


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None:
            pytest.fail("flower-superlink exited")
        time.sleep(0.2)
    pytest.fail("flower-superlink did not start")


@pytest.fixture
def local_superlink(tmp_path):
    """The SuperLink `flwr run` would start for the `local` connection, on free ports, owned by this test."""
    bin_dir = Path(sys.executable).parent
    http = _free_port()  # Flower 1.42 serves the Control, Fleet and Runtime APIs on this one HTTP port
    env = os.environ.copy()
    env.update(
        FLWR_HOME=str(tmp_path / "flwr-home"),
        FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(http),
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
    )
    proc = subprocess.Popen(
        [str(bin_dir / "flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
         "--disable-runtime-dependency-installation", "--host", "127.0.0.1", "--port", str(http), "--log-file", str(tmp_path / "superlink.log")],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        _wait_port(http, proc)
        yield env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the SuperLink and the simulation it spawned
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_flwr_run_completes_a_tiny_run(local_superlink, tmp_path):
    out = tmp_path / "run"
    overrides = ";".join([*TEST_FLEET, "rounds=1", "fleet.devices=4"])
    run_config = f"config='{REPO / 'configs' / 'tiny.yaml'}' out='{out}' set='{overrides}'"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "flwr"), "run", ".", "--run-config", run_config,
         "--federation-config", "num-supernodes=2", "--stream"],
        cwd=REPO, env=local_superlink, capture_output=True, text=True, timeout=420,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "summary.json").exists():
        time.sleep(0.5)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds_done"] == 1
    lines = (out / "metrics.csv").read_text().splitlines()
    assert len(lines) == 1 + 3 * 4  # 1 round x 3 strategies x 4 devices
    assert "pyproject" not in result.stdout.lower() or "migrat" not in result.stdout.lower()
