"""Running one experiment end to end: prepare it, run its rounds on Flower's engine, finish it.

Kept apart from :mod:`testbed.orchestrator` (the server side) and :mod:`testbed.flower_app`
(the apps), which it puts together.
"""

from __future__ import annotations

import math
from pathlib import Path

from testbed.config import ExperimentConfig
from testbed.engine import run_simulation_fleet
from testbed.flower_app import client_app, make_server_app
from testbed.orchestrator import Experiment, print_summary


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path,
    resume: bool = False,
    ray_address: str | None = None,
    progress: bool = True,
    config_path: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Run one experiment into ``out_dir`` (continuing it with ``resume``, replacing a run there
    with ``overwrite``); return the run folder."""
    experiment = Experiment(config, out_dir, resume=resume, progress=progress, config_path=config_path,
                            overwrite=overwrite)
    try:
        experiment.prepare()
        if experiment.rounds_done < config.rounds:
            dpn = config.engine.devices_per_node
            nodes = max(1, math.ceil(len(experiment.fleet.devices) / dpn))
            experiment.expected_nodes = nodes
            run_simulation_fleet(
                make_server_app(experiment), client_app, nodes, config.engine,
                ray_address=ray_address or config.engine.ray_address,
            )
    finally:
        summary = experiment.finish()
    if experiment.rounds_done < config.rounds:
        raise RuntimeError(
            f"the run stopped after round {experiment.rounds_done} of {config.rounds}; see {Path(out_dir) / 'run.log'}"
        )
    if progress and summary is not None:
        print_summary(summary, Path(out_dir))
    return Path(out_dir)
