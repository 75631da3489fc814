"""Starting Flower's simulation engine on Ray: a local Ray sized to the machine, or a cluster.

Local (the default): Ray starts in this process with ``engine.num_workers``
CPUs (default: the CPUs this process may use) and Flower runs one ClientApp
actor per CPU. With an address (``--ray-address`` / ``engine.ray_address``),
Flower attaches to that running Ray cluster and uses all of its CPUs; that is
how a run scales past one machine. Every ClientApp call takes one CPU and sets
torch to one thread, so metrics do not depend on how many workers there are.

A local Ray is the run's own: Ray's processes (GCS, raylet, its dashboard and
runtime-env agents, the workers) are started by this process and stopped with
it. Ray stops them on a clean end; a driver killed outright (SIGKILL, the OOM
killer) cannot, and some of them outlive it. So while the engine runs, a small
watchdog process in its own session (:func:`reap_when_gone`) keeps a list of
this process's descendants and, once this process is gone, kills what is left
of them. Processes of a cluster given by address are not the run's and are
never touched.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from testbed.config import EngineConfig


def machine_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# The automatic cohort size: about this many messages per worker and round, so that every worker
# stays busy to the end of the round while each Flower message (about 23 ms of wall time here)
# carries many devices; bounded so that one reply stays small and the progress display moves.
MESSAGES_PER_WORKER = 4
MAX_COHORT = 250


def cohort_size(devices: int, engine: EngineConfig) -> int:
    """Devices per Flower message: ``engine.devices_per_node`` when set, else
    ceil(devices / (workers x MESSAGES_PER_WORKER)) within [1, MAX_COHORT], where workers is
    ``engine.num_workers`` or the CPUs of this machine (a cluster by address: the same guess)."""
    if engine.devices_per_node is not None:
        return engine.devices_per_node
    workers = engine.num_workers or machine_cpus()
    return max(1, min(MAX_COHORT, math.ceil(devices / (workers * MESSAGES_PER_WORKER))))


def backend_config(engine: EngineConfig, ray_address: str | None = None) -> dict:
    """Flower's ``backend_config`` for the Ray backend."""
    init_args: dict = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": True}
    address = ray_address or engine.ray_address
    if address:
        init_args["address"] = address
    else:
        init_args["num_cpus"] = engine.num_workers or machine_cpus()
        init_args["num_gpus"] = 0
    # Devices are emulated on CPU: one CPU per worker, so the pool is the machine (or cluster) size.
    return {"init_args": init_args, "client_resources": {"num_cpus": 1, "num_gpus": 0.0}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_ray_head(num_cpus: int | None = None, start_timeout_s: float = 60.0) -> Iterator[str]:
    """A one-node Ray cluster on loopback for the duration of the block; yields its address.

    Several runs (the points of a sweep) attach to it by address instead of each
    starting and stopping Ray. Only this head is stopped at the end (never `ray
    stop`, which would stop every Ray on the machine).
    """
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="testbed-ray-")
    ray_bin = Path(sys.executable).with_name("ray")
    proc = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         f"--num-cpus={num_cpus or machine_cpus()}", "--num-gpus=0", "--include-dashboard=false",
         f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"could not start a local Ray head (ray start --head --port={port})")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def replace_dead_actors() -> None:
    """Make Flower's Ray actor pool replace an actor whose worker died, instead of reusing it.

    Flower 1.42's pool hands an actor back after any failed message, even when
    its worker process is gone, so every later message given to it fails too
    and one lost worker would lose a share of every following round. Here the
    dead actor is dropped and a fresh one takes its place. The pool is only
    told about the future, so the failure is read from the exception being
    handled by its caller (``RayBackend.process_message``'s except block).
    """
    import ray
    from flwr.simulation.ray_transport.ray_actor import BasicActorPool

    original = BasicActorPool.add_actor_back_to_pool
    if getattr(original, "replaces_dead_actors", False):
        return

    def add_actor_back_to_pool(self, future) -> None:
        if isinstance(sys.exc_info()[1], ray.exceptions.RayActorError):
            self._future_to_actor.pop(future, None)
            self.pool.append(self.create_actor_fn())
            return
        original(self, future)

    add_actor_back_to_pool.replaces_dead_actors = True
    BasicActorPool.add_actor_back_to_pool = add_actor_back_to_pool


def _start_time(pid: int) -> str | None:
    """A process's start time (field 22 of /proc/PID/stat): with the pid it names one process, never a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else fields[19]  # a zombie has already exited


def descendants(pid: int) -> dict[int, str]:
    """The live descendants of ``pid`` (Linux /proc), each with its start time."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        started = _start_time(child)
        if started is not None and child not in found:
            found[child] = started
            todo.extend(children.get(child, []))
    return found


def still_running(processes: dict[int, str]) -> list[int]:
    """Those of ``processes`` (pid -> start time) that have not exited."""
    return [pid for pid, started in processes.items() if _start_time(pid) == started]


def reap_when_gone(driver: int, poll_s: float = 0.5) -> None:
    """Watch ``driver``'s descendants; once it is gone, SIGKILL those still running (the watchdog's body)."""
    driver_started = _start_time(driver)
    known: dict[int, str] = {}
    while driver_started is not None and _start_time(driver) == driver_started:
        known.update(descendants(driver))
        time.sleep(poll_s)
    known.pop(os.getpid(), None)  # this watchdog is one of them
    for pid in still_running(known):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def reaped_on_driver_death() -> Iterator[None]:
    """For the block: a watchdog that kills this process's descendants if this process dies (Linux)."""
    if not Path("/proc/self/stat").exists():
        yield
        return
    package_root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    watchdog = subprocess.Popen(
        [sys.executable, "-m", "testbed.engine", "--reap-when-gone", str(os.getpid())],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # outlives a kill of this process's group
        env=env,
    )
    try:
        yield
    finally:  # a clean end: Ray stopped its processes itself
        watchdog.kill()
        watchdog.wait()


@contextlib.contextmanager
def python_signal_handlers_kept() -> Iterator[None]:
    """For the block, ``ray.init`` leaves this process's Python SIGINT/SIGTERM handlers in place.

    Ray's core installs C-level handlers for SIGTERM that dump a stack and abort the
    driver; the run's own handlers (a clean stop, :mod:`testbed.runner`) are put back
    as soon as Ray has started. Flower calls ``ray.init`` in the main thread.
    """
    import ray

    original = ray.init

    def init(*args, **kwargs):
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            return original(*args, **kwargs)
        finally:
            if threading.current_thread() is threading.main_thread():
                for sig, handler in handlers.items():
                    if handler is not None:
                        signal.signal(sig, handler)

    ray.init = init
    try:
        yield
    finally:
        ray.init = original


def run_simulation_fleet(server_app, client_app, num_nodes: int, engine: EngineConfig, ray_address: str | None = None) -> None:
    """Run ``server_app`` against ``num_nodes`` virtual nodes running ``client_app``; return when it ends."""
    from flwr.simulation import run_simulation

    replace_dead_actors()
    # Ray workers inherit the environment: one thread each (reproducible and fastest on CPU).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    flwr_logger.setLevel(logging.ERROR)  # not the run_simulation deprecation notice
    local = not (ray_address or engine.ray_address)
    try:
        with (warnings.catch_warnings(), python_signal_handlers_kept(),
              reaped_on_driver_death() if local else contextlib.nullcontext()):
            warnings.simplefilter("ignore")
            run_simulation(
                server_app=server_app,
                client_app=client_app,
                num_supernodes=num_nodes,
                backend_name="ray",
                backend_config=backend_config(engine, ray_address),
            )
    finally:
        flwr_logger.setLevel(level)


if __name__ == "__main__":  # the watchdog process of reaped_on_driver_death
    if len(sys.argv) == 3 and sys.argv[1] == "--reap-when-gone":
        reap_when_gone(int(sys.argv[2]))
