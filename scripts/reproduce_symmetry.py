"""Reproduce the kernel-symmetry study (arXiv:2604.17371) on real MNIST, then make its figures.

One command runs the whole study (two fleet runs: digital BPSK/AWGN links and analog links)
and writes the figures and tables of docs/RESULTS.md::

    TESTBED_DATA_DIR=/path/to/data TESTBED_CACHE_DIR=/path/to/cache \\
        .venv/bin/python scripts/reproduce_symmetry.py --out runs/symmetry-study

Re-running resumes: a run whose summary.json says every round is done is skipped, an
interrupted one is resumed, and the central models come from the checkpoint cache.
``--figures-only`` makes the figures and tables from existing run folders without running
anything; ``--tiny`` is a smoke test (few devices, one round, small training set, a subset of
the strategies) into its own folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from strategies.base import is_conv_kernel  # noqa: E402
from testbed.config import ExperimentConfig, apply_overrides, validate_tree

STUDY_CONFIGS = {
    "digital": ROOT / "configs" / "study" / "symmetry_digital.yaml",
    "analog": ROOT / "configs" / "study" / "symmetry_analog.yaml",
}
RESULTS = ROOT / "docs" / "results"
GROUPS = (
    "mirror_h", "mirror_v", "central", "central_skew", "mirror_hv",
    "diagonal", "anti_diagonal", "skew_diagonal", "rot90", "dihedral",
)
BITS = (2, 4, 6, 8)

# The smoke test: one device per SNR, one round, a small training set, and the
# strategies below (4-bit digital; every analog family).
TINY_OVERRIDES = [
    "rounds=1",
    "data.test_per_device=50",
    "engine.devices_per_node=4",
    "model.train.train_subset=2000",
    "model.train.epochs=1",
]
TINY_LABELS = re.compile(
    r"^(fp32|q4|dof-(central|central_skew|dihedral)(-4)?|fullproj-central_skew(-4)?|posthoc-central_skew(-4)?"
    r"|prune-(mag|rand)(-ft)?(-4)?|prune-mag-ft-posexp-4|monocnn(-4)?)$"
)

# Okabe-Ito palette, as the project's report uses.
OKABE_ITO = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999"]
# Ten groups: the palette without black, plus two (black is kept for the no-symmetry reference).
GROUP_COLORS = OKABE_ITO[1:] + ["#882255", "#44AA99"]


def group_name(group: str) -> str:
    # On a 3x3 kernel rot90 and dihedral have the same orbits: the same subspace and model.
    return group + (" (= dihedral on 3x3)" if group == "rot90" else " (= rot90 on 3x3)" if group == "dihedral" else "")


# ---- the configs ---------------------------------------------------------------------


def study_config(kind: str, tiny: bool = False, overrides: list[str] = ()) -> ExperimentConfig:
    """The study's config ``kind`` ("digital" or "analog"), optionally cut down to the smoke test."""
    path = STUDY_CONFIGS[kind]
    tree = yaml.safe_load(path.read_text())
    if tiny:
        tree["strategies"] = [s for s in tree["strategies"] if TINY_LABELS.match(s["label"])]
        tree["name"] = tree["name"] + "-tiny"
        apply_overrides(tree, list(TINY_OVERRIDES))
        tree["fleet"]["devices"] = len(tree["fleet"]["link"]["snr_db"])  # one device per SNR
    apply_overrides(tree, list(overrides))
    return validate_tree(tree, str(path))


def describe_label(label: str) -> dict:
    """What a study label means: family, group, mode, bits (None: float32)."""
    bits = None
    match = re.search(r"-(\d+)$", label)
    base = label
    if match and not label.startswith("q"):
        bits, base = int(match.group(1)), label[: match.start()]
    if label.startswith("q") and label[1:].isdigit():
        return {"family": "quantise", "group": "", "bits": int(label[1:])}
    if label == "fp32":
        return {"family": "fp32", "group": "", "bits": None}
    for prefix in ("dof", "fullproj", "posthoc"):
        if base.startswith(prefix + "-"):
            return {"family": prefix, "group": base[len(prefix) + 1:], "bits": bits}
    return {"family": base, "group": "central_skew" if base.startswith("prune") else "", "bits": bits}


# ---- running ---------------------------------------------------------------------------


def run_study(out: Path, tiny: bool, kinds: list[str], overrides: list[str]) -> dict[str, float]:
    """Run (or resume, or skip when done) each study run; returns the wall seconds of each."""
    from testbed.runner import run_experiment
    from testbed.sweep import point_state

    walls = {}
    for kind in kinds:
        config = study_config(kind, tiny, overrides)
        run_dir = out / kind
        state = point_state(run_dir, config)
        print(f"[{kind}] {len(config.strategies)} strategies, {config.fleet.devices} devices, "
              f"{config.rounds} rounds: {state}", flush=True)
        start = time.perf_counter()
        if state != "done":
            run_experiment(config, run_dir, resume=state == "partial", progress=True, config_path=STUDY_CONFIGS[kind])
        walls[kind] = time.perf_counter() - start
        print(f"[{kind}] {walls[kind]:.0f} s", flush=True)
    return walls


# ---- statistics ------------------------------------------------------------------------


def t_quantile(n: int) -> float:
    """Two-sided 95% Student-t quantile for n samples (n - 1 degrees of freedom)."""
    if n < 2:
        return float("nan")
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, n - 1))
    except ImportError:  # scipy is optional; the normal quantile is close for n >= 30
        return 1.96


def power_mean_db(values) -> float:
    """Mean on the linear scale, in dB (-inf rows are exact: zero error; NaN rows count as the worst)."""
    # NaN: the received model held inf/NaN weights (bit errors in float32 exponents): the worst.
    values = np.nan_to_num(np.asarray(values, dtype=float), nan=np.inf)
    if len(values) == 0:
        return float("nan")
    with np.errstate(over="ignore", divide="ignore"):
        linear = np.power(10.0, np.clip(values, -400, 300) / 10.0).mean()
    return float(10 * np.log10(linear)) if linear > 0 else float("-inf")


def study_rows(run) -> pd.DataFrame:
    """The run's per-device rows (the wide view) in the study's terms: ``strategy`` is the label,
    ``snr_db`` the downlink's, ``failed`` the one definition of a failed device."""
    from testbed.metrics import failed

    rows = run.wide.rename(columns={"strategy": "strategy_kind", "label": "strategy", "snr_db_down": "snr_db"})
    rows["failed"] = failed(rows)
    return rows


def snr_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per (strategy, SNR): samples, failures, mean accuracy and its 95% CI, NMSE, bytes.

    A sample is one delivered device-round. Failed deliveries carry no accuracy: they are
    counted in ``failed`` and left out of the mean (the study's links deliver every time).
    """
    rows = []
    for (label, snr), g in metrics.groupby(["strategy", "snr_db"], sort=False):
        ok = g[~g["failed"]]
        acc = ok["accuracy"].to_numpy(dtype=float)
        n = len(acc)
        sd = float(acc.std(ddof=1)) if n > 1 else float("nan")
        half = t_quantile(n) * sd / math.sqrt(n) if n > 1 else float("nan")
        rows.append({
            "strategy": label,
            **describe_label(label),
            "snr_db": float(snr),
            "samples": n,
            "failed": int(g["failed"].sum()),
            "acc_mean": float(acc.mean()) if n else float("nan"),
            "acc_ci95": half,
            "acc_sd": sd,
            "acc_p10": float(np.percentile(acc, 10)) if n else float("nan"),
            "nmse_db": power_mean_db(ok["recon_nmse_db"]),
            "nmse_median_db": float(np.median(np.nan_to_num(ok["recon_nmse_db"].to_numpy(dtype=float), nan=np.inf))) if n else float("nan"),
            "nmse_channel_db": power_mean_db(ok["recon_nmse_channel_db"]),
            "bytes_down_mean": float(g["bytes_down"].mean()),
            "bytes_payload": float(g["bytes_down_payload"].iloc[0]),
            "bit_errors_mean": float(g["bit_errors_down"].mean()),
            "repetition_mean": float(g["repetition_down"].mean()) if "repetition_down" in g else float("nan"),
        })
    return pd.DataFrame(rows)


def strategy_summary(run) -> pd.DataFrame:
    """Per strategy: payload bytes, whole-model and conv-only ratios, central accuracy, NMSE of compression."""
    rows = []
    summary = run.summary.get("strategies", {})
    for label, payload in run.payloads.items():
        m = study_rows(run)
        m = m[m["strategy"] == label]
        s = summary.get(label, {})
        rows.append({
            "strategy": label,
            **describe_label(label),
            "payload_bytes": payload.get("total_bytes"),
            "protected_bytes": payload.get("protected_bytes"),
            "model_ratio": payload.get("model_ratio"),
            "conv_ratio": payload.get("conv_ratio"),
            "central_accuracy": s.get("central_accuracy"),
            "nmse_compression_db": power_mean_db(m["recon_nmse_compression_db"]),
            "bytes_down_mean": float(m["bytes_down"].mean()),
            "acc_mean_all_snr": float(m.loc[~m["failed"], "accuracy"].mean()),
            "failed": int(m["failed"].sum()),
        })
    return pd.DataFrame(rows)


def models_table(run_dir: Path) -> pd.DataFrame:
    """One row per trained model (training key): test accuracy and training time, from the checkpoint cache."""
    from strategies.registry import build
    from testbed.checkpoints import checkpoint_key, checkpoint_path, load_checkpoint
    from testbed.config import load_config
    from testbed.data import load_dataset
    from testbed.training import training_parts

    config = load_config(run_dir / "config.yaml")
    dataset = load_dataset(config.data.dataset, config.data.dir)
    rows = {}
    for spec in config.strategy_specs().values():
        strategy = build(spec)
        key = strategy.training_key()
        if key in rows:
            rows[key]["labels"] += 1
            continue
        found = load_checkpoint(checkpoint_path(checkpoint_key(training_parts(strategy, config.model, dataset, config.seed))))
        meta = found[1] if found else {}
        rows[key] = {"training_key": key, "labels": 1, "test_accuracy": meta.get("test_accuracy"),
                     "train_seconds": meta.get("train_seconds"), "threads": meta.get("threads")}
    return pd.DataFrame(list(rows.values()))


# ---- figures -----------------------------------------------------------------------------


def machine_line(runs: dict) -> str:
    """Where and how long: printed at the foot of every figure."""
    parts = [f"{kind}: {run.summary.get('wall_s', float('nan')):.0f} s fleet wall" for kind, run in runs.items()]
    mach = next(iter(runs.values())).summary.get("machine", {})
    cpus = mach.get("cpus", os.cpu_count())
    return (f"measured on {mach.get('platform', platform.platform())}, {cpus} CPUs, torch {mach.get('torch', '?')}, "
            f"flwr {mach.get('flwr', '?')}; " + "; ".join(parts))


def _foot(fig, text: str) -> None:
    fig.text(0.01, 0.005, text, fontsize=6, color="#555555", ha="left", va="bottom")


def _legend_on_filled(axes, **kwargs) -> None:
    """The legend on the last panel that has labelled lines."""
    for ax in reversed(list(axes)):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(**kwargs)
            return


def _errorline(ax, frame: pd.DataFrame, label: str, color: str, style: str = "-", marker: str = "o") -> None:
    f = frame.sort_values("snr_db")
    ax.errorbar(f["snr_db"], f["acc_mean"], yerr=f["acc_ci95"], label=label, color=color,
                linestyle=style, marker=marker, markersize=3, capsize=2, linewidth=1.2)


def _series(table: pd.DataFrame, label: str) -> pd.DataFrame:
    return table[table["strategy"] == label]


def fig_accuracy_vs_snr_bits(table: pd.DataFrame, foot: str, path: Path) -> None:
    """Digital: accuracy against Eb/N0, one panel per bit-width, the families of the study."""
    import matplotlib.pyplot as plt

    lines = [
        ("q{b}", "quantise (all 9 values)", OKABE_ITO[0], "-"),
        ("dof-central_skew-{b}", "DoF central_skew", OKABE_ITO[6], "-"),
        ("dof-central-{b}", "DoF central", OKABE_ITO[5], "-"),
        ("fullproj-central_skew-{b}", "full+project central_skew", OKABE_ITO[6], ":"),
        ("posthoc-central_skew-{b}", "posthoc central_skew", OKABE_ITO[7], "--"),
        ("prune-mag-{b}", "prune magnitude", OKABE_ITO[3], "-"),
        ("prune-mag-ft-{b}", "prune magnitude + fine-tune", OKABE_ITO[3], "--"),
        ("prune-rand-{b}", "prune random", OKABE_ITO[1], "-"),
        ("prune-rand-ft-{b}", "prune random + fine-tune", OKABE_ITO[1], "--"),
        ("prune-mag-ft-posexp-{b}", "prune mag. + ft, positions exposed", OKABE_ITO[8], "-."),
        ("monocnn-{b}", "MonoCNN (8 seeds/layer)", OKABE_ITO[2], "-"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(15, 4.2), sharey=True)
    for ax, b in zip(axes, BITS):
        for pattern, name, color, style in lines:
            f = _series(table, pattern.format(b=b))
            if len(f):
                _errorline(ax, f, name, color, style)
        ax.set_title(f"{b}-bit values, BPSK over AWGN")
        ax.set_xlabel("Eb/N0 (dB)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("device accuracy (mean, 95% CI)")
    axes[0].set_ylim(0, 1.02)
    _legend_on_filled(axes, fontsize=7, loc="lower right")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    _foot(fig, foot)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_groups_vs_snr(table: pd.DataFrame, summary: pd.DataFrame, foot: str, path: Path, bits_list=(4, 8)) -> None:
    """Digital: every symmetry group in dof mode, accuracy against Eb/N0."""
    import matplotlib.pyplot as plt

    colors = GROUP_COLORS
    fig, axes = plt.subplots(1, len(bits_list), figsize=(6 * len(bits_list), 4.2), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, b in zip(axes, bits_list):
        for i, g in enumerate(GROUPS):
            label = f"dof-{g}-{b}"
            f = _series(table, label)
            if not len(f):
                continue
            ratio = summary.loc[summary["strategy"] == label, "conv_ratio"]
            r = f" (conv {float(ratio.iloc[0]):.2f}x)" if len(ratio) else ""
            _errorline(ax, f, group_name(g) + r, colors[i % len(colors)], "-" if i < 5 else "--", "o" if g != "dihedral" else "x")
        f = _series(table, f"q{b}")
        if len(f):
            _errorline(ax, f, f"quantise {b}-bit (plain model, all 9 values)", "#000000", ":", "s")
        ax.set_title(f"DoF codec, every group, {b}-bit")
        ax.set_xlabel("Eb/N0 (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("device accuracy (mean, 95% CI)")
    axes[0].set_ylim(0, 1.02)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    _foot(fig, foot)
    fig.savefig(path, dpi=110)
    plt.close(fig)


FAMILY_STYLE = {
    "quantise": (OKABE_ITO[0], "s"),
    "dof": (OKABE_ITO[6], "o"),
    "fullproj": (OKABE_ITO[5], "D"),
    "posthoc": (OKABE_ITO[7], "v"),
    "prune-mag": (OKABE_ITO[3], "^"),
    "prune-mag-ft": (OKABE_ITO[3], "P"),
    "prune-rand": (OKABE_ITO[1], "^"),
    "prune-rand-ft": (OKABE_ITO[1], "P"),
    "prune-mag-ft-posexp": (OKABE_ITO[8], "X"),
    "monocnn": (OKABE_ITO[2], "*"),
    "fp32": ("#444444", "h"),
}


def fig_accuracy_vs_bytes(table: pd.DataFrame, foot: str, path: Path, snrs=(0.0, 2.5, 5.0, 10.0, 20.0)) -> None:
    """Digital: accuracy against bytes sent per device (payload + protection), at a few SNRs."""
    import matplotlib.pyplot as plt

    snrs = [s for s in snrs if s in set(table["snr_db"])]
    fig, axes = plt.subplots(1, len(snrs), figsize=(4.2 * len(snrs), 4.2), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, snr in zip(axes, snrs):
        t = table[(table["snr_db"] == snr)]
        for family, (color, marker) in FAMILY_STYLE.items():
            f = t[t["family"] == family]
            if family == "dof":  # central_skew highlighted; other groups small
                other = f[f["group"] != "central_skew"]
                ax.scatter(other["bytes_down_mean"] / 1e3, other["acc_mean"], s=10, color=color, alpha=0.35, marker=marker)
                f = f[f["group"] == "central_skew"]
            elif family in ("fullproj", "posthoc"):
                f = f[f["group"] == "central_skew"]
            if not len(f):
                continue
            f = f.sort_values("bytes_down_mean")
            ax.errorbar(f["bytes_down_mean"] / 1e3, f["acc_mean"], yerr=f["acc_ci95"], color=color, marker=marker,
                        linestyle="-" if family not in ("fp32",) else "none", linewidth=0.8, markersize=5,
                        capsize=2, label=family + (" central_skew" if family in ("dof", "fullproj", "posthoc") else ""))
        ax.set_xscale("log")
        ax.set_title(f"Eb/N0 = {snr:g} dB")
        ax.set_xlabel("kB sent per device and round (log)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("device accuracy (mean, 95% CI)")
    axes[0].set_ylim(0, 1.02)
    axes[-1].legend(fontsize=6.5, loc="lower right")
    fig.suptitle("Accuracy against bytes (points along a line: 2, 4, 6, 8 bits; faint dots: the other DoF groups)", fontsize=9)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    _foot(fig, foot)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_nmse_vs_snr(digital: pd.DataFrame | None, analog: pd.DataFrame | None, foot: str, path: Path) -> None:
    """Reconstruction NMSE (received vs float model, linear mean in dB) against SNR."""
    import matplotlib.pyplot as plt

    panels = []
    if digital is not None:
        panels += [(digital, b, f"digital, {b}-bit") for b in (4, 8)]
    if analog is not None:
        panels.append((analog, None, "analog, float32 amplitudes"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2))
    axes = np.atleast_1d(axes)
    for ax, (table, b, title) in zip(axes, panels):
        suffix = f"-{b}" if b else ""
        lines = [
            (f"q{b}" if b else "fp32", "quantise" if b else "fp32 (raw)", OKABE_ITO[0], "-"),
            (f"dof-central_skew{suffix}", "DoF central_skew", OKABE_ITO[6], "-"),
            (f"fullproj-central_skew{suffix}", "full+project central_skew", OKABE_ITO[6], ":"),
            (f"dof-central{suffix}", "DoF central", OKABE_ITO[5], "-"),
            (f"fullproj-central{suffix}", "full+project central", OKABE_ITO[5], ":"),
            (f"posthoc-central_skew{suffix}", "posthoc central_skew", OKABE_ITO[7], "--"),
            (f"prune-mag-ft{suffix}", "prune magnitude + ft", OKABE_ITO[3], "--"),
            (f"prune-rand{suffix}", "prune random", OKABE_ITO[1], "-"),
        ]
        for label, name, color, style in lines:
            f = _series(table, label).sort_values("snr_db")
            if len(f):
                y = np.clip(f["nmse_db"].to_numpy(dtype=float), -80, 80)
                ax.plot(f["snr_db"], y, color=color, linestyle=style, marker="o", markersize=3, label=name)
        ax.set_title(title)
        ax.set_xlabel("Eb/N0 (dB)" if b else "SNR per value (dB)")
        ax.set_ylabel("NMSE received vs float model (dB, clipped to +-80)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    _foot(fig, foot)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_analog(table: pd.DataFrame, foot: str, path: Path) -> None:
    """Analog: accuracy against SNR for every float32 strategy."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    colors = GROUP_COLORS
    for i, g in enumerate(GROUPS):
        f = _series(table, f"dof-{g}")
        if len(f):
            _errorline(axes[0], f, f"dof {group_name(g)}", colors[i % len(colors)], "-" if i < 5 else "--", "o" if g != "dihedral" else "x")
    f = _series(table, "fp32")
    if len(f):
        _errorline(axes[0], f, "fp32 (plain model, no symmetry)", "#000000", ":", "s")
    lines = [
        ("fp32", "fp32 (raw)", OKABE_ITO[0], "-"),
        ("dof-central_skew", "DoF central_skew", OKABE_ITO[6], "-"),
        ("fullproj-central_skew", "full+project central_skew", OKABE_ITO[6], ":"),
        ("posthoc-central_skew", "posthoc central_skew", OKABE_ITO[7], "--"),
        ("dof-central", "DoF central", OKABE_ITO[5], "-"),
        ("fullproj-central", "full+project central", OKABE_ITO[5], ":"),
        ("posthoc-central", "posthoc central", OKABE_ITO[5], "--"),
        ("prune-mag", "prune magnitude", OKABE_ITO[3], "-"),
        ("prune-mag-ft", "prune magnitude + ft", OKABE_ITO[3], "--"),
        ("prune-rand", "prune random", OKABE_ITO[1], "-"),
        ("prune-rand-ft", "prune random + ft", OKABE_ITO[1], "--"),
        ("monocnn", "MonoCNN", OKABE_ITO[2], "-"),
    ]
    for label, name, color, style in lines:
        f = _series(table, label)
        if len(f):
            _errorline(axes[1], f, name, color, style)
    axes[0].set_title("analog: DoF codec, every group (float32 theta)")
    axes[1].set_title("analog: codec against baselines (float32)")
    for ax in axes:
        ax.set_xlabel("SNR per value (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("device accuracy (mean, 95% CI)")
    axes[0].set_ylim(0, 1.02)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    _foot(fig, foot)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_ratios(summary: pd.DataFrame, table: pd.DataFrame, foot: str, path: Path, bits: int = 8, acc_bits: int = 4,
               snr: float = 5.0) -> None:
    """The trade-off: conv-only compression ratio against accuracy, per group (and baselines)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    s = summary[summary["bits"] == bits].copy()
    s = s[s["family"].isin(["dof", "quantise", "prune-mag", "prune-mag-ft", "prune-rand", "prune-rand-ft", "monocnn", "posthoc"])]
    s = s.sort_values("model_ratio")
    y = np.arange(len(s))
    axes[0].barh(y - 0.2, s["model_ratio"], height=0.4, color=OKABE_ITO[5], label="whole model")
    axes[0].barh(y + 0.2, s["conv_ratio"], height=0.4, color=OKABE_ITO[1], label="conv kernels only")
    axes[0].set_yticks(y, s["strategy"], fontsize=7)
    axes[0].set_xlabel(f"compression ratio against float32 (payload, {bits}-bit)")
    axes[0].legend(fontsize=7)
    axes[0].grid(alpha=0.3, axis="x")
    # Accuracy at a bit-width and SNR where the strategies differ (at 8 bits and 10 dB all are near 99%).
    t = table[(table["bits"] == acc_bits) & (table["snr_db"] == snr)]
    s = summary[summary["bits"] == acc_bits]
    s = s[s["family"].isin(["dof", "quantise", "prune-mag", "prune-mag-ft", "prune-rand", "prune-rand-ft", "monocnn", "posthoc", "fullproj"])]
    for _, row in s.iterrows():
        acc = t.loc[t["strategy"] == row["strategy"], ["acc_mean", "acc_ci95"]]
        if not len(acc):
            continue
        color, marker = FAMILY_STYLE.get(row["family"], ("#444444", "o"))
        axes[1].errorbar(row["conv_ratio"], acc["acc_mean"].iloc[0], yerr=acc["acc_ci95"].iloc[0], color=color,
                         marker=marker, capsize=2)
        name = row["group"] if row["family"] == "dof" else row["family"] + (f" {row['group']}" if row["family"] in ("posthoc", "fullproj") else "")
        axes[1].annotate(name, (row["conv_ratio"], acc["acc_mean"].iloc[0]), fontsize=6, xytext=(3, 2),
                         textcoords="offset points")
    axes[1].set_xscale("log")
    axes[1].set_xlabel(f"conv-kernel compression ratio against float32 ({acc_bits}-bit, log)")
    axes[1].set_ylabel(f"device accuracy at Eb/N0 = {snr:g} dB, {acc_bits}-bit (mean, 95% CI)")
    axes[1].grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    _foot(fig, foot)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- conv-kernel NMSE: the fleet's transmissions replayed ---------------------------------

# The run folders' NMSE covers every float tensor, so BatchNorm statistics (sent as they are,
# never projected) weigh in. The receiver projection acts on conv kernels only; to see it, the
# same transmissions as the fleet's (same links, same generator keys, round 1) are replayed for
# a subset of strategies and the error is measured on the 3x3 kernels alone.
KERNEL_NMSE_LABELS = re.compile(
    r"^(fp32|q[48]|(dof|fullproj|posthoc)-(central|central_skew)(-[48])?|prune-(mag|rand)(-ft)?(-posexp)?(-[48])?)$"
)


def kernel_nmse(run_dir: Path, round_: int = 1) -> pd.DataFrame:
    """Per (strategy, device) of ``round_``: the conv-kernel NMSE of the received model, in dB."""
    from strategies.registry import build
    from testbed.checkpoints import checkpoint_key, checkpoint_path
    from testbed.config import load_config
    from testbed.data import load_dataset
    from testbed.fleet import Fleet
    from testbed.training import receiver_model
    from testbed.payload import PayloadError
    from testbed.rng import derive_rng
    from testbed.training import central_model, training_parts

    config = load_config(run_dir / "config.yaml")
    dataset = load_dataset(config.data.dataset, config.data.dir)
    fleet = Fleet.from_config(config.fleet, config.seed, base_dir=run_dir)
    rows = []
    for label, spec in config.strategy_specs().items():
        if not KERNEL_NMSE_LABELS.match(label):
            continue
        strategy = build(spec)
        key = checkpoint_key(training_parts(strategy, config.model, dataset, config.seed))
        if not checkpoint_path(key).exists():  # never train here: the study's models only
            print(f"kernel NMSE: {label}: no cached model in the checkpoint cache, skipped", flush=True)
            continue
        model = central_model(strategy, config.model, dataset, config.seed, progress=False)
        reference = {k: v.detach().double() for k, v in model.state_dict().items() if is_conv_kernel(v)}
        power = sum(float(v.pow(2).sum()) for v in reference.values())
        template = receiver_model(strategy, config, dataset).state_dict()
        payload = strategy.read(strategy.encode(model.state_dict()).to_bytes(), template)
        clean = strategy.decode(payload, template)
        clean_err = sum(float((clean[k].double() - v).pow(2).sum()) for k, v in reference.items())
        for device in fleet.available(round_, config.seed):
            link = fleet.link(device.device_id)
            tx = link.transmit(payload, derive_rng(config.seed, "link", round_, device.device_id, "down"))
            row = {"strategy": label, **describe_label(label), "device_id": device.device_id,
                   "snr_db": float(link.params.snr_db), "kernel_nmse_db": float("nan"),
                   "kernel_nmse_compression_db": 10 * math.log10(clean_err / power) if clean_err > 0 else float("-inf")}
            if tx.received is not None:
                try:
                    state = strategy.decode(tx.received, template)
                except PayloadError:
                    state = None
                if state is not None:
                    err = sum(float((state[k].double() - v).pow(2).sum()) for k, v in reference.items())
                    # NaN/inf: the received kernels hold inf/NaN (float32 exponent bits hit); 0: exact
                    if not math.isfinite(err):
                        row["kernel_nmse_db"] = float("nan")
                    else:
                        row["kernel_nmse_db"] = 10 * math.log10(err / power) if err > 0 else float("-inf")
            rows.append(row)
    return pd.DataFrame(rows)


def fig_kernel_nmse(tables: dict[str, pd.DataFrame], foot: str, path: Path) -> None:
    """Conv-kernel NMSE against SNR: the projection's effect where it acts."""
    import matplotlib.pyplot as plt

    panels = [(k, b) for k, b in (("digital", 4), ("digital", 8), ("analog", None)) if k in tables]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2))
    axes = np.atleast_1d(axes)
    for ax, (kind, b) in zip(axes, panels):
        t = tables[kind]
        suffix = f"-{b}" if b else ""
        lines = [
            (f"q{b}" if b else "fp32", "quantise (plain model)" if b else "fp32 (plain model)", OKABE_ITO[0], "-"),
            (f"dof-central_skew{suffix}", "DoF central_skew", OKABE_ITO[6], "-"),
            (f"fullproj-central_skew{suffix}", "full+project central_skew", OKABE_ITO[6], ":"),
            (f"dof-central{suffix}", "DoF central", OKABE_ITO[5], "-"),
            (f"fullproj-central{suffix}", "full+project central", OKABE_ITO[5], ":"),
            (f"posthoc-central_skew{suffix}", "posthoc central_skew", OKABE_ITO[7], "--"),
            (f"prune-mag-ft{suffix}", "prune magnitude + ft", OKABE_ITO[3], "--"),
            (f"prune-mag-ft-posexp{suffix}", "prune mag. + ft, positions exposed", OKABE_ITO[8], "-."),
        ]
        for label, name, color, style in lines:
            f = t[t["strategy"] == label]
            if not len(f):
                continue
            g = f.groupby("snr_db")["kernel_nmse_db"].apply(power_mean_db).reset_index()
            ax.plot(g["snr_db"], np.clip(g["kernel_nmse_db"], -80, 80), color=color, linestyle=style, marker="o",
                    markersize=3, label=name)
        ax.set_title(f"conv kernels only, {kind}" + (f", {b}-bit" if b else ", float32"))
        ax.set_xlabel("Eb/N0 (dB)" if b else "SNR per value (dB)")
        ax.set_ylabel("kernel NMSE vs server float kernels (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    _foot(fig, foot + "; round-1 transmissions replayed")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pm(mean: float, ci: float) -> str:
    if math.isnan(mean):
        return "-"
    return f"{100 * mean:.1f}" if math.isnan(ci) else f"{100 * mean:.1f} ± {100 * ci:.1f}"


def accuracy_markdown(table: pd.DataFrame, summary: pd.DataFrame, labels: list[str]) -> str:
    """Rows: labels; columns: payload, ratios, then accuracy (%) ± 95% CI half-width per SNR."""
    snrs = sorted(table["snr_db"].unique())
    head = ["strategy", "payload (B)", "ratio model", "ratio conv"] + [f"{s:g} dB" for s in snrs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label in labels:
        t = table[table["strategy"] == label]
        s = summary[summary["strategy"] == label]
        if not len(t) or not len(s):
            continue
        row = s.iloc[0]
        cells = [label, f"{int(row['payload_bytes']):,}", f"{row['model_ratio']:.2f}", f"{row['conv_ratio']:.2f}"]
        for snr in snrs:
            x = t[t["snr_db"] == snr]
            cells.append(_pm(float(x["acc_mean"].iloc[0]), float(x["acc_ci95"].iloc[0])) if len(x) else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n" if len(lines) > 2 else "(no rows)\n"


def summary_markdown(tables: dict, summaries: dict, models: pd.DataFrame) -> str:
    """The tables of docs/RESULTS.md, generated (accuracy in %, ± the 95% CI half-width)."""
    out = ["# Study tables (generated by scripts/reproduce_symmetry.py)\n",
           "Device accuracy in %, mean over delivered device-rounds ± half-width of the 95% t-interval.\n"]
    out.append("## Trained models\n")
    out.append("| training key | strategies using it | test accuracy (10,000 images) | training time (s) |\n|---|---|---|---|")
    for _, r in models.iterrows():
        acc = f"{100 * r['test_accuracy']:.2f}" if r["test_accuracy"] == r["test_accuracy"] and r["test_accuracy"] is not None else "-"
        sec = f"{r['train_seconds']:.0f}" if r["train_seconds"] == r["train_seconds"] and r["train_seconds"] is not None else "-"
        key = r["training_key"] if not str(r["training_key"]).startswith("monocnn") else "monocnn (8 seeds/layer)"
        out.append(f"| {key} | {r['labels']} | {acc} | {sec} |")
    out.append("")
    if "digital" in tables:
        d, s = tables["digital"], summaries["digital"]
        for b in BITS:
            out.append(f"## Digital (BPSK over AWGN), every group in dof mode, {b}-bit\n")
            out.append(accuracy_markdown(d, s, [f"q{b}"] + [f"dof-{g}-{b}" for g in GROUPS]))
        for b in BITS:
            out.append(f"## Digital, codec against baselines, {b}-bit\n")
            labels = [f"q{b}", f"dof-central_skew-{b}", f"dof-central-{b}", f"fullproj-central_skew-{b}", f"fullproj-central-{b}",
                      f"posthoc-central_skew-{b}", f"posthoc-central-{b}", f"prune-mag-{b}", f"prune-mag-ft-{b}", f"prune-rand-{b}",
                      f"prune-rand-ft-{b}", f"prune-mag-ft-posexp-{b}", f"monocnn-{b}"]
            out.append(accuracy_markdown(d, s, labels))
        out.append("## Digital, float32 sent as bits\n")
        out.append(accuracy_markdown(d, s, ["fp32"]))
    if "analog" in tables:
        a, s = tables["analog"], summaries["analog"]
        out.append("## Analog (float32 amplitudes)\n")
        out.append(accuracy_markdown(a, s, list(s["strategy"])))
    return "\n".join(out)


# ---- the whole analysis ------------------------------------------------------------------


def make_figures(out: Path, results: Path, walls: dict[str, float] | None = None, kernel: bool = True) -> None:
    """Read the run folders under ``out`` and write figures, tables and the report into ``results``."""
    import matplotlib

    matplotlib.use("Agg")
    from testbed.report import load_run, write_report

    results.mkdir(parents=True, exist_ok=True)
    runs = {kind: load_run(out / kind, kind) for kind in STUDY_CONFIGS if (out / kind / "metrics.csv").exists()}
    if not runs:
        raise SystemExit(f"{out}: no run folders with metrics.csv (digital/, analog/); run the study first")
    foot = machine_line(runs)
    tables, summaries = {}, {}
    for kind, run in runs.items():
        tables[kind] = snr_table(study_rows(run))
        summaries[kind] = strategy_summary(run)
        tables[kind].to_csv(results / f"{kind}_by_snr.csv", index=False, float_format="%.6g")
        summaries[kind].to_csv(results / f"{kind}_strategies.csv", index=False, float_format="%.6g")
    if "digital" in runs:
        d, s = tables["digital"], summaries["digital"]
        fig_accuracy_vs_snr_bits(d, foot, results / "digital_accuracy_vs_snr.png")
        fig_groups_vs_snr(d, s, foot, results / "digital_groups_vs_snr.png")
        fig_accuracy_vs_bytes(d, foot, results / "digital_accuracy_vs_bytes.png")
        fig_ratios(s, d, foot, results / "compression_ratios.png")
    if "analog" in runs:
        fig_analog(tables["analog"], foot, results / "analog_accuracy_vs_snr.png")
    fig_nmse_vs_snr(tables.get("digital"), tables.get("analog"), foot, results / "nmse_vs_snr.png")
    if kernel:
        start = time.perf_counter()
        ktables = {}
        for kind in runs:
            ktables[kind] = kernel_nmse(out / kind)
            ktables[kind].to_csv(results / f"{kind}_kernel_nmse.csv", index=False, float_format="%.6g")
            summary = ktables[kind].groupby(["strategy", "snr_db"])["kernel_nmse_db"].apply(power_mean_db).reset_index()
            summary.to_csv(results / f"{kind}_kernel_nmse_by_snr.csv", index=False, float_format="%.6g")
        fig_kernel_nmse(ktables, foot, results / "kernel_nmse_vs_snr.png")
        print(f"kernel NMSE replay: {time.perf_counter() - start:.0f} s")

    models = pd.concat([models_table(out / kind) for kind in runs]).drop_duplicates("training_key", keep="first")
    models.to_csv(results / "models.csv", index=False, float_format="%.6g")
    (results / "tables.md").write_text(summary_markdown(tables, summaries, models))
    # The project's own report of both runs, beside the figures.
    report = write_report([out / k for k in runs], results / "report.html", labels=list(runs))
    print(f"report: {report}")
    meta = {
        "runs": {k: {"run_folder": k, "wall_s": r.summary.get("wall_s"), "rounds_done": r.summary.get("rounds_done"),
                     "devices": int(r.wide["device_id"].nunique()), "strategies": int(r.wide["label"].nunique()),
                     "rows": len(r.wide)} for k, r in runs.items()},
        "machine": next(iter(runs.values())).summary.get("machine", {}),
        "study_wall_s": walls,
        "load_average_now": os.getloadavg(),
    }
    previous = results / "study_meta.json"
    if walls is None and previous.exists():  # figures only: keep the study's measured wall times
        meta["study_wall_s"] = json.loads(previous.read_text()).get("study_wall_s")
    previous.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    print(f"figures and tables in {results}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="folder of the study's run folders (default runs/symmetry-study, runs/symmetry-tiny with --tiny)")
    parser.add_argument("--results", default=None, help="where figures and tables go (default docs/results; with --tiny OUT/results)")
    parser.add_argument("--figures-only", action="store_true", help="make figures and tables from existing run folders; run nothing")
    parser.add_argument("--tiny", action="store_true", help="smoke test: one device per SNR, 1 round, 2,000 training images, a subset of strategies")
    parser.add_argument("--only", choices=list(STUDY_CONFIGS), action="append", help="run only this study run (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override for both runs")
    parser.add_argument("--no-kernel-nmse", action="store_true", help="skip the conv-kernel NMSE replay (needs the checkpoint cache)")
    args = parser.parse_args(argv)

    out = Path(args.out or ("runs/symmetry-tiny" if args.tiny else "runs/symmetry-study"))
    results = Path(args.results) if args.results else (out / "results" if args.tiny else RESULTS)
    walls = None
    if not args.figures_only:
        if not os.environ.get("TESTBED_DATA_DIR"):
            print("note: TESTBED_DATA_DIR is not set; MNIST is read from ~/.cache/testbed/data", flush=True)
        start = time.perf_counter()
        walls = run_study(out, args.tiny, args.only or list(STUDY_CONFIGS), args.overrides)
        walls["total"] = time.perf_counter() - start
    make_figures(out, results, walls, kernel=not args.no_kernel_nmse)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
