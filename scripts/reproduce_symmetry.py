"""Reproduce the kernel-symmetry study (arXiv:2604.17371), second edition, then make its figures.

One command trains every model of the study (3 training seeds per method), runs the fleet for
every (training seed, fleet seed) pair on digital BPSK/AWGN links and on analog links, and writes
the figures, tables, statistical tests and per-device rows of docs/RESULTS.md::

    TESTBED_DATA_DIR=/path/to/data TESTBED_CACHE_DIR=/path/to/cache \\
        .venv/bin/python scripts/reproduce_symmetry.py --out runs/symmetry-study

Re-running resumes: trained models come from the checkpoint cache, a run folder whose
summary.json says every round is done is skipped, an interrupted one is resumed.
``--figures-only`` analyses existing run folders and runs nothing; ``--tiny`` is a smoke test
(2 training seeds, 1 fleet seed, 2,000 training images, a few strategies) into its own folder;
``--dataset`` runs the same study on another dataset (a registered name, or a path to dataset
files: a .npz file, an image folder, or a folder of idx files).
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
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testbed.config import DataConfig, ExperimentConfig, ModelConfig, apply_overrides, validate_tree  # noqa: E402

STUDY_CONFIGS = {
    "digital": ROOT / "configs" / "study" / "symmetry_digital.yaml",
    "analog": ROOT / "configs" / "study" / "symmetry_analog.yaml",
}
RESULTS = ROOT / "docs" / "results" / "symmetry"
TRAIN_SEEDS = (0, 1, 2)
FLEET_SEEDS = (0, 1)
BITS = (4, 8)
GROUPS = ("central_skew", "skew_diagonal", "central")

# The smoke test: a few strategies, one round, a small training set, one device per SNR.
TINY_OVERRIDES = ["rounds=1", "data.test_per_device=50", "engine.devices_per_node=4", "model.train.train_subset=2000"]
TINY_LABELS = re.compile(r"^(fp32|q4|(dof|dofx2|fullproj)-central_skew(-4)?|prune-mag-ft(-4)?)$")
TINY_SEEDS = ((0, 1), (0,))

# Okabe-Ito without its yellow (too pale on white), as the project's report uses.
BLACK, ORANGE, SKY, GREEN, BLUE, VERMILION, PURPLE, GREY = (
    "#000000", "#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#999999")


# ---- the configs ---------------------------------------------------------------------


def dataset_overrides(spec: str | None) -> list[str]:
    """Config overrides for ``--dataset``: a registered dataset's name, or a path to dataset files."""
    if spec is None:
        return []
    path = Path(spec)
    if not path.exists():
        return [f"data.dataset={spec}"]
    if path.suffix == ".npz":
        fmt = "npz"
    elif path.is_dir() and any(path.glob("*-ubyte*")):
        fmt = "idx"
    elif path.is_dir():
        fmt = "image-folder"
    else:
        raise SystemExit(f"--dataset {spec}: a file that is not .npz; give a .npz file, an image folder or an idx folder")
    return ["data.dataset=files", f"data.path={path.resolve()}", f"data.format={fmt}"]


def study_config(kind: str, fleet_seed: int = 0, tiny: bool = False, overrides: list[str] = (),
                 train_seeds=TRAIN_SEEDS) -> ExperimentConfig:
    """The study's config ``kind`` for one fleet seed: every strategy once per training seed
    (label ``LABEL@tS``, the entry's ``train_seed``), so all models meet the same devices and noise."""
    path = STUDY_CONFIGS[kind]
    tree = yaml.safe_load(path.read_text())
    if tiny:
        tree["strategies"] = [s for s in tree["strategies"] if TINY_LABELS.match(s["label"])]
        tree["name"] = tree["name"] + "-tiny"
        apply_overrides(tree, list(TINY_OVERRIDES))
        tree["fleet"]["devices"] = len(tree["fleet"]["link"]["snr_db"])  # one device per SNR
    tree["strategies"] = [{**s, "label": f"{s['label']}@t{t}", "train_seed": t}
                          for t in train_seeds for s in tree["strategies"]]
    apply_overrides(tree, [f"seed={fleet_seed}", *overrides])
    tree["name"] = f"{tree['name']}-f{fleet_seed}"
    return validate_tree(tree, str(path))


def split_label(label: str) -> tuple[str, int | None]:
    """``LABEL@tS`` -> (LABEL, S); a label without a seed -> (label, None)."""
    match = re.fullmatch(r"(.+)@t(\d+)", label)
    return (match.group(1), int(match.group(2))) if match else (label, None)


def describe_label(label: str) -> dict:
    """What a study label means: family, group, bits (None: float32)."""
    label = split_label(label)[0]
    if label.startswith("q") and label[1:].isdigit():
        return {"family": "quantise", "group": "", "bits": int(label[1:])}
    if label == "fp32":
        return {"family": "fp32", "group": "", "bits": None}
    match = re.search(r"-(\d+)$", label)
    bits, base = (int(match.group(1)), label[: match.start()]) if match else (None, label)
    for prefix in ("dofx2", "dof", "fullproj", "posthoc"):
        if base.startswith(prefix + "-"):
            return {"family": prefix, "group": base[len(prefix) + 1:], "bits": bits}
    return {"family": base, "group": "central_skew" if base.startswith("prune") else "", "bits": bits}


def run_folder(out: Path, kind: str, fleet_seed: int) -> Path:
    return out / kind / f"f{fleet_seed}"


# ---- training: every model of every training seed, before the fleet runs -------------------


def _train_one(job) -> dict:
    """Train (or find in the cache) one model; runs in a worker process, one torch thread."""
    import torch

    from strategies.registry import build
    from testbed.data import load_data
    from testbed.training import central_model

    torch.set_num_threads(1)
    spec, model_cfg, data_cfg, seed, base_dir = job
    config_model = ModelConfig.model_validate(model_cfg)
    data_model = DataConfig.model_validate(data_cfg)
    strategy = build(spec)
    dataset = load_data(data_model, base_dir)
    start = time.perf_counter()
    model = central_model(strategy, config_model, dataset, seed, progress=False)
    info = model.checkpoint_info
    return {"training_key": strategy.training_key(), "train_seed": seed, "test_accuracy": info["test_accuracy"],
            "train_seconds": info["train_seconds"], "cached": info["cached"], "wall_s": time.perf_counter() - start,
            "threads": info.get("threads")}


def train_models(kinds, seeds, tiny: bool, overrides: list[str], jobs: int) -> pd.DataFrame:
    """Every distinct (training key, seed) of the study, trained in ``jobs`` parallel processes."""
    from strategies.registry import build

    todo = {}
    for kind in kinds:
        config = study_config(kind, 0, tiny, overrides, seeds)
        for label, spec in config.strategy_specs().items():
            seed = config.train_seed(label)
            todo.setdefault((build(spec).training_key(), seed), (
                spec, config.model.model_dump(mode="json"), config.data.model_dump(mode="json"), seed,
                str(STUDY_CONFIGS[kind].parent)))
    print(f"[train] {len(todo)} models ({jobs} processes)", flush=True)
    rows = []
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for row in pool.map(_train_one, todo.values()):
            print(f"[train] {row['training_key']} seed {row['train_seed']}: {100 * row['test_accuracy']:.2f}%, "
                  f"{row['train_seconds']:.0f} s{' (cache)' if row['cached'] else ''}", flush=True)
            rows.append(row)
    return pd.DataFrame(rows)


# ---- running ---------------------------------------------------------------------------


def run_study(out: Path, kinds, seeds, fleet_seeds, tiny: bool, overrides: list[str]) -> dict[str, float]:
    """Run (or resume, or skip when done) every fleet run; returns the wall seconds of each."""
    from testbed.runner import run_experiment
    from testbed.sweep import point_state

    walls = {}
    for kind in kinds:
        for f in fleet_seeds:
            config = study_config(kind, f, tiny, overrides, seeds)
            run_dir = run_folder(out, kind, f)
            state = point_state(run_dir, config)
            print(f"[{kind} f{f}] {len(config.strategies)} strategies, {config.fleet.devices} devices, "
                  f"{config.rounds} rounds: {state}", flush=True)
            start = time.perf_counter()
            if state != "done":
                run_experiment(config, run_dir, resume=state == "partial", progress=False,
                               config_path=STUDY_CONFIGS[kind])
            walls[f"{kind}/f{f}"] = time.perf_counter() - start
            print(f"[{kind} f{f}] {walls[f'{kind}/f{f}']:.0f} s", flush=True)
    return walls


# ---- the per-device rows -------------------------------------------------------------------

ROW_COLUMNS = ["kind", "train_seed", "fleet_seed", "round", "device_id", "strategy", "family", "group", "bits",
               "snr_db", "failed", "accuracy", "recon_nmse_db", "recon_nmse_conv_db", "bytes_down",
               "bytes_down_payload", "bit_errors_down", "repetition_down"]


def device_rows(out: Path) -> pd.DataFrame:
    """Every run folder's per-device rows, in the study's terms, one frame."""
    from testbed.metrics import failed
    from testbed.report import load_run

    frames = []
    for kind in STUDY_CONFIGS:
        for folder in sorted((out / kind).glob("f*")):
            if not (folder / "metrics.csv").exists():
                continue
            wide = load_run(folder, folder.name).wide
            rows = wide.rename(columns={"snr_db_down": "snr_db"})
            split = [split_label(label) for label in rows["label"]]
            rows["strategy"], rows["train_seed"] = [b for b, _ in split], [t for _, t in split]
            rows["failed"] = failed(rows)
            rows["kind"], rows["fleet_seed"] = kind, int(folder.name[1:])
            described = pd.DataFrame([describe_label(s) for s in rows["strategy"]], index=rows.index)
            rows = pd.concat([rows.drop(columns=[c for c in described if c in rows]), described], axis=1)
            frames.append(rows.reindex(columns=ROW_COLUMNS))
    if not frames:
        raise SystemExit(f"{out}: no run folders with metrics.csv under digital/ or analog/; run the study first")
    rows = pd.concat(frames, ignore_index=True)
    rows["bits"] = rows["bits"].astype("Int64")
    return rows


# ---- statistics ------------------------------------------------------------------------


def t_half_width(values) -> float:
    """Half-width of the two-sided 95% Student-t interval of the mean of ``values``."""
    from scipy.stats import t

    values = np.asarray(values, dtype=float)
    n = len(values)
    if n < 2:
        return float("nan")
    return float(t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n))


def power_mean_db(values) -> float:
    """Mean on the linear scale, in dB (-inf: exact; NaN: non-finite weights received, the worst)."""
    values = np.nan_to_num(np.asarray(values, dtype=float), nan=np.inf)
    if len(values) == 0:
        return float("nan")
    with np.errstate(over="ignore", divide="ignore"):
        linear = np.power(10.0, np.clip(values, -400, 300) / 10.0).mean()
    return float(10 * np.log10(linear)) if linear > 0 else float("-inf")


def per_seed(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (kind, strategy, SNR, training seed): the mean over fleet seeds, devices and rounds."""
    ok = rows[~rows["failed"]]
    keys = ["kind", "strategy", "snr_db", "train_seed"]
    table = ok.groupby(keys, sort=False).agg(acc=("accuracy", "mean"), samples=("accuracy", "size")).reset_index()
    nmse = ok.groupby(keys, sort=False)["recon_nmse_conv_db"].apply(power_mean_db).rename("kernel_nmse_db")
    fails = rows.groupby(keys, sort=False)["failed"].sum().rename("failed")
    bytes_ = rows.groupby(keys, sort=False)["bytes_down"].mean().rename("bytes_down_mean")
    return table.join(nmse, on=keys).join(fails, on=keys).join(bytes_, on=keys)


def headline(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (kind, strategy, SNR): mean over training seeds and its 95% interval over them (the
    between-model spread), and the device-level spread (all device-rounds of all runs)."""
    seeds = per_seed(rows)
    out = []
    for (kind, label, snr), g in seeds.groupby(["kind", "strategy", "snr_db"], sort=False):
        dev = rows[(rows["kind"] == kind) & (rows["strategy"] == label) & (rows["snr_db"] == snr) & ~rows["failed"]]
        acc = dev["accuracy"].to_numpy(dtype=float)
        out.append({
            "kind": kind, "strategy": label, **describe_label(label), "snr_db": float(snr),
            "train_seeds": len(g), "device_rounds": len(acc), "failed": int(g["failed"].sum()),
            "acc_mean": float(g["acc"].mean()), "acc_ci95_seeds": t_half_width(g["acc"]),
            "acc_seed_min": float(g["acc"].min()), "acc_seed_max": float(g["acc"].max()),
            "acc_device_sd": float(acc.std(ddof=1)) if len(acc) > 1 else float("nan"),
            "acc_device_p10": float(np.percentile(acc, 10)) if len(acc) else float("nan"),
            "acc_device_p50": float(np.percentile(acc, 50)) if len(acc) else float("nan"),
            "acc_device_p90": float(np.percentile(acc, 90)) if len(acc) else float("nan"),
            "acc_ci95_device_rounds": t_half_width(acc),
            "kernel_nmse_db": float(g["kernel_nmse_db"].mean()),
            "kernel_nmse_ci95_seeds": t_half_width(g["kernel_nmse_db"]),
            "bytes_down_mean": float(g["bytes_down_mean"].mean()),
        })
    return pd.DataFrame(out)


# Every verdict of docs/RESULTS.md, fixed before the runs: (id, kind, A, B, SNRs, metric, claim).
# Analog SNRs "transition": where the float32 plain model is neither broken nor clean (below).
VERDICTS = [
    ("C1-skew-4-low", "digital", "dof-central_skew-4", "prune-mag-ft-4", (0, 2.5), "accuracy", 1),
    ("C1-skew-8-low", "digital", "dof-central_skew-8", "prune-mag-ft-8", (0, 2.5), "accuracy", 1),
    ("C1-skew-4-5dB", "digital", "dof-central_skew-4", "prune-mag-ft-4", (5,), "accuracy", 1),
    ("C1-skewdiag-4-low", "digital", "dof-skew_diagonal-4", "prune-mag-ft-4", (0, 2.5), "accuracy", 1),
    ("C1-central-4-5dB", "digital", "dof-central-4", "prune-mag-ft-4", (5,), "accuracy", 1),
    ("C1-skew-4-clean", "digital", "dof-central_skew-4", "prune-mag-ft-4", (20,), "accuracy", 1),
    ("C1-analog", "analog", "dof-central_skew", "prune-mag-ft", "transition", "accuracy", 1),
    ("C2-posexp-4", "digital", "prune-mag-ft-posexp-4", "prune-mag-ft-4", (5, 7.5), "accuracy", 2),
    ("C3-skew-vs-central-4", "digital", "dof-central_skew-4", "dof-central-4", (2.5, 5), "accuracy", 3),
    ("C3-skew-vs-skewdiag-4-low", "digital", "dof-central_skew-4", "dof-skew_diagonal-4", (0, 2.5), "accuracy", 3),
    ("C3-skew-vs-skewdiag-4-clean", "digital", "dof-central_skew-4", "dof-skew_diagonal-4", (20,), "accuracy", 3),
    ("C4-proj-vs-dof-4", "digital", "fullproj-central_skew-4", "dof-central_skew-4", (0, 2.5), "accuracy", 4),
    ("C4-proj-vs-q-4", "digital", "fullproj-central_skew-4", "q4", (0, 2.5), "accuracy", 4),
    ("C4-proj-vs-repeat-skew-4", "digital", "fullproj-central_skew-4", "dofx2-central_skew-4", (0, 2.5), "accuracy", 4),
    ("C4-proj-vs-repeat-skew-8", "digital", "fullproj-central_skew-8", "dofx2-central_skew-8", (0, 2.5), "accuracy", 4),
    ("C4-proj-vs-repeat-central-4", "digital", "fullproj-central-4", "dofx2-central-4", (2.5, 5), "accuracy", 4),
    ("C4-proj-vs-repeat-skew-analog", "analog", "fullproj-central_skew", "dofx2-central_skew", "transition", "accuracy", 4),
    ("C4-kernel-proj-vs-repeat-skew-analog", "analog", "fullproj-central_skew", "dofx2-central_skew", "all",
     "recon_nmse_conv_db", 4),
    ("C4-kernel-proj-vs-dof-skew-analog", "analog", "fullproj-central_skew", "dof-central_skew", "all",
     "recon_nmse_conv_db", 4),
]
TRANSITION = (0.2, 0.95)  # fp32's mean accuracy bounds of the analog "transition" SNRs


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def verdict_snrs(rows: pd.DataFrame, kind: str, snrs) -> tuple:
    present = sorted(rows.loc[rows["kind"] == kind, "snr_db"].unique())
    if snrs == "all":
        return tuple(present)
    if snrs == "transition":
        fp = rows[(rows["kind"] == kind) & (rows["strategy"] == "fp32") & ~rows["failed"]]
        mean = fp.groupby("snr_db")["accuracy"].mean()
        return tuple(float(s) for s, a in mean.items() if TRANSITION[0] <= a <= TRANSITION[1])
    return tuple(float(s) for s in snrs if float(s) in present)


def paired_differences(rows: pd.DataFrame, kind: str, a: str, b: str, snrs, metric: str) -> pd.DataFrame:
    """A minus B on the same (training seed, fleet seed, round, device): the same test images and
    the same link-noise generator (keyed by seed, round, device and transfer)."""
    keys = ["train_seed", "fleet_seed", "round", "device_id"]
    sel = rows[(rows["kind"] == kind) & rows["snr_db"].isin(snrs) & ~rows["failed"]]
    left = sel[sel["strategy"] == a][keys + [metric]]
    right = sel[sel["strategy"] == b][keys + [metric]]
    both = left.merge(right, on=keys, suffixes=("_a", "_b"))
    both["diff"] = both[f"{metric}_a"] - both[f"{metric}_b"]
    return both


def verdict_tests(rows: pd.DataFrame) -> pd.DataFrame:
    """Each verdict: the mean paired difference per training seed, a one-sample t-test over the
    seeds (the models are the independent repetitions), the device-level Wilcoxon signed-rank test
    (conditional on these models), and both p-values Holm-adjusted over all verdicts."""
    from scipy.stats import ttest_1samp, wilcoxon

    out = []
    for vid, kind, a, b, snrs, metric, claim in VERDICTS:
        snrs = verdict_snrs(rows, kind, snrs)
        both = paired_differences(rows, kind, a, b, snrs, metric)
        finite = both[np.isfinite(both["diff"])]
        per = finite.groupby("train_seed")["diff"].mean()
        n = len(per)
        p_seed = float(ttest_1samp(per.to_numpy(), 0.0).pvalue) if n >= 2 and per.std() > 0 else float("nan")
        nonzero = finite["diff"].to_numpy()
        p_dev = float(wilcoxon(nonzero).pvalue) if np.count_nonzero(nonzero) >= 1 else 1.0
        out.append({"verdict": vid, "claim": claim, "kind": kind, "a": a, "b": b, "metric": metric,
                    "snr_db": " ".join(f"{s:g}" for s in snrs), "train_seeds": n, "pairs": len(both),
                    "pairs_nonfinite": len(both) - len(finite), "mean_diff": float(per.mean()) if n else float("nan"),
                    "ci95_seeds": t_half_width(per), "seed_diffs": " ".join(f"{x:+.4f}" for x in per),
                    "p_seeds": p_seed, "p_devices": p_dev})
    table = pd.DataFrame(out)
    for col in ("p_seeds", "p_devices"):
        p = table[col].fillna(1.0).to_numpy()
        table[col + "_holm"] = holm(p)
    better_lower = table["metric"] != "accuracy"

    def word(row, col):
        if not row[col] < 0.05:
            return "not significant"
        a_better = (row["mean_diff"] < 0) if better_lower[row.name] else (row["mean_diff"] > 0)
        return "A better" if a_better else "B better"

    table["verdict_seeds"] = [word(r, "p_seeds_holm") for _, r in table.iterrows()]
    table["verdict_devices"] = [word(r, "p_devices_holm") for _, r in table.iterrows()]
    return table


# ---- figures -----------------------------------------------------------------------------


def _foot(fig, text: str) -> None:
    fig.text(0.01, 0.005, text, fontsize=6, color="#555555", ha="left", va="bottom")


def _line(ax, table: pd.DataFrame, label: str, name: str, color: str, style: str = "-", marker: str = "o",
          y: str = "acc_mean", err: str | None = "acc_ci95_seeds") -> None:
    f = table[table["strategy"] == label].sort_values("snr_db")
    if not len(f):
        return
    ax.errorbar(f["snr_db"], f[y], yerr=None if err is None else f[err], label=name, color=color, linestyle=style,
                marker=marker, markersize=3.5, capsize=2, linewidth=1.3)


def _finish(fig, axes, foot: str, path: Path, legend_cols: int = 4) -> None:
    """The legend below the panels (never over a curve), the foot line, the file."""
    handles, labels = [], []
    for ax in np.atleast_1d(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    rows = math.ceil(len(labels) / legend_cols)
    bottom = 0.06 + 0.045 * rows
    fig.legend(handles, labels, loc="lower center", ncol=legend_cols, fontsize=7.5, frameon=False,
               bbox_to_anchor=(0.5, 0.025))
    fig.tight_layout(rect=(0, bottom, 1, 1))
    _foot(fig, foot)
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)


CODEC_LINES = [  # (label pattern, legend, colour, style, marker)
    ("q{b}", "quantise (plain model, all 9 values)", BLACK, "-", "s"),
    ("dof-central_skew{b}", "DoF central_skew", VERMILION, "-", "o"),
    ("dof-skew_diagonal{b}", "DoF skew_diagonal", PURPLE, "-", "v"),
    ("dof-central{b}", "DoF central", BLUE, "-", "D"),
    ("fullproj-central_skew{b}", "full+project central_skew", VERMILION, ":", "o"),
    ("dofx2-central_skew{b}", "DoF central_skew sent twice (averaged)", ORANGE, "--", "o"),
    ("posthoc-central_skew{b}", "posthoc central_skew", GREY, "--", "x"),
    ("prune-mag{b}", "prune magnitude", GREEN, "-", "^"),
    ("prune-mag-ft{b}", "prune magnitude + fine-tune (same budget)", GREEN, "--", "P"),
    ("prune-mag-ft-posexp{b}", "prune mag. + ft, positions exposed", SKY, "-.", "X"),
]


def fig_accuracy_vs_snr(table: pd.DataFrame, foot: str, path: Path) -> None:
    """Digital: accuracy against Eb/N0 per bit-width, intervals over training seeds."""
    import matplotlib.pyplot as plt

    t = table[table["kind"] == "digital"]
    fig, axes = plt.subplots(1, len(BITS), figsize=(6.5 * len(BITS), 4.6), sharey=True)
    for ax, b in zip(np.atleast_1d(axes), BITS):
        for pattern, name, color, style, marker in CODEC_LINES:
            label = pattern.format(b=b) if pattern.startswith("q") else pattern.format(b=f"-{b}")
            _line(ax, t, label, name, color, style, marker)
        ax.set_title(f"{b}-bit values, BPSK over AWGN")
        ax.set_xlabel("Eb/N0 (dB)")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("device accuracy (3 models, 95% CI)")
    np.atleast_1d(axes)[0].set_ylim(0, 1.02)
    _finish(fig, axes, foot, path)


def fig_device_spread(table: pd.DataFrame, foot: str, path: Path) -> None:
    """The device-level spread: median and 10-90% band of device-round accuracies (all runs)."""
    import matplotlib.pyplot as plt

    panels = [("digital", 4), ("analog", None)]
    panels = [p for p in panels if (table["kind"] == p[0]).any()]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.6))
    chosen = [("q{b}", "quantise / fp32", BLACK), ("dof-central_skew{b}", "DoF central_skew", VERMILION),
              ("fullproj-central_skew{b}", "full+project central_skew", BLUE),
              ("prune-mag-ft{b}", "prune magnitude + fine-tune", GREEN)]
    for ax, (kind, b) in zip(np.atleast_1d(axes), panels):
        t = table[table["kind"] == kind]
        for i, (pattern, name, color) in enumerate(chosen):
            label = (f"q{b}" if b else "fp32") if pattern.startswith("q") else pattern.format(b=f"-{b}" if b else "")
            f = t[t["strategy"] == label].sort_values("snr_db")
            if not len(f):
                continue
            x = f["snr_db"] + (i - 1.5) * 0.18  # side by side, not on top of each other
            ax.errorbar(x, f["acc_device_p50"], yerr=[f["acc_device_p50"] - f["acc_device_p10"],
                                                      f["acc_device_p90"] - f["acc_device_p50"]],
                        color=color, marker="o", markersize=3.5, capsize=2, linewidth=1.0, label=name)
        ax.set_title(f"{kind}" + (f", {b}-bit" if b else ", float32") + ": device-round accuracies")
        ax.set_xlabel("Eb/N0 (dB)" if kind == "digital" else "SNR per value (dB)")
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 1.02)
    np.atleast_1d(axes)[0].set_ylabel("median and 10-90% range over device-rounds")
    _finish(fig, axes, foot, path)


def fig_projection(table: pd.DataFrame, foot: str, path: Path) -> None:
    """Projection against repetition at equal redundancy: accuracy and kernel NMSE."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.6))
    lines = [("dof-central_skew{b}", "DoF central_skew (4 values/kernel)", VERMILION, "-"),
             ("dofx2-central_skew{b}", "DoF central_skew sent twice (8 values)", ORANGE, "--"),
             ("fullproj-central_skew{b}", "full+project central_skew (9 values)", BLUE, ":"),
             ("dof-central{b}", "DoF central (5 values)", GREEN, "-"),
             ("dofx2-central{b}", "DoF central sent twice (10 values)", SKY, "--"),
             ("fullproj-central{b}", "full+project central (9 values)", PURPLE, ":")]
    for ax, kind, y, err, ylabel in ((axes[0], "digital", "acc_mean", "acc_ci95_seeds", "device accuracy, 4-bit"),
                                     (axes[1], "analog", "acc_mean", "acc_ci95_seeds", "device accuracy, float32"),
                                     (axes[2], "analog", "kernel_nmse_db", "kernel_nmse_ci95_seeds",
                                      "conv-kernel NMSE (dB), float32")):
        t = table[table["kind"] == kind]
        for pattern, name, color, style in lines:
            _line(ax, t, pattern.format(b="-4" if kind == "digital" else ""), name, color, style, "o", y, err)
        ax.set_title(f"{kind}: {ylabel}")
        ax.set_xlabel("Eb/N0 (dB)" if kind == "digital" else "SNR per value (dB)")
        ax.set_ylabel(ylabel + " (95% CI over models)")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(0, 1.02)
    axes[1].set_ylim(0, 1.02)
    _finish(fig, axes, foot, path, legend_cols=3)


def fig_analog(table: pd.DataFrame, foot: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    t = table[table["kind"] == "analog"]
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for pattern, name, color, style, marker in [("fp32", "fp32 (plain model)", BLACK, "-", "s")] + CODEC_LINES[1:]:
        _line(ax, t, pattern.format(b=""), name, color, style, marker)
    ax.set_xlabel("SNR per value (dB)")
    ax.set_ylabel("device accuracy (3 models, 95% CI)")
    ax.set_title("analog links, float32 values, BatchNorm folded")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    _finish(fig, ax, foot, path, legend_cols=3)


def fig_ratios(strategies: pd.DataFrame, table: pd.DataFrame, foot: str, path: Path, snr: float = 2.5) -> None:
    """Bytes against accuracy at one SNR, 4-bit: each strategy a numbered point, the names in the legend."""
    import matplotlib.pyplot as plt

    t = table[(table["kind"] == "digital") & (table["snr_db"] == snr) & (table["bits"] == 4)]
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.8))
    s = strategies[(strategies["kind"] == "digital") & (strategies["bits"] == 4)].sort_values("model_ratio")
    y = np.arange(len(s))
    axes[0].barh(y - 0.2, s["model_ratio"], height=0.4, color=BLUE, label="whole model")
    axes[0].barh(y + 0.2, s["conv_ratio"], height=0.4, color=ORANGE, label="conv kernels only")
    axes[0].set_yticks(y, s["strategy"], fontsize=7)
    axes[0].set_xlabel("compression ratio against float32 (payload, 4-bit)")
    axes[0].grid(alpha=0.3, axis="x")
    colors = [BLACK, VERMILION, PURPLE, BLUE, GREEN, SKY, ORANGE, GREY]
    markers = "osD^v<>PXh*p"  # 12 shapes against 8 colours: no two points look alike
    seen: dict[int, int] = {}
    for i, (_, row) in enumerate(t.sort_values("bytes_down_mean").iterrows()):
        kb = row["bytes_down_mean"] / 1e3
        same = seen.get(round(kb * 10), 0)  # equal bytes (q4 and both full+project): side by side
        seen[round(kb * 10)] = same + 1
        axes[1].errorbar(kb * 1.04 ** same, row["acc_mean"], yerr=row["acc_ci95_seeds"], marker=markers[i % len(markers)],
                         color=colors[i % len(colors)], linestyle="none", capsize=2, label=f"{row['strategy']}")
    axes[1].set_xscale("log")
    axes[1].set_xlabel(f"kB sent per device at Eb/N0 = {snr:g} dB (payload + protection, log)")
    axes[1].set_ylabel("device accuracy, 4-bit (95% CI over models)")
    axes[1].set_ylim(0, 1.02)
    axes[1].grid(alpha=0.3, which="both")
    _finish(fig, axes, foot, path, legend_cols=5)


# ---- tables ------------------------------------------------------------------------------


def strategy_table(out: Path) -> pd.DataFrame:
    """Per (kind, strategy): payload bytes and ratios (from the first run folder of each kind)."""
    from testbed.report import load_run

    rows = []
    for kind in STUDY_CONFIGS:
        folders = sorted((out / kind).glob("f*"))
        if not folders:
            continue
        run = load_run(folders[0], folders[0].name)
        for label, p in run.payloads.items():
            label, seed = split_label(label)
            if seed not in (None, min(TRAIN_SEEDS)):  # every training seed's payload has the same size
                continue
            rows.append({"kind": kind, "strategy": label, **describe_label(label), "payload_bytes": p.get("total_bytes"),
                         "protected_bytes": p.get("protected_bytes"), "model_ratio": p.get("model_ratio"),
                         "conv_ratio": p.get("conv_ratio")})
    return pd.DataFrame(rows)


def _pm(mean: float, ci: float, scale: float = 100.0) -> str:
    if mean != mean:
        return "-"
    return f"{scale * mean:.1f}" if ci != ci else f"{scale * mean:.1f} ± {scale * ci:.1f}"


def accuracy_markdown(table: pd.DataFrame, kind: str, labels, col: str = "acc_mean", ci: str = "acc_ci95_seeds",
                      scale: float = 100.0) -> str:
    t = table[table["kind"] == kind]
    snrs = sorted(t["snr_db"].unique())
    lines = ["| strategy | " + " | ".join(f"{s:g} dB" for s in snrs) + " |", "|---|" + "---|" * len(snrs)]
    for label in labels:
        f = t[t["strategy"] == label]
        if not len(f):
            continue
        cells = []
        for snr in snrs:
            x = f[f["snr_db"] == snr]
            cells.append(_pm(float(x[col].iloc[0]), float(x[ci].iloc[0]), scale) if len(x) else "-")
        lines.append(f"| `{label}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def tables_markdown(table: pd.DataFrame, tests: pd.DataFrame, models: pd.DataFrame, strategies: pd.DataFrame) -> str:
    out = ["# Study tables (generated by scripts/reproduce_symmetry.py)\n",
           "Accuracy in %: mean over the training seeds (each seed: the mean over both fleet seeds, every device and "
           "round) ± the half-width of the 95% t-interval over the training seeds (2 degrees of freedom).\n",
           "## Trained models\n", "| training key | seed | test accuracy (%) | training time (s) | threads |",
           "|---|---|---|---|---|"]
    for _, r in models.sort_values(["training_key", "train_seed"]).iterrows():
        out.append(f"| {r['training_key']} | {r['train_seed']} | {100 * r['test_accuracy']:.2f} | "
                   f"{r['train_seconds']:.0f} | {r['threads']} |")
    summary = models.groupby("training_key")["test_accuracy"].agg(["mean", "min", "max"])
    out += ["", "| training key | mean test accuracy (%) | min | max |", "|---|---|---|---|"]
    for key, r in summary.iterrows():
        out.append(f"| {key} | {100 * r['mean']:.2f} | {100 * r['min']:.2f} | {100 * r['max']:.2f} |")
    out += ["", "## Payloads\n", "| run | strategy | payload (B) | protected (B) | model ratio | conv ratio |",
            "|---|---|---|---|---|---|"]
    for _, r in strategies.iterrows():
        out.append(f"| {r['kind']} | `{r['strategy']}` | {int(r['payload_bytes']):,} | {int(r['protected_bytes']):,} | "
                   f"{r['model_ratio']:.2f} | {r['conv_ratio']:.2f} |")
    out.append("")
    for kind in ("digital", "analog"):
        labels = list(strategies.loc[strategies["kind"] == kind, "strategy"])
        if labels:
            out += [f"## {kind}: accuracy (%), 95% CI over training seeds\n", accuracy_markdown(table, kind, labels)]
            out += [f"## {kind}: conv-kernel NMSE (dB), 95% CI over training seeds\n",
                    accuracy_markdown(table, kind, labels, "kernel_nmse_db", "kernel_nmse_ci95_seeds", 1.0)]
    out += ["## Paired tests (every verdict; Holm over all of them)\n",
            "A - B per training seed on the same devices, rounds and noise draws; `p seeds`: one-sample t-test of the "
            "three per-seed mean differences; `p devices`: Wilcoxon signed-rank over every device-round pair "
            "(conditional on these models). Accuracy differences in points, NMSE in dB.\n",
            "| verdict | claim | A | B | SNR (dB) | A - B | 95% CI (seeds) | per seed | p seeds (Holm) | p devices (Holm) | verdict (seeds) | verdict (devices) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in tests.iterrows():
        scale = 100.0 if r["metric"] == "accuracy" else 1.0
        per = " ".join(f"{scale * float(x):+.1f}" for x in str(r["seed_diffs"]).split())
        out.append(f"| {r['verdict']} | {r['claim']} | `{r['a']}` | `{r['b']}` | {r['snr_db']} | {scale * r['mean_diff']:+.1f} | "
                   f"± {scale * r['ci95_seeds']:.1f} | {per} | {r['p_seeds']:.2g} ({r['p_seeds_holm']:.2g}) | "
                   f"{r['p_devices']:.2g} ({r['p_devices_holm']:.2g}) | {r['verdict_seeds']} | {r['verdict_devices']} |")
    return "\n".join(out) + "\n"


# ---- the whole analysis ------------------------------------------------------------------


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "torch": torch.__version__}


def make_figures(out: Path, results: Path, timing: dict | None, models: pd.DataFrame | None) -> None:
    """Analyse the run folders under ``out``; write figures, tables, tests and rows into ``results``."""
    import matplotlib

    matplotlib.use("Agg")
    results.mkdir(parents=True, exist_ok=True)
    rows = device_rows(out)
    rows.to_parquet(results / "devices.parquet", index=False, compression="zstd")
    table = headline(rows)
    table.to_csv(results / "by_snr.csv", index=False, float_format="%.6g")
    per_seed(rows).to_csv(results / "by_snr_and_seed.csv", index=False, float_format="%.6g")
    tests = verdict_tests(rows)
    tests.to_csv(results / "tests.csv", index=False, float_format="%.6g")
    strategies = strategy_table(out)
    strategies.to_csv(results / "strategies.csv", index=False, float_format="%.6g")
    if models is None and (results / "models.csv").exists():
        models = pd.read_csv(results / "models.csv")
    if models is not None:
        models.to_csv(results / "models.csv", index=False, float_format="%.6g")
    meta_path = results / "study_meta.json"
    if timing is None and meta_path.exists():  # figures only: keep the measured times
        timing = json.loads(meta_path.read_text()).get("timing")
    foot = (f"{machine()['platform']}, {os.cpu_count()} CPUs shared with other work; "
            f"{int(rows['train_seed'].nunique())} training seeds x {int(rows['fleet_seed'].nunique())} fleet seeds"
            + (f"; whole study {timing['total_s'] / 60:.0f} min" if timing and "total_s" in timing else ""))
    if (rows["kind"] == "digital").any():
        fig_accuracy_vs_snr(table, foot, results / "digital_accuracy_vs_snr.png")
        fig_ratios(strategies, table, foot, results / "compression_ratios.png")
    if (rows["kind"] == "analog").any():
        fig_analog(table, foot, results / "analog_accuracy_vs_snr.png")
    fig_device_spread(table, foot, results / "device_spread.png")
    fig_projection(table, foot, results / "projection_vs_repetition.png")
    (results / "tables.md").write_text(tables_markdown(table, tests, models if models is not None else pd.DataFrame(
        columns=["training_key", "train_seed", "test_accuracy", "train_seconds", "threads"]), strategies))
    meta = {
        "runs": sorted(f"{k}/{p.name}" for k in STUDY_CONFIGS for p in (out / k).glob("f*")),
        "train_seeds": sorted(int(x) for x in rows["train_seed"].unique()),
        "fleet_seeds": sorted(int(x) for x in rows["fleet_seed"].unique()),
        "device_rows": len(rows),
        "machine": machine(),
        "timing": timing,
        "load_average_at_analysis": list(os.getloadavg()),
    }
    meta_path.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    print(f"figures and tables in {results}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="folder of the run folders (default runs/symmetry-study; --tiny: runs/symmetry-tiny)")
    parser.add_argument("--results", default=None, help="figures and tables (default docs/results; with --tiny or --dataset: OUT/results)")
    parser.add_argument("--figures-only", action="store_true", help="analyse existing run folders; run nothing")
    parser.add_argument("--tiny", action="store_true", help="smoke test: 2 training seeds, 1 fleet seed, few strategies")
    parser.add_argument("--dataset", default=None, help="a registered dataset name, or a path to dataset files (.npz, image folder, idx folder)")
    parser.add_argument("--only", choices=list(STUDY_CONFIGS), action="append", help="run only this kind (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override for every run")
    parser.add_argument("--jobs", type=int, default=2, help="parallel training processes (default 2)")
    args = parser.parse_args(argv)

    overrides = dataset_overrides(args.dataset) + args.overrides
    default_out = "runs/symmetry-tiny" if args.tiny else ("runs/symmetry-study" if args.dataset is None else
                                                          f"runs/symmetry-{Path(args.dataset).stem}")
    out = Path(args.out or default_out)
    results = Path(args.results) if args.results else (out / "results" if args.tiny or args.dataset else RESULTS)
    seeds, fleet_seeds = TINY_SEEDS if args.tiny else (TRAIN_SEEDS, FLEET_SEEDS)
    kinds = args.only or list(STUDY_CONFIGS)
    timing, models = None, None
    if not args.figures_only:
        start = time.perf_counter()
        models = train_models(kinds, seeds, args.tiny, overrides, args.jobs)
        trained = time.perf_counter() - start
        walls = run_study(out, kinds, seeds, fleet_seeds, args.tiny, overrides)
        timing = {"training_s": trained, "fleet_runs_s": walls, "started_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(time.time() - (time.perf_counter() - start)))}
        analysis = time.perf_counter()
        make_figures(out, results, timing, models)
        timing["analysis_s"] = time.perf_counter() - analysis
        timing["total_s"] = time.perf_counter() - start
        timing["load_average_1_5_15_at_end"] = list(os.getloadavg())
    make_figures(out, results, timing, models)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
