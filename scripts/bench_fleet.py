"""Benchmark: time per broadcast round of the Flower-on-Ray fleet against a plain PyTorch loop.

The fleet: 100 devices, each receiving the model over its AWGN link, decoding
it, measuring the reconstruction error and evaluating 100 MNIST images
(broadcast mode, one strategy). The baseline is a single-process loop doing the
same per-device work (link + decode + NMSE + evaluation) with no Flower or Ray.
Reports the steady-state seconds per round (rounds after the first, which
includes starting Ray and the workers) and the ratio. Not a test: it prints
its numbers and the machine.

    .venv/bin/python scripts/bench_fleet.py [--devices 100] [--rounds 4] [--devices-per-node 50]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def bench_config(devices: int, rounds: int, dpn: int, workers: int | None, dataset: str):
    from testbed.config import load_config

    overrides = [
        "name=bench", f"rounds={rounds}", f"fleet.devices={devices}", "fleet.link.model=awgn",
        "fleet.link.snr_db={uniform: [6, 20]}", "data.test_per_device=100", f"data.dataset={dataset}",
        "model.width=32", "model.train.train_subset=2000", "model.train.epochs=1",
        "strategies=[{label: q8, strategy: quantise, bits: 8}]", f"engine.devices_per_node={dpn}",
    ]
    if workers:
        overrides.append(f"engine.num_workers={workers}")
    return load_config(REPO / "configs" / "tiny.yaml", overrides)


def plain_loop(config, rounds: int) -> list[float]:
    """The same per-device work in one process: seconds per round."""
    from strategies.registry import build
    from testbed import metrics
    from testbed.data import device_split, load_dataset
    from testbed.fleet import Fleet
    from testbed.rng import derive_rng
    from testbed.training import central_model, evaluate, model_template

    torch.set_num_threads(1)
    dataset = load_dataset(config.data.dataset, config.data.dir)
    strategy = build(config.strategy_specs()["q8"])
    reference = central_model(strategy, config.model, dataset, config.seed, progress=False).state_dict()
    payload = strategy.encode(reference)
    template_model = model_template(strategy, config.model, dataset.input_shape, dataset.num_classes, config.seed)
    template = template_model.state_dict()
    power = metrics.float_power(reference)
    fleet = Fleet.from_config(config.fleet, config.seed)
    splits = {d.device_id: device_split(dataset, config.data, len(fleet), d.partition, config.seed) for d in fleet}
    times = []
    for round_ in range(1, rounds + 1):
        start = time.perf_counter()
        for device in fleet.available(round_, config.seed):
            tx = fleet.link(device.device_id).transmit(payload, derive_rng(config.seed, "link", round_, device.device_id, "down"))
            if tx.received is None:
                continue
            received = strategy.decode(tx.received, template)
            metrics.squared_error(received, reference) / power
            template_model.load_state_dict(received)
            idx = splits[device.device_id].test_idx
            evaluate(template_model, dataset.test_x[idx], dataset.test_y[idx])
        times.append(time.perf_counter() - start)
    return times


def fleet_rounds(config) -> list[float]:
    """Run the experiment through Flower on Ray; seconds per round from the run log."""
    from testbed.runner import run_experiment

    out = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    run_experiment(config, out, progress=False)
    times = []
    for line in (out / "run.log").read_text().splitlines():
        if " done in " in line and line.split(" INFO ")[-1].startswith("round "):
            times.append(float(line.rsplit(" done in ", 1)[1].split()[0]))
    with open(out / "metrics.csv") as f:
        rows = sum(1 for _ in csv.reader(f)) - 1
    print(f"  fleet run folder {out}: {rows} rows")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--devices-per-node", type=int, default=50)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--dataset", default="mnist", help="mnist (needs $TESTBED_DATA_DIR) or mnist-sample")
    args = parser.parse_args()
    config = bench_config(args.devices, args.rounds, args.devices_per_node, args.workers, args.dataset)
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"fleet: {args.devices} devices x {config.data.test_per_device} {args.dataset} images, "
          f"deepcnn width {config.model.width}, q8 broadcast, {args.devices_per_node} devices per node")
    loop = plain_loop(config, args.rounds)
    fleet = fleet_rounds(config)
    steady_loop = sum(loop[1:]) / max(1, len(loop) - 1)
    steady_fleet = sum(fleet[1:]) / max(1, len(fleet) - 1)
    print(f"plain PyTorch loop, s per round: {', '.join(f'{t:.2f}' for t in loop)} (steady {steady_loop:.2f})")
    print(f"Flower on Ray,      s per round: {', '.join(f'{t:.2f}' for t in fleet)} (steady {steady_fleet:.2f})")
    print(f"ratio fleet / loop (steady state): {steady_fleet / steady_loop:.2f}")


if __name__ == "__main__":
    main()
