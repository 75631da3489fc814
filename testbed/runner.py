"""Running one experiment end to end: prepare it, run its rounds on Flower's engine, finish it.

Kept apart from :mod:`testbed.orchestrator` (the server side) and :mod:`testbed.flower_app`
(the apps), which it puts together.

Ctrl-C (SIGINT) and SIGTERM stop a run cleanly: the handlers installed here only set the
experiment's stop flag; the round loop, which runs in Flower's ServerApp thread, checks it
between replies, abandons the round in progress (nothing of it is written) and returns, so
Flower ends its engine and stops Ray as on a normal end. The finished rounds are on disk,
summary.json and the report are written for them, and :class:`RunStopped` carries the exit
code (128 + the signal's number: 130, 143). ``--resume`` continues from the last finished round.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from testbed.config import ExperimentConfig
from testbed.engine import cohort_size, run_simulation_fleet
from testbed.flower_app import client_app, make_server_app
from testbed.orchestrator import Experiment, print_summary

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunStopped(KeyboardInterrupt):
    """The run was stopped by a signal after ``rounds_done`` finished rounds (all on disk).

    A KeyboardInterrupt, so that code catching ``Exception`` (a sweep's loop) does not go on.
    """

    def __init__(self, signum: int, rounds_done: int, rounds: int, out: Path):
        self.signum, self.rounds_done = signum, rounds_done
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name} after round {rounds_done} of {rounds} "
                         f"(the round in progress was dropped); continue with --resume {out}")


@contextlib.contextmanager
def _stop_on_signals(experiment: Experiment) -> Iterator[dict]:
    """For the block, SIGINT and SIGTERM set the experiment's stop flag; yields {'signum': ...} once one came."""
    received: dict = {}
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield received
        return

    def handler(signum, _frame):
        received.setdefault("signum", signum)
        experiment.stop_requested.set()

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


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
    with ``overwrite``); return the run folder. Raises :class:`RunStopped` after SIGINT or SIGTERM."""
    experiment = Experiment(config, out_dir, resume=resume, progress=progress, config_path=config_path,
                            overwrite=overwrite)
    with _stop_on_signals(experiment) as received:
        try:
            experiment.prepare()
            if experiment.rounds_done < config.rounds and not experiment.stop_requested.is_set():
                devices = len(experiment.fleet.devices)
                nodes = max(1, math.ceil(devices / cohort_size(devices, config.engine)))
                experiment.expected_nodes = nodes
                run_simulation_fleet(
                    make_server_app(experiment), client_app, nodes, config.engine,
                    ray_address=ray_address or config.engine.ray_address,
                )
        finally:
            summary = experiment.finish()
    if "signum" in received and experiment.rounds_done < config.rounds:
        raise RunStopped(received["signum"], experiment.rounds_done, config.rounds, Path(out_dir))
    if experiment.rounds_done < config.rounds:
        raise RuntimeError(
            f"the run stopped after round {experiment.rounds_done} of {config.rounds}; see {Path(out_dir) / 'run.log'}"
        )
    if progress and summary is not None:
        print_summary(summary, Path(out_dir))
    return Path(out_dir)
