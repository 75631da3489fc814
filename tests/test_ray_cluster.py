"""Attaching to an existing Ray cluster by address (how runs scale past one machine)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import run_tiny


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster():
    """A one-node Ray cluster on loopback, started here and stopped afterwards (only ours)."""
    ray_bin = Path(sys.executable).parent / "ray"
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-test-")
    proc = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false", f"--temp-dir={temp_dir}",
         "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=os.environ.copy(),
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None:
            pytest.fail("ray start --head exited")
        time.sleep(0.5)
    try:
        yield address
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_run_on_a_cluster_by_address_gives_the_local_metrics(ray_cluster, tiny_run, tmp_path):
    out = run_tiny(tmp_path / "run", "engine.devices_per_node=1", ray_address=ray_cluster)
    assert (out / "metrics.csv").read_text() == (tiny_run / "metrics.csv").read_text()
