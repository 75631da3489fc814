"""Benchmark: the same per-device work in a Ray actor and in a plain spawned process, in turns.

The fleet's nodes are Ray actors; the plain loop's are spawned processes. This runs the plain
loop's own function (``plain_loop.run_devices``: 50 devices x the quickstart's five strategies,
``--rounds`` rounds) in one Ray actor and in one spawned process, one at a time and alternating
(``--turns`` turns each), each with one CPU and its world built before the timing, and prints the
CPU seconds of each turn and the ratio: what running in a Ray worker process costs by itself,
before any message. Not a test.

    .venv/bin/python scripts/bench_ray_actor.py [--turns 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))


def timed_rounds(config_text: str, base_dir: str, plan, rounds: list[int], devices: list[int]) -> float:
    """CPU seconds of ``rounds`` of the plain loop's work on ``devices`` in this process."""
    import time

    for path in (str(REPO), str(REPO / "scripts")):  # a Ray worker starts with its own sys.path
        if path not in sys.path:
            sys.path.insert(0, path)
    import plain_loop

    if plain_loop._world is None:  # the world and a first pass, outside the timing
        plain_loop._start(config_text, base_dir, plan)
        plain_loop.run_devices(plain_loop._world, plain_loop._plan, rounds[0], devices[:2], True)
    start = time.process_time()
    for round_ in rounds:
        plain_loop.run_devices(plain_loop._world, plain_loop._plan, round_, devices, True)
    return time.process_time() - start


def main() -> None:
    import ray

    from bench_fleet import load, prepared
    from bench_scale import scale_config
    from plain_loop import plan_of

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    experiment = prepared(scale_config(100, args.rounds, 1))
    work = (experiment.config_text, experiment.base_dir, plan_of(experiment), list(range(1, args.rounds + 1)), list(range(50)))
    print(f"machine: {platform.platform()}; {load()}")
    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
    actor = ray.remote(num_cpus=1)(_Node).remote()
    pool = multiprocessing.get_context("spawn").Pool(1)  # a fresh process, as the plain loop's are
    in_actor, in_process = [], []
    for turn in range(1, args.turns + 1):
        in_actor.append(ray.get(actor.run.remote(*work)))
        in_process.append(pool.apply(timed_rounds, work))
        print(f"turn {turn}: Ray actor {in_actor[-1]:.2f} s, spawned process {in_process[-1]:.2f} s CPU, "
              f"ratio {in_actor[-1] / in_process[-1]:.3f}", flush=True)
    pool.close()
    ratios = [a / p for a, p in zip(in_actor, in_process)]
    print(f"median ratio {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}); {load()}")


class _Node:
    def run(self, *work) -> float:
        return timed_rounds(*work)


if __name__ == "__main__":
    main()
