"""The update-compression study (docs/UPDATE.md): every update codec on every drift kind, then a fleet.

Part 1, per drift kind (refine, shift, new-classes) and training seed: one run of the
``update`` scenario with one update (version 0 installed, version 1 sent) and every codec of
CODECS, over a fleet of one ideal-link device and devices at SNRS (BPSK over AWGN). The ideal
figures are the server's (the reference model version 1, exactly what an ideal link delivers,
on the first ``eval_images`` test images); the SNR figures are the devices' (their local test
splits). Part 2: 5 successive updates to 50 devices at 0-20 dB, some devices missing rounds.

    .venv/bin/python scripts/reproduce_update.py --out runs/update-study

Re-running skips finished runs; ``--figures-only`` only makes the figures and tables;
``--rank-rules-only`` runs only the factorised labels whose ranks follow an energy or byte
budget (RANK_RULES: their own runs, the same fleet and seeds) and merges them into the
existing results.json.
Writes docs/results/update/ (figures, results.json, tables.md).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = ROOT / "configs" / "update.yaml"
RESULTS = ROOT / "docs" / "results" / "update"
DRIFTS = ("refine", "shift", "new-classes")
SEEDS = (0, 1, 2)
SNRS = (0, 2, 4, 6, 8, 10, 12, 14, 16, 20)

# label: (family, strategy entry); "full-*" labels send the whole new model.
CODECS = {
    "full-fp32": ("full model", {"strategy": "raw"}),
    "full-q8": ("full model", {"strategy": "quantise", "bits": 8}),
    "delta-q8": ("quantised delta", {"strategy": "quantise", "bits": 8}),
    "delta-q4-rans": ("quantised delta", {"strategy": "quantise", "bits": 4, "entropy": True}),
    "delta-q2-rans": ("quantised delta", {"strategy": "quantise", "bits": 2, "entropy": True}),
    "topk-10": ("top-k delta", {"strategy": "topk", "keep": 0.10, "bits": 8}),
    "topk-3": ("top-k delta", {"strategy": "topk", "keep": 0.03, "bits": 8}),
    "topk-1": ("top-k delta", {"strategy": "topk", "keep": 0.01, "bits": 8}),
    "svd-r4": ("SVD of delta", {"strategy": "lowrank", "rank": 4, "bits": 8}),
    "svd-r2": ("SVD of delta", {"strategy": "lowrank", "rank": 2, "bits": 8}),
    "svd-r1": ("SVD of delta", {"strategy": "lowrank", "rank": 1, "bits": 8}),
    "fact-r4": ("factorised", {"strategy": "factorised", "rank": 4, "bits": 8}),
    "fact-r2": ("factorised", {"strategy": "factorised", "rank": 2, "bits": 8}),
    "fact-r1": ("factorised", {"strategy": "factorised", "rank": 1, "bits": 8}),
    # ranks per layer by a rule, trained at rank 4 (the same retraining as fact-r4): runs of their own
    "fact-e95": ("factorised", {"strategy": "factorised", "energy": 0.95, "max_rank": 4, "bits": 8}),
    "fact-e80": ("factorised", {"strategy": "factorised", "energy": 0.80, "max_rank": 4, "bits": 8}),
    "fact-B3000": ("factorised", {"strategy": "factorised", "budget_bytes": 3000, "max_rank": 4, "bits": 8}),
    "fact-B2000": ("factorised", {"strategy": "factorised", "budget_bytes": 2000, "max_rank": 4, "bits": 8}),
}
RANK_RULES = ("fact-e95", "fact-e80", "fact-B3000", "fact-B2000")
FLEET_CODECS = ("full-q8", "delta-q4-rans", "topk-3", "svd-r2", "fact-r2")
FEDERATED_STYLE = ("quantised delta", "top-k delta")
COMPARABLE = 0.005  # within 0.5 point of the best accuracy


def _strategies(labels) -> str:
    entries = [{"label": label, **CODECS[label][1]} for label in labels]
    return "strategies=" + json.dumps(entries)


def _full_model(labels) -> str:
    return "scenario.full_model=" + json.dumps([label for label in labels if label.startswith("full-")])


def run_folder(out: Path, drift: str, seed: int, label: str) -> Path:
    """The rank-rule labels run apart from the others (added later; the same fleet and seeds)."""
    return out / (f"{drift}-seed{seed}" + ("-ranks" if label in RANK_RULES else ""))


def codec_run_overrides(drift: str, seed: int, labels) -> list[str]:
    models = ["ideal"] + ["awgn"] * len(SNRS)
    return [
        f"seed={seed}", f"scenario.drift={drift}", "rounds=1", "fleet.compute.availability=1",
        f"fleet.devices={1 + len(SNRS)}", f"fleet.link.model={json.dumps(models)}",
        f"fleet.link.snr_db={json.dumps([20, *SNRS])}", "data.test_per_device=200",
        "scenario.deploy_size=500", "scenario.update_size=1000",
        _strategies(labels), _full_model(labels),
    ]


def fleet_run_overrides() -> list[str]:
    return [
        "seed=0", "scenario.drift=shift", "rounds=5", "fleet.devices=50", "fleet.link.model=awgn",
        "fleet.link.snr_db={uniform: [0, 20]}", "fleet.compute.availability=0.8", "data.test_per_device=100",
        "scenario.deploy_size=500", "scenario.update_size=700", "engine.devices_per_node=10",
        _strategies(FLEET_CODECS), _full_model(FLEET_CODECS),
    ]


def run(out: Path, overrides: list[str]) -> Path:
    from testbed.config import load_config
    from testbed.runner import run_experiment

    summary = out / "summary.json"
    if summary.exists() and json.loads(summary.read_text())["rounds_done"] == json.loads(summary.read_text())["rounds"]:
        return out
    config = load_config(CONFIG, overrides)
    resume = (out / "progress.json").exists()
    t0 = time.perf_counter()
    run_experiment(config, out, resume=resume, progress=False, config_path=CONFIG, overwrite=not resume)
    print(f"{out.name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return out


# ---- figures and tables -------------------------------------------------------------------


def mean_ci(values) -> tuple[float, float]:
    """Mean and the half-width of its 95% t interval over seeds."""
    from scipy import stats

    values = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if len(values) < 2:
        return (float(values.mean()) if len(values) else math.nan), math.nan
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean()), float(half)


def codec_table(out: Path, labels) -> dict:
    """Per drift and codec: update bytes, accuracy (new, old) over seeds, accuracy by SNR."""
    import pandas as pd

    table = {}
    for drift in DRIFTS:
        rows = {}
        for label in labels:
            family = CODECS[label][0]
            runs = {s: run_folder(out, drift, s, label) for s in SEEDS}
            v1 = [json.loads((runs[s] / "summary.json").read_text())["strategies"][label]["versions"][1]
                  for s in SEEDS]
            by_snr = {}
            for s in SEEDS:
                m = pd.read_csv(runs[s] / "measurements.csv")
                t = pd.read_csv(runs[s] / "transfers.csv")
                m = m[m["label"] == label].merge(t[["label", "device_id", "link_model", "snr_db"]].rename(
                    columns={"link_model": "link"}), on=["label", "device_id"])
                for _, r in m.iterrows():
                    key = "ideal" if r["link"] == "ideal" else f"{r['snr_db']:g}"
                    by_snr.setdefault(key, []).append(r["accuracy"])
            acc, acc_ci = mean_ci([h["accuracy"] for h in v1])
            old, old_ci = mean_ci([h["accuracy_old"] for h in v1])
            rows[label] = {
                "family": family, "update_bytes": float(np.mean([h["update_bytes"] for h in v1])),
                "accuracy": acc, "accuracy_ci": acc_ci, "accuracy_old": old, "accuracy_old_ci": old_ci,
                "server_accuracy": mean_ci([h["server_accuracy"] for h in v1])[0],
                "deployed_accuracy": mean_ci([json.loads((runs[s] / "summary.json").read_text())
                                              ["strategies"][label]["versions"][0]["accuracy"] for s in SEEDS])[0],
                "by_snr": {k: float(np.nanmean(v)) for k, v in by_snr.items()},
            }
        table[drift] = rows
    return table


def pareto(rows: dict) -> list[str]:
    points = sorted(rows, key=lambda label: (rows[label]["update_bytes"], -rows[label]["accuracy"]))
    front, best = [], -1.0
    for label in points:
        if rows[label]["accuracy"] > best:
            front.append(label)
            best = rows[label]["accuracy"]
    return front


def claim(rows: dict) -> dict:
    """The paper's claim on one drift kind: smallest comparable factorised update vs federated-style."""
    best = max(r["accuracy"] for r in rows.values())  # the best codec at its largest size
    threshold = best - COMPARABLE

    def smallest(families):
        ok = [(r["update_bytes"], label) for label, r in rows.items() if r["family"] in families and r["accuracy"] >= threshold]
        return min(ok) if ok else (None, None)

    fact_bytes, fact = smallest(("factorised",))
    fl_bytes, fl = smallest(FEDERATED_STYLE)
    holds = fact_bytes is not None and fl_bytes is not None and fact_bytes <= 0.5 * fl_bytes
    return {"best_accuracy": best, "threshold": threshold, "factorised": fact, "factorised_bytes": fact_bytes,
            "federated_style": fl, "federated_style_bytes": fl_bytes, "holds": holds}


def fleet_table(out: Path) -> dict:
    import pandas as pd

    m = pd.read_csv(out / "measurements.csv")
    result = {}
    for label in FLEET_CODECS:
        part = m[m["label"] == label]
        rounds, held = {}, {}  # held: device -> version, for the devices that missed rounds too
        for r, g in part.groupby("round"):
            held.update(dict(zip(g["device_id"], g["version"])))
            lags = [int(r) - held.get(d, 0) for d in range(50)]  # version r is the server's after round r
            rounds[int(r)] = {
                "devices": int(len(g)), "failed": int(g["failure"].notna().sum()),
                "accuracy_mean": float(g["accuracy"].mean()), "accuracy_old_mean": float(g["accuracy_old"].mean()),
                "lag_mean": float(np.mean(lags)), "lag_max": int(max(lags)),
                "bundles": int((g["updates_sent"] > 1).sum()), "full": int((g["sent"] == "full").sum()),
            }
        t = pd.read_csv(out / "transfers.csv")
        result[label] = {"rounds": rounds, "bytes_on_air": int(t[t["label"] == label]["bytes"].sum())}
    return result


def figures(table: dict, fleet: dict, machine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = {"full model": "s", "quantised delta": "o", "top-k delta": "v", "SVD of delta": "^", "factorised": "*"}
    fig, axes = plt.subplots(1, len(DRIFTS), figsize=(15, 4.5))
    for ax, drift in zip(axes, DRIFTS):
        rows = table[drift]
        for family, marker in markers.items():
            labels = [label for label, r in rows.items() if r["family"] == family]
            ax.errorbar([rows[label]["update_bytes"] for label in labels], [rows[label]["accuracy"] for label in labels],
                        yerr=[rows[label]["accuracy_ci"] for label in labels], fmt=marker, label=family, capsize=3, ms=8)
        front = pareto(rows)
        ax.plot([rows[label]["update_bytes"] for label in front], [rows[label]["accuracy"] for label in front],
                "k--", lw=0.8, label="Pareto front")
        ax.axhline(rows["full-fp32"]["deployed_accuracy"], color="grey", lw=0.8, ls=":", label="deployed model")
        ax.set_xscale("log")
        ax.set_xlabel("update bytes (exact payload)")
        ax.set_title(drift)
    axes[0].set_ylabel("accuracy on the new task (ideal link)")
    axes[-1].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"One update, 3 training seeds (95% t intervals); {machine}", fontsize=9)
    fig.tight_layout()
    fig.savefig(RESULTS / "accuracy_vs_bytes.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(DRIFTS), figsize=(15, 4.5))
    for ax, drift in zip(axes, DRIFTS):
        for label in ("full-fp32", "full-q8", "delta-q4-rans", "topk-3", "svd-r2", "fact-r2", "fact-r4"):
            snr = table[drift][label]["by_snr"]
            xs = [float(s) for s in snr if s != "ideal"]
            ax.plot(sorted(xs), [snr[f"{x:g}"] for x in sorted(xs)], marker="o", label=label)
        ax.set_xlabel("Eb/N0 (dB), BPSK over AWGN")
        ax.set_title(drift)
    axes[0].set_ylabel("device accuracy on the new task")
    axes[-1].legend(fontsize=8)
    fig.suptitle(f"Devices' accuracy after one update, by SNR (3 seeds, 200 test images each); {machine}", fontsize=9)
    fig.tight_layout()
    fig.savefig(RESULTS / "accuracy_vs_snr.png", dpi=110)
    plt.close(fig)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, f in fleet.items():
        rounds = sorted(f["rounds"])
        ax1.plot(rounds, [f["rounds"][r]["accuracy_mean"] for r in rounds], marker="o", label=label)
        ax2.plot(rounds, [f["rounds"][r]["lag_mean"] for r in rounds], marker="o", label=label)
    ax1.set_xlabel("round (version)")
    ax1.set_ylabel("mean device accuracy, new task")
    ax2.set_xlabel("round (version)")
    ax2.set_ylabel("mean version lag after the round")
    ax1.legend(fontsize=8)
    fig.suptitle(f"5 updates, 50 devices at 0-20 dB, availability 0.8 (shift drift); {machine}", fontsize=9)
    fig.tight_layout()
    fig.savefig(RESULTS / "fleet_rounds.png", dpi=110)
    plt.close(fig)


def tables_md(table: dict, claims: dict, fleet: dict) -> str:
    lines = []
    for drift in DRIFTS:
        rows, c = table[drift], claims[drift]
        lines += [f"### {drift}", "",
                  f"Deployed model: {rows['full-fp32']['deployed_accuracy']:.3f} on the new task.", "",
                  "| codec | family | update bytes | accuracy (new) | accuracy (old) | server's float model | "
                  + " | ".join(f"{s} dB" for s in SNRS) + " |",
                  "|---|---|---:|---:|---:|---:|" + "---:|" * len(SNRS)]
        front = set(pareto(rows))
        for label, r in rows.items():
            snr = " | ".join(f"{r['by_snr'].get(f'{s:g}', math.nan):.3f}" for s in SNRS)
            mark = " (front)" if label in front else ""
            lines.append(f"| {label}{mark} | {r['family']} | {r['update_bytes']:,.0f} | {r['accuracy']:.3f} ± {r['accuracy_ci']:.3f} "
                         f"| {r['accuracy_old']:.3f} ± {r['accuracy_old_ci']:.3f} | {r['server_accuracy']:.3f} | {snr} |")
        verdict = "holds" if c["holds"] else "does not hold"

        def fmt(name, nbytes):
            return f"{name} ({nbytes:,.0f} B)" if name else "none reaches it"

        lines += ["", f"Claim ({drift}): threshold {c['threshold']:.3f} (best {c['best_accuracy']:.3f} less 0.5 point); "
                  f"smallest comparable factorised update: {fmt(c['factorised'], c['factorised_bytes'])}; smallest comparable "
                  f"federated-style update: {fmt(c['federated_style'], c['federated_style_bytes'])}: the claim **{verdict}**.", ""]
    lines += ["### Fleet: 5 updates to 50 devices", "",
              "| codec | round | devices taking part | failed | mean accuracy (new) | mean accuracy (old) | mean lag (all 50) | max lag | bundles | full resends |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, f in fleet.items():
        for r, s in sorted(f["rounds"].items()):
            lines.append(f"| {label} | {r} | {s['devices']} | {s['failed']} | {s['accuracy_mean']:.3f} | {s['accuracy_old_mean']:.3f} "
                         f"| {s['lag_mean']:.2f} | {s['lag_max']} | {s['bundles']} | {s['full']} |")
    lines += ["", "| codec | bytes on the air, 5 rounds, every device |", "|---|---:|"]
    lines += [f"| {label} | {f['bytes_on_air']:,} |" for label, f in fleet.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "update-study")
    parser.add_argument("--figures-only", action="store_true")
    parser.add_argument("--rank-rules-only", action="store_true",
                        help="run only the rank-rule labels; the other codecs and the fleet are taken from "
                             "the existing docs/results/update/results.json (same seeds, same fleet)")
    args = parser.parse_args()
    fleet_out = args.out / "fleet"
    others = [label for label in CODECS if label not in RANK_RULES]
    t0 = time.perf_counter()
    if not args.figures_only:
        for drift in DRIFTS:
            for seed in SEEDS:
                for labels in ((list(RANK_RULES),) if args.rank_rules_only else (others, list(RANK_RULES))):
                    run(run_folder(args.out, drift, seed, labels[0]), codec_run_overrides(drift, seed, labels))
        if not args.rank_rules_only:
            run(fleet_out, fleet_run_overrides())
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.rank_rules_only:
        earlier = json.loads((RESULTS / "results.json").read_text())
        added = codec_table(args.out, RANK_RULES)
        table = {drift: {**{k: v for k, v in earlier["codecs"][drift].items() if k not in RANK_RULES},
                         **added[drift]} for drift in DRIFTS}
        fleet = earlier["fleet"]
    else:
        table = codec_table(args.out, CODECS)
        fleet = fleet_table(fleet_out)
    claims = {drift: claim(table[drift]) for drift in DRIFTS}
    import os

    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU"
    figures(table, fleet, machine)
    (RESULTS / "results.json").write_text(json.dumps({"machine": machine, "codecs": table, "claims": claims,
                                                      "fleet": fleet}, indent=1, default=str))
    (RESULTS / "tables.md").write_text(tables_md(table, claims, fleet))
    print(f"done in {time.perf_counter() - t0:.0f} s; {RESULTS}")


if __name__ == "__main__":
    main()
