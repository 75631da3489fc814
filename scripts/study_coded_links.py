"""Which codec wins on a coded link? q8, central_skew DoF and fine-tuned pruning, with unequal error
protection of their top m bit-planes, over uncoded BPSK and over the 5G NR link with link adaptation.

    PYTHONPATH=. nice .venv/bin/python scripts/study_coded_links.py            # docs/results/coded_links/

The models are configs/nr.yaml's (the quickstart's data and model; trained once, then from the
model cache). Each strategy is encoded once per m in {0, 1, 2, 8}; each (link, SNR, draw) is one
transmission with the noise key ``(seed, "link", 1, device, "down")`` the testbed uses, the same for
every strategy (paired comparisons); the device decodes and measures accuracy on the first
``--test`` test images. A failed delivery leaves the device without a model: it counts as chance
accuracy, 0.1 (**our choice**), and is counted in ``delivered``.

Links (latency 2 ms each, one HARQ or ARQ round trip):

- ``awgn``: BPSK at Eb/N0, 10 Mbit/s, 1 KB packets, ``protected_repetition: auto``, 8 sends;
- ``nr-once``: nr, link adaptation for 10% BLER (PDSCH table 1, 51 PRBs, 30 kHz), protected CBs
  with up to 4 HARQ transmissions, exposed CBs sent once (a failed one: raw bit errors);
- ``nr-harq``: the same with exposed CBs HARQ'd too (the default).

Writes study.csv (one row per transmission), summary.md (the tables docs/LINKS.md quotes) and the
figures accuracy_vs_snr.png and accuracy_vs_airtime.png.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ("q8", "skew-dof8", "prune-skew8")
MSB = (0, 1, 2, 8)
CHANCE = 0.1
LINKS = {
    "awgn": (dict(model="awgn", modulation="bpsk", bandwidth_mbps=10, packet_bytes=1024, latency_ms=2), (0, 2, 4, 6, 8, 10)),
    "nr-once": (dict(model="nr", mcs_index="auto", max_attempts=4, prbs=51, latency_ms=2, exposed_harq="once"), (-5, -2, 0, 3, 6, 10, 15)),
    "nr-harq": (dict(model="nr", mcs_index="auto", max_attempts=4, prbs=51, latency_ms=2), (-5, 0, 6, 15)),
}


def models(config_path: Path):
    from strategies.registry import build
    from testbed.config import load_config
    from testbed.data import load_data
    from testbed.training import central_model, receiver_model

    config = load_config(config_path, [])
    dataset = load_data(config.data, config_path.parent)
    specs = config.strategy_specs()
    out = {}
    for label in STRATEGIES:
        base = build(specs[label])
        state = central_model(base, config.model, dataset, config.seed, progress=False).state_dict()
        template = receiver_model(base, config, dataset)
        for m in MSB:
            strategy = build({**specs[label], "protection": {"msb": m}}) if m else base
            out[(label, m)] = (strategy, strategy.encode(state), template)
    return config, dataset, out


def run(config_path: Path, reps: int, n_test: int) -> pd.DataFrame:
    from testbed.links import link_params, make_link
    from testbed.rng import derive_rng
    from testbed.training import evaluate

    config, dataset, coded = models(config_path)
    x, y = dataset.test_x[:n_test], dataset.test_y[:n_test]
    clean: dict = {}
    rows = []
    for link_name, (params, snrs) in LINKS.items():
        for i, snr_db in enumerate(snrs):
            link = make_link(link_params(snr_db=float(snr_db), **params))
            for rep in range(reps):
                device = 100 * i + rep
                for (label, m), (strategy, payload, model) in coded.items():
                    t = link.transmit(payload, derive_rng(config.seed, "link", 1, device, "down"))
                    s = t.stats
                    accuracy = math.nan
                    if s.delivered:
                        key = (label, m) if t.received is payload else None  # undamaged: evaluated once
                        if key is None or key not in clean:
                            model.load_state_dict(strategy.decode(t.received, model.state_dict()), strict=True)
                            accuracy = float(evaluate(model, x, y)[0])
                            if key is not None:
                                clean[key] = accuracy
                        else:
                            accuracy = clean[key]
                    rows.append(dict(link=link_name, snr_db=snr_db, device=device, strategy=label, msb=m,
                                     payload_bytes=payload.nbytes, protected_bytes=payload.protected_nbytes,
                                     bytes_sent=s.bytes_sent, airtime_s=s.airtime_s, bit_errors=s.bit_errors,
                                     delivered=s.delivered, mcs=s.mcs, accuracy=accuracy,
                                     effective=accuracy if s.delivered else CHANCE))
    return pd.DataFrame(rows)


def paired(df: pd.DataFrame, a: str, b: str, link: str, m: int) -> dict:
    """Effective accuracy of ``a`` minus ``b`` over the same (SNR, device) draws: mean, 95% t interval, Wilcoxon p."""
    from scipy.stats import t as student, wilcoxon

    sel = df[(df.link == link) & (df.msb == m)]
    wide = sel.pivot_table(index=["snr_db", "device"], columns="strategy", values="effective")
    d = (wide[a] - wide[b]).to_numpy()
    mean, half = float(d.mean()), float(student.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan
    p = float(wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
    return dict(link=link, msb=m, a=a, b=b, n=len(d), mean=mean, low=mean - half, high=mean + half, p=p)


def summary(df: pd.DataFrame, machine: str) -> str:
    lines = [f"Measured on {machine}.", ""]
    lines.append("Mean effective accuracy (failed delivery = 0.1) per link and SNR (dB; Eb/N0 for awgn, Es/N0 for nr), "
                 "and mean airtime (ms), over the draws:")
    for link in LINKS:
        sel = df[df.link == link]
        snrs = sorted(sel.snr_db.unique())
        lines += ["", f"**{link}**", "", "| strategy | m | bytes | " + " | ".join(f"{s:g} dB" for s in snrs) + " | airtime ms (mean over SNRs) | delivered |",
                  "|---|---:|---:|" + "---:|" * len(snrs) + "---:|---:|"]
        for (label, m), g in sel.groupby(["strategy", "msb"], sort=False):
            acc = g.groupby("snr_db").effective.mean()
            lines.append(f"| {label} | {m} | {int(g.payload_bytes.iloc[0])} | " + " | ".join(f"{acc[s]:.3f}" for s in snrs)
                         + f" | {1e3 * g.airtime_s.mean():.1f} | {g.delivered.mean():.2f} |")
    lines += ["", "Paired differences of effective accuracy over the same (SNR, device) draws: mean, 95% t interval, "
              "Wilcoxon signed-rank p (not significant: p > 0.05, or an interval containing 0):", "",
              "| link | m | comparison | pairs | mean | 95% interval | p |", "|---|---:|---|---:|---:|---|---:|"]
    for link in LINKS:
        for m in MSB:
            for a, b in (("skew-dof8", "q8"), ("prune-skew8", "q8"), ("skew-dof8", "prune-skew8")):
                r = paired(df, a, b, link, m)
                lines.append(f"| {link} | {m} | {a} - {b} | {r['n']} | {r['mean']:+.3f} | [{r['low']:+.3f}, {r['high']:+.3f}] | {r['p']:.2g} |")
    lines += ["", "Each m against m = 0 for the same strategy (paired):", "",
              "| link | strategy | m | mean | 95% interval | p |", "|---|---|---:|---:|---|---:|"]
    for link in LINKS:
        for label in STRATEGIES:
            for m in MSB[1:]:
                sel = df[(df.link == link) & (df.strategy == label) & df.msb.isin([0, m])]
                wide = sel.pivot_table(index=["snr_db", "device"], columns="msb", values="effective")
                d = (wide[m] - wide[0]).to_numpy()
                from scipy.stats import t as student, wilcoxon

                half = float(student.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
                p = float(wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
                lines.append(f"| {link} | {label} | {m} | {d.mean():+.3f} | [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}] | {p:.2g} |")
    return "\n".join(lines) + "\n"


def figures(df: pd.DataFrame, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"q8": "tab:blue", "skew-dof8": "tab:orange", "prune-skew8": "tab:green"}
    styles = {0: "-", 1: "--", 2: "-.", 8: ":"}
    for kind, xcol, xlabel in (("snr", "snr_db", "SNR (dB): Eb/N0 for awgn, Es/N0 for nr"), ("airtime", "airtime_s", "mean airtime per transfer (s)")):
        fig, axes = plt.subplots(1, len(LINKS), figsize=(5 * len(LINKS), 4), sharey=True)
        for ax, link in zip(axes, LINKS):
            sel = df[df.link == link]
            for (label, m), g in sel.groupby(["strategy", "msb"], sort=False):
                mean = g.groupby("snr_db")[["effective", "airtime_s"]].mean()
                xs = mean.index if kind == "snr" else mean["airtime_s"]
                ax.plot(xs, mean["effective"], styles[m], color=colors[label], marker="o", ms=3, label=f"{label} m={m}")
            ax.set_title(link)
            ax.set_xlabel(xlabel)
            if kind == "airtime":
                ax.set_xscale("log")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("accuracy (failed delivery = 0.1)")
        axes[-1].legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(out / f"accuracy_vs_{kind}.png", dpi=110)
        plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "nr.yaml")
    parser.add_argument("--reps", type=int, default=6, help="draws (devices) per link and SNR")
    parser.add_argument("--test", type=int, default=500, help="test images per evaluation")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "coded_links")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    df = run(args.config, args.reps, args.test)
    df.to_csv(args.out / "study.csv", index=False)
    load = " ".join(f"{x:.1f}" for x in __import__("os").getloadavg())
    machine = (f"{platform.node() or 'vm'} | {platform.platform()} | {__import__('os').cpu_count()} CPUs, load average {load} "
               f"at the end | {args.reps} draws per SNR, {args.test} test images | {time.time() - start:.0f} s")
    (args.out / "summary.md").write_text(summary(df, machine))
    figures(df, args.out)
    print((args.out / "summary.md").read_text())


if __name__ == "__main__":
    main()
