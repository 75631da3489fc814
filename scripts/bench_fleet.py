"""Benchmark: time per broadcast round of the Flower-on-Ray fleet against the plain loop on every core.

The fleet: 100 devices (``--devices``), each receiving the model over its AWGN link, decoding it,
measuring the reconstruction error and evaluating 100 MNIST images (broadcast, one strategy, q8,
DeepCNN width 32). The baseline is the same per-device work with no Flower or Ray
(scripts/plain_loop.py) in a process pool of every core: once with each device evaluating alone
(the loop as written before the fleet shared evaluations) and once sharing each distinct received
model's evaluation as the fleet's nodes do (the same work as the fleet). Prints seconds per round
(steady state: the rounds after the first, which includes starting Ray and building every
worker's world) and the ratios, with the machine and its load. Not a test.

    .venv/bin/python scripts/bench_fleet.py [--devices 100] [--rounds 3] [--workers N] [--dataset mnist]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def bench_config(devices: int, rounds: int, dpn: int | None, workers: int | None, dataset: str):
    from testbed.config import load_config

    overrides = [
        "name=bench", f"rounds={rounds}", f"fleet.devices={devices}", "fleet.link.model=awgn",
        "fleet.link.snr_db={uniform: [6, 20]}", "data.test_per_device=100", f"data.dataset={dataset}",
        "model.width=32", "model.train.train_subset=2000", "model.train.epochs=1",
        "strategies=[{label: q8, strategy: quantise, bits: 8}]",
        f"engine.devices_per_node={'null' if dpn is None else dpn}",
    ]
    if workers:
        overrides.append(f"engine.num_workers={workers}")
    return load_config(REPO / "configs" / "tiny.yaml", overrides)


def prepared(config):
    """The experiment prepared in this process (central models trained or from the cache)."""
    from testbed.orchestrator import Experiment

    experiment = Experiment(config, Path(tempfile.mkdtemp(prefix="bench-loop-")), progress=False,
                            config_path=REPO / "configs" / "tiny.yaml")
    experiment.prepare()
    return experiment


def round_times(run_dir: Path) -> list[float]:
    """Seconds per round from a run's log."""
    times = []
    for line in (run_dir / "run.log").read_text().splitlines():
        if " done in " in line and line.split(" INFO ")[-1].startswith("round "):
            times.append(float(line.rsplit(" done in ", 1)[1].split()[0]))
    return times


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min)"


def steady(times: list[float]) -> float:
    return sum(times[1:]) / max(1, len(times) - 1) if len(times) > 1 else times[0]


def main() -> None:
    from plain_loop import run_pool

    from testbed.engine import cohort_size, machine_cpus
    from testbed.runner import run_experiment

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--devices-per-node", type=int, default=None, help="default: automatic")
    parser.add_argument("--workers", type=int, default=None, help="default: every CPU")
    parser.add_argument("--dataset", default="mnist", help="mnist (needs $TESTBED_DATA_DIR) or mnist-sample")
    args = parser.parse_args()
    workers = args.workers or machine_cpus()
    config = bench_config(args.devices, args.rounds, args.devices_per_node, workers, args.dataset)
    print(f"machine: {platform.platform()}, {machine_cpus()} CPUs, torch {torch.__version__}; {load()}")
    print(f"fleet: {args.devices} devices x {config.data.test_per_device} {args.dataset} images, deepcnn width "
          f"{config.model.width}, q8 broadcast, {workers} workers, {cohort_size(args.devices, config.engine)} devices per node")
    experiment = prepared(config)
    rounds = list(range(1, args.rounds + 1))
    alone = run_pool(experiment, rounds, workers, share=False)
    shared = run_pool(experiment, rounds, workers, share=True)
    experiment.finish()
    out = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    fleet = round_times(run_experiment(config, out, progress=False))
    rows = [("plain loop, every core, each device alone", alone), ("plain loop, every core, shared evaluation", shared),
            ("Flower on Ray", fleet)]
    for name, times in rows:
        print(f"{name:42s} s per round: {', '.join(f'{t:.2f}' for t in times)} (steady {steady(times):.2f})")
    print(f"ratio fleet / plain loop with the same work (shared evaluation): {steady(fleet) / steady(shared):.2f}")
    print(f"ratio fleet / plain loop with each device alone:                 {steady(fleet) / steady(alone):.2f}")
    print(f"after: {load()}; fleet run folder {out}")


if __name__ == "__main__":
    main()
