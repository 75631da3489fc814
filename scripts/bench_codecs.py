"""Encode/decode time and size of every compression strategy on a 300k and a 10M conv net.

Usage: .venv/bin/python scripts/bench_codecs.py [--repeats 3] [--sizes small,large]

Times are the best of ``--repeats`` runs of the full path a link sees:
encode = strategy.encode + Payload.to_bytes, decode = strategy.read (parse
against the receiver's schema) + strategy.decode. "framing" is the payload's
header and checksum, in bytes. Weights are drawn N(0, 2/fan_in) (He), a stand-in for
trained weights with a bell-shaped distribution. Goal on a 2-core CPU: every
strategy under 0.5 s each way on the 10M model; rANS within 0.5% of the
empirical entropy of the symbols it codes.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch
from torch import nn

from strategies import entropy
from strategies.quantiser import quantise
from strategies.base import is_conv_kernel, tensor_of_segment
from strategies.registry import build
from testbed.models.symmetric import make_symmetric, strip_symmetric

WIDTHS = {"small": (32, 64, 128), "large": (192, 384, 768)}

SYM = {"strategy": "symmetry", "group": "central_skew", "bits": 8}
PRUNE = {"strategy": "prune", "match": "central_skew", "bits": 8}
STRATEGIES = [
    ("raw fp32", {"strategy": "raw"}, "plain"),
    ("raw fp16", {"strategy": "raw", "dtype": "float16"}, "plain"),
    ("quantise 8", {"strategy": "quantise", "bits": 8}, "plain"),
    ("quantise 4", {"strategy": "quantise", "bits": 4}, "plain"),
    ("quantise 6 (generic bit-packing)", {"strategy": "quantise", "bits": 6}, "plain"),
    ("quantise 8 per-channel", {"strategy": "quantise", "bits": 8, "per_channel": True}, "plain"),
    ("quantise 8 + rANS", {"strategy": "quantise", "bits": 8, "entropy": True}, "plain"),
    ("symmetry central_skew dof 8", {**SYM, "mode": "dof"}, "sym"),
    ("symmetry central_skew full+project 8", {**SYM, "mode": "full+project"}, "sym"),
    ("symmetry central_skew posthoc 8", {**SYM, "mode": "posthoc"}, "plain"),
    ("prune magnitude match central_skew 8", PRUNE, "plain"),
    ("prune random match central_skew 8", {**PRUNE, "method": "random"}, "plain"),
]


def conv_net(widths: tuple[int, int, int], classes: int = 10) -> nn.Sequential:
    """VGG-like: two 3x3 conv-BN-ReLU per stage, three stages, global pool, one linear layer."""
    layers: list[nn.Module] = []
    c_in = 3
    for stage, width in enumerate(widths):
        for _ in range(2):
            layers += [nn.Conv2d(c_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            c_in = width
        layers.append(nn.MaxPool2d(2) if stage < len(widths) - 1 else nn.AdaptiveAvgPool2d(1))
    layers += [nn.Flatten(), nn.Linear(c_in, classes)]
    net = nn.Sequential(*layers)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=gen)
    return net


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def rans_stats(state: dict[str, torch.Tensor], bits: int) -> tuple[int, float, float, float]:
    """Symbols, rANS bits/symbol (stream only), with histogram, empirical entropy, over all float tensors."""
    symbols = stream_bits = side_bits = entropy_total = 0.0
    for tensor in state.values():
        if not tensor.dtype.is_floating_point or tensor.numel() < 1024:
            continue
        codes, _, _ = quantise(tensor.numpy().reshape(1, -1), bits)
        histogram, stream = entropy.encode(codes)
        symbols += codes.size
        stream_bits += 8 * len(stream)
        side_bits += 8 * len(histogram)
        entropy_total += entropy.entropy_bits(codes)
    return int(symbols), stream_bits / symbols, (stream_bits + side_bits) / symbols, entropy_total / symbols


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="small,large")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs (load average {load}); python {platform.python_version()}, "
          f"torch {torch.__version__}, numpy {np.__version__}\n")
    for size in args.sizes.split(","):
        net = conv_net(WIDTHS[size]).eval()
        plain = {k: v.detach().clone() for k, v in net.state_dict().items()}
        symmetric = strip_symmetric(make_symmetric(net, "central_skew")).state_dict()
        symmetric = {k: v.detach().clone() for k, v in symmetric.items()}
        params = sum(v.numel() for v in plain.values() if v.dtype.is_floating_point)
        kernels = {k for k, v in plain.items() if is_conv_kernel(v)}
        conv = sum(plain[k].numel() for k in kernels)
        print(f"### {size}: {params:,} float values ({conv:,} in 3x3 conv kernels)\n")
        print("| strategy | bytes | framing | bits/param | conv kernels: bits/weight | encode s | decode s |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for label, spec, which in STRATEGIES:
            strategy = build(spec)
            state = symmetric if which == "sym" else plain
            t_enc, wire = best_time(lambda: strategy.encode(state).to_bytes(), args.repeats)
            t_dec, decoded = best_time(lambda: strategy.decode(strategy.read(wire, plain), plain), args.repeats)
            assert decoded.keys() == plain.keys()
            # conv-kernel bytes: their segments (values, side information, positions), framing excluded
            payload = strategy.read(wire, plain)
            kernel_bytes = sum(seg.nbytes for seg in payload.segments if tensor_of_segment(seg.name) in kernels)
            print(f"| {label} | {len(wire):,} | {payload.framing_nbytes} | {8 * len(wire) / params:.3f} "
                  f"| {8 * kernel_bytes / conv:.3f} | {t_enc:.3f} | {t_dec:.3f} |")
        symbols, stream, with_side, ent = rans_stats(plain, 8)
        print(f"\nrANS on 8-bit codes ({symbols:,} symbols, per tensor): {stream:.5f} bits/symbol "
              f"(stream), {with_side:.5f} with histograms; empirical entropy {ent:.5f}; "
              f"overhead {100 * (stream / ent - 1):.3f}% ({100 * (with_side / ent - 1):.3f}% with histograms)\n")


if __name__ == "__main__":
    main()
