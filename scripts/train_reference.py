"""Train the reference models on full MNIST and report accuracy, time and size.

    .venv/bin/python scripts/train_reference.py [--data-dir DIR] [--cache-dir DIR] [--out FILE]

Three DeepCNNs, each trained on the 60,000 MNIST training images and tested on
the 10,000 test images: plain, central-skew symmetric (strategy ``symmetry``),
and MonoCNN (strategy ``monocnn``). Prints one line per model and the machine,
and writes the figures as JSON (``--out``). Training goes through the
checkpoint cache; ``--cache-dir`` defaults to a fresh temporary folder so that
the times printed are real training times (pass a folder to reuse models).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from strategies.registry import build
from testbed.config import ModelConfig
from testbed.data import load_dataset
from testbed.models import parameter_counts
from testbed.training import central_model, evaluate

# The reference training recipe (our choice) is the config's default for central training:
# 2 epochs of Adam, batch 128, one-cycle schedule peaking at 3e-3.
RECIPE = ModelConfig().train
MODELS = {
    "deepcnn": ({"strategy": "raw"}, RECIPE),
    "deepcnn-central_skew": ({"strategy": "symmetry", "group": "central_skew", "mode": "dof"}, RECIPE),
    "deepcnn-monocnn": ({"strategy": "monocnn", "seeds_per_layer": 8}, RECIPE),
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": cpu_model(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15": list(os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder holding mnist/ (default: $TESTBED_DATA_DIR)")
    parser.add_argument("--cache-dir", default=None, help="checkpoint cache (default: a fresh temporary folder)")
    parser.add_argument("--out", default="reference_models.json", help="where to write the figures (JSON)")
    parser.add_argument("--only", nargs="*", choices=list(MODELS), help="train only these models")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    data = load_dataset("mnist", args.data_dir, download=False)
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="testbed-reference-")
    print(f"dataset: {data.description}; checkpoints in {cache_dir}")
    start_machine = machine()
    results = []
    for label in args.only or list(MODELS):
        spec, recipe = MODELS[label]
        strategy = build(spec)
        cfg = ModelConfig(arch="deepcnn", train=recipe)
        load_before = os.getloadavg()[0]
        wall = time.perf_counter()
        model = central_model(strategy, cfg, data, args.seed, cache_dir=cache_dir, progress=sys.stdout.isatty())
        wall = time.perf_counter() - wall
        info = model.checkpoint_info
        accuracy, loss = evaluate(model, data.test_x, data.test_y)
        payload = strategy.encode(model.state_dict())
        row = {
            "model": label,
            "strategy": spec,
            "training_key": strategy.training_key(),
            "recipe": recipe.model_dump(),
            "test_accuracy": accuracy,
            "test_loss": loss,
            "train_seconds": info["train_seconds"],
            "from_cache": info["cached"],
            "wall_seconds": wall,
            "parameters": parameter_counts(model)["total"],
            "payload_bytes_fp32": payload.nbytes,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg()[0],
        }
        results.append(row)
        print(
            f"{label:22s} accuracy {accuracy:.4f}  train {info['train_seconds']:6.1f} s"
            f"{' (cached)' if info['cached'] else ''}  parameters {row['parameters']:,}  "
            f"payload {payload.nbytes:,} B  load {load_before:.1f}->{row['load_average_after']:.1f}"
        )
    report = {"machine": start_machine, "machine_after": machine(), "dataset": data.description, "models": results}
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"machine: {json.dumps(start_machine)}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
