"""Starting Flower's simulation engine on Ray: a local Ray sized to the machine, or a cluster.

Local (the default): Ray starts in this process with ``engine.num_workers``
CPUs (default: the CPUs this process may use) and Flower runs one ClientApp
actor per CPU. With an address (``--ray-address`` / ``engine.ray_address``),
Flower attaches to that running Ray cluster and uses all of its CPUs; that is
how a run scales past one machine. Every ClientApp call takes one CPU and sets
torch to one thread, so metrics do not depend on how many workers there are.
"""

from __future__ import annotations

import logging
import os
import warnings

from testbed.config import EngineConfig


def machine_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def backend_config(engine: EngineConfig, ray_address: str | None = None) -> dict:
    """Flower's ``backend_config`` for the Ray backend."""
    init_args: dict = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": True}
    address = ray_address or engine.ray_address
    if address:
        init_args["address"] = address
    else:
        init_args["num_cpus"] = engine.num_workers or machine_cpus()
        init_args["num_gpus"] = 0
    # Devices are emulated on CPU (engine.device applies to central training only).
    return {"init_args": init_args, "client_resources": {"num_cpus": 1, "num_gpus": 0.0}}


def run_simulation_fleet(server_app, client_app, num_nodes: int, engine: EngineConfig, ray_address: str | None = None) -> None:
    """Run ``server_app`` against ``num_nodes`` virtual nodes running ``client_app``; return when it ends."""
    from flwr.simulation import run_simulation

    # Ray workers inherit the environment: one thread each (reproducible and fastest on CPU).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    flwr_logger.setLevel(logging.ERROR)  # not the run_simulation deprecation notice
    try:
        with warnings.catch_warnings():
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
