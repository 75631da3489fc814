"""Feature-codec speed and size on one CPU core for a 64 x 56 x 56 float tensor.

Usage: python scripts/bench_features.py [--repeats 20] [--out docs/results/split_bench.json] [--only rans-features]

Two tensors of 64 x 56 x 56 (the size of a ResNet-18 stage-1 map of a 224 x 224 input):
``random``: |N(0, 1)| with half the values set to 0 (ReLU-like, zeros independent);
``trained``: real features, the block1 output (conv-BN-ReLU-max pooling) of a DeepCNN of
width 64 trained for one epoch on 2,000 MNIST-sample images, on a digit upsampled to
112 x 112 (the checkpoint cache keeps the model). Times are the median of ``--repeats``
runs (and their minimum, closer to an idle core on a shared machine) of the full path with one
torch thread: encode = codec.encode + Payload.to_bytes,
decode = codec.read + codec.decode. ``vs entropy``: the payload's bits over the empirical
entropy of the quantised symbols plus the side information the codec sends (everything
but the rANS streams). ``rANS streams alone``: constriction decoding the two streams and
nothing else (the decoder's floor). The load average is recorded. The cost-model table gives the predicted and measured size of the
coded segments at every width. With a CUDA GPU, the torch path of quantisation and the
sparse step is timed on it too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from strategies.entropy import entropy_bits
from testbed.features import build_codec
from testbed.features.quantise import quantise
from testbed.features.rans import WIDTHS, occupancy, predict
from testbed.metrics import machine_info

SHAPE = (1, 64, 56, 56)
CODECS = [
    ("float32", {"codec": "float"}),
    ("float16", {"codec": "float", "dtype": "float16"}),
    ("quantised 8", {"codec": "quantised", "bits": 8}),
    ("quantised 4", {"codec": "quantised", "bits": 4}),
    ("zlib 8 (level 9)", {"codec": "zlib", "bits": 8}),
    ("zstd 8 (level 22)", {"codec": "zstd", "bits": 8}),
    ("zstd 4 (level 22)", {"codec": "zstd", "bits": 4}),
    *((f"rans-features {b}", {"codec": "rans-features", "bits": b}) for b in (2, 4, 6, 8)),
]


def random_features() -> torch.Tensor:
    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal(SHAPE)).astype(np.float32)
    x[rng.random(SHAPE) < 0.5] = 0.0
    return torch.from_numpy(x)


def trained_features() -> torch.Tensor:
    from strategies.registry import build
    from testbed.config import DataConfig, ModelConfig
    from testbed.data import load_data
    from testbed.models.split import split_model
    from testbed.recipes import TrainConfig
    from testbed.training import central_model

    data = load_data(DataConfig(dataset="mnist-sample"), ".")
    cfg = ModelConfig(arch="deepcnn", width=64, train=TrainConfig(epochs=1, batch_size=64, train_subset=2000))
    model = central_model(build({"strategy": "raw"}), cfg, data, 0, progress=False)
    head, _ = split_model(model, "block1")
    digit = torch.nn.functional.interpolate(data.test_x[:1], size=(112, 112), mode="bilinear", align_corners=False)
    with torch.no_grad():
        return head(digit).contiguous()


def timed(fn, repeats: int) -> tuple[float, object]:
    ms, out = timed_min(fn, repeats)
    return ms[0], out


def timed_min(fn, repeats: int) -> tuple[tuple[float, float], object]:
    """((median, minimum) in ms, last result): on a shared machine the minimum is the closer to an idle core."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return (1e3 * statistics.median(times), 1e3 * min(times)), out


def rans_alone(payload, count: int, bits: int):
    """A function decoding only the two rANS streams with constriction (the floor of the decoder)."""
    import constriction

    from strategies.entropy import decode_histogram

    width = 2 ** payload["features/q"].data[6]
    jobs = []
    for name, n, alphabet in (("features/mask", 8 * -(-count // 8) // width, 1 << width), ("features/values", None, 1 << bits)):
        _, counts, _ = decode_histogram(payload[f"{name}/hist"].data, alphabet)
        words = np.frombuffer(payload[name].data, dtype="<u4").astype(np.uint32)
        jobs.append((words, counts, int(counts.sum()) if n is None else n))

    def run():
        for words, counts, n in jobs:
            model = constriction.stream.model.Categorical(counts.astype(np.float64), perfect=False)
            constriction.stream.stack.AnsCoder(words).decode(model, n)
    return run


def bench(x: torch.Tensor, repeats: int, only: str = "") -> dict:
    rows = []
    for label, spec in CODECS:
        if not label.startswith(only):
            continue
        codec = build_codec(spec)
        (enc_ms, enc_min), wire = timed_min(lambda: codec.encode(x).to_bytes(), repeats)
        (dec_ms, dec_min), _ = timed_min(lambda: codec.decode(codec.read(wire, x.shape), x.shape), repeats)
        payload = codec.read(wire, x.shape)
        row = {"codec": label, "bytes": len(wire), "bits_per_element": 8 * len(wire) / x.numel(),
               "ratio_vs_fp32": (9 + 4 * x.numel()) / len(wire), "encode_ms": enc_ms, "decode_ms": dec_ms,
               "encode_min_ms": enc_min, "decode_min_ms": dec_min}
        if spec["codec"] == "rans-features":
            row["rans_decode_ms"], row["rans_decode_min_ms"] = timed_min(rans_alone(payload, x.numel(), codec.bits), repeats)[0]
            streams = payload["features/mask"].nbytes + payload["features/values"].nbytes
            reference = entropy_bits(codec.codes(x)) + 8 * (len(wire) - streams)
            row["vs_entropy"] = 8 * len(wire) / reference
            row["width"] = 2 ** payload["features/q"].data[6]
            q = quantise(x, codec.bits)
            packed, values = occupancy(q)
            predicted = predict(packed, values, codec.bits)
            row["cost_model"] = []
            for width in WIDTHS:
                fixed = build_codec({**spec, "width": width}).encode(x)
                row["cost_model"].append({"width": width, "predicted": predicted[width]["bytes"],
                                          "measured": fixed.nbytes - fixed.framing_nbytes,
                                          "symbols": predicted[width]["symbols"]})
        rows.append(row)
    return {"zeros": float((x == 0).float().mean()), "codecs": rows}


def gpu_times(x: torch.Tensor, repeats: int) -> dict | None:
    if not torch.cuda.is_available():
        return None
    x = x.cuda()
    out = {}
    for bits in (4, 8):
        def step():
            q = quantise(x, bits)
            result = occupancy(q)  # brings the patterns and the non-zero codes to the CPU
            return result
        step()
        out[bits], _ = timed(step, repeats)
    return {"device": torch.cuda.get_device_name(0), "quantise_and_sparse_ms": out}


def markdown(results: dict) -> str:
    load = results["load_average_1min"]
    lines = [f"Load average (1 min) {load['before']:.1f} before, {load['after']:.1f} after; "
             f"{results['repeats']} runs each; one torch thread.", ""]
    for name, r in results["tensors"].items():
        lines += [f"**{name}** features ({100 * r['zeros']:.0f}% zeros):", "",
                  "| codec | bytes | bits/element | ratio vs fp32 | encode ms (median / min) | decode ms (median / min) "
                  "| rANS streams alone ms (median / min) | vs entropy | width |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for c in r["codecs"]:
            ve = f"{c['vs_entropy']:.4f}" if "vs_entropy" in c else ""
            alone = f"{c['rans_decode_ms']:.2f} / {c['rans_decode_min_ms']:.2f}" if "rans_decode_ms" in c else ""
            lines.append(f"| {c['codec']} | {c['bytes']:,} | {c['bits_per_element']:.3f} | {c['ratio_vs_fp32']:.1f} | "
                         f"{c['encode_ms']:.2f} / {c['encode_min_ms']:.2f} | {c['decode_ms']:.2f} / {c['decode_min_ms']:.2f} "
                         f"| {alone} | {ve} | {c.get('width', '')} |")
        lines += ["", "Cost model (coded segments, bytes; predicted / measured; rANS symbols):", "",
                  "| codec | " + " | ".join(f"N = {w}" for w in WIDTHS) + " |", "|---|" + "---|" * len(WIDTHS)]
        for c in r["codecs"]:
            if "cost_model" in c:
                cells = [f"{m['predicted']:,} / {m['measured']:,} ({m['symbols']:,})" for m in c["cost_model"]]
                lines.append(f"| {c['codec']} | " + " | ".join(cells) + " |")
        lines.append("")
    gpu = results["gpu"]
    lines.append("GPU: not measured (no CUDA device)." if gpu is None else
                 f"GPU ({gpu['device']}): quantisation + sparse step " +
                 ", ".join(f"{b} bits {ms:.3f} ms" for b, ms in gpu["quantise_and_sparse_ms"].items()))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("docs/results/split_bench.json"))
    parser.add_argument("--only", default="", help="only the codecs whose label starts so (e.g. rans-features)")
    args = parser.parse_args()
    tensors = {"random": random_features(), "trained": trained_features()}
    torch.set_num_threads(1)  # the timings are of one core (training above may use more)
    load_before = os.getloadavg()
    results = {"machine": machine_info(), "shape": list(SHAPE), "repeats": args.repeats,
               "tensors": {name: bench(x, args.repeats, args.only) for name, x in tensors.items()},
               "gpu": gpu_times(tensors["random"], args.repeats)}
    results["load_average_1min"] = {"before": load_before[0], "after": os.getloadavg()[0]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    text = markdown(results)
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
