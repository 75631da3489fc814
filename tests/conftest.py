"""Shared fixtures: real data, a session-wide model cache, one Ray for the session's fleet runs,
and one tiny fleet run reused by several tests."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
# The device that raises in the reference run (the test-only faulty-broadcast scenario), so
# that failure handling is exercised and shown to be deterministic too.
FAIL_DEVICE = 7
FAULTY = ["scenario.name=faulty-broadcast", f"scenario.fail_devices=[{FAIL_DEVICE}]"]

# A small fleet that exercises ideal and noisy links: device i has model[i % 4] and snr_db[i].
TEST_FLEET = [
    "fleet.devices=8",
    "fleet.link.model=[ideal, awgn, awgn, awgn]",
    "fleet.link.snr_db=[8, 8, 10, 12, 8, 10, 12, 16]",
]


def mnist_data_dir() -> Path:
    """Where the tests read real MNIST: $TESTBED_DATA_DIR, else the project's default data folder."""
    from testbed.data import resolve_data_dir

    return resolve_data_dir(None)


# Tests on the full MNIST files. Outside CI they are skipped when the files are absent;
# under CI (CI set) they run and fail, so a missing data set can never pass silently.
needs_mnist = pytest.mark.skipif(
    not (mnist_data_dir() / "mnist").exists() and not os.environ.get("CI"),
    reason="real MNIST not found: set TESTBED_DATA_DIR to a folder holding mnist/",
)


@pytest.fixture(scope="session", autouse=True)
def testbed_env(tmp_path_factory):
    """A session cache of trained tiny models, and the test scenarios installed as a plug-in
    package (on sys.path here, on PYTHONPATH for Ray workers and subprocesses)."""
    import importlib
    import sys

    from plugins import install_plugin

    saved = {k: os.environ.get(k) for k in ("TESTBED_CACHE_DIR", "PYTHONPATH")}
    os.environ["TESTBED_CACHE_DIR"] = str(tmp_path_factory.mktemp("model-cache"))
    root = install_plugin(
        tmp_path_factory.mktemp("plugins"), "testbed-test-scenarios",
        {"testbed_test_scenarios.py": (Path(__file__).parent / "plugin_scenarios.py").read_text()},
        {"testbed.scenarios": {"faulty-broadcast": "testbed_test_scenarios:FaultyBroadcast",
                               "counter": "testbed_test_scenarios:Counter"}},
    )
    sys.path.append(str(root))
    importlib.invalidate_caches()
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (saved["PYTHONPATH"], str(root)) if p)
    yield
    _SHARED_RAY.close()
    sys.path.remove(str(root))
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def tiny_config(*overrides: str):
    from testbed.config import load_config

    return load_config(TINY, [*TEST_FLEET, *overrides])


# Starting a local Ray (GCS, raylet, agents) costs seconds per run; the session's fleet runs
# attach to one head instead, started on first use and stopped with the session.
_SHARED_RAY = contextlib.ExitStack()
_shared_address: list[str] = []


def shared_ray_address() -> str:
    from testbed.engine import local_ray_head

    if not _shared_address:
        _shared_address.append(_SHARED_RAY.enter_context(local_ray_head()))
    return _shared_address[0]


def run_tiny(out: Path, *overrides: str, own_ray: bool = False, **kwargs) -> Path:
    """The tiny config with the test fleet and ``overrides``, on the session's Ray. A run that
    sets its worker count (``engine.num_workers``), or asks for ``own_ray``, starts a Ray of its
    own: attached to a cluster, a run has all of the cluster's CPUs."""
    from testbed.runner import run_experiment

    if not own_ray and "ray_address" not in kwargs and not any(o.startswith("engine.num_workers=") for o in overrides):
        kwargs["ray_address"] = shared_ray_address()
    return run_experiment(tiny_config(*overrides), out, progress=False, config_path=TINY, **kwargs)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The reference broadcast run: 8 devices, 2 rounds, two devices per node, on the session's Ray
    (a worker per CPU: two here), device FAIL_DEVICE raising."""
    return run_tiny(tmp_path_factory.mktemp("tiny-run") / "run", *FAULTY, "scenario.measurements=[nmse_conv]",
                    "engine.devices_per_node=2")


def resume_run(out: Path) -> Path:
    """``--resume`` from the run folder alone (its config.yaml; the base folder from progress.json)."""
    from testbed.config import load_config
    from testbed.runner import run_experiment

    return run_experiment(load_config(out / "config.yaml"), out, resume=True, progress=False,
                          config_path=out / "config.yaml", ray_address=shared_ray_address())


def kill_after_first_round(out: Path, *overrides: str, timeout_s: float = 300) -> int:
    """Run the tiny config with ``overrides`` in a subprocess, SIGKILL its whole process group as
    soon as a round is committed, and return the rounds the folder holds (a killed run)."""
    import json
    import signal
    import subprocess
    import sys
    import time

    args = [sys.executable, "-m", "testbed", "run", str(TINY), "--out", str(out), "--quiet",
            "--ray-address", shared_ray_address()]
    for item in [*TEST_FLEET, *overrides]:
        args += ["--set", item]
    proc = subprocess.Popen(args, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    progress = out / "progress.json"
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if progress.exists() and json.loads(progress.read_text())["rounds_done"] >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run, its Ray and its workers
        proc.wait()
    return json.loads(progress.read_text())["rounds_done"]
