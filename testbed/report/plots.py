"""The report's figures, drawn with matplotlib (Agg) and returned as inline SVG text.

Colours follow the Okabe-Ito palette (safe for the common colour-vision
deficiencies) and are keyed by strategy label; in a report of several runs the
run is told apart by marker and line style, so every series has a colour *and*
a shape. Large scatters are rasterised inside the SVG to keep the page small.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import EngFormatter, MaxNLocator  # noqa: E402

from testbed.report.runs import RunData  # noqa: E402
from testbed.report.tables import device_accuracy  # noqa: E402

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#000000", "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
LINESTYLES = ["-", "--", "-.", ":"]
RASTERISE_ABOVE = 2000  # scatter points per figure beyond which they are drawn as an image
FLOOR_LABEL = "exact\n(-inf dB)"

_STYLE = {
    "svg.fonttype": "none",  # text stays text: smaller, selectable, searchable
    "svg.hashsalt": "testbed-report",  # deterministic ids
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8,
    "legend.frameon": False,
}


@dataclass(frozen=True)
class Series:
    """One strategy of one run, and how it is drawn."""

    run: RunData
    strategy: str
    label: str
    color: str
    marker: str
    linestyle: str

    @property
    def rows(self) -> pd.DataFrame:
        return self.run.metrics[self.run.metrics["strategy"] == self.strategy]


def series_of(runs: list[RunData]) -> list[Series]:
    strategies = list(dict.fromkeys(s for run in runs for s in run.strategies))
    several = len(runs) > 1
    out = []
    for index, run in enumerate(runs):
        for strategy in run.strategies:
            k = strategies.index(strategy)
            out.append(
                Series(
                    run=run,
                    strategy=strategy,
                    label=f"{run.label} / {strategy}" if several else strategy,
                    color=OKABE_ITO[k % len(OKABE_ITO)],
                    # One run: shapes vary with the strategy too, for readers without colour.
                    marker=MARKERS[(index if several else k) % len(MARKERS)],
                    linestyle=LINESTYLES[(index if several else 0) % len(LINESTYLES)],
                )
            )
    return out


# ---- SVG plumbing ------------------------------------------------------------------------

_ID = re.compile(r'id="([^"]+)"')


def _to_svg(fig, prefix: str) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]  # drop the XML prolog and DOCTYPE: the SVG is inlined in HTML
    # Several SVGs share one HTML document: give each figure's ids their own prefix.
    for old in set(_ID.findall(svg)):
        new = f"{prefix}-{old}"
        svg = svg.replace(f'id="{old}"', f'id="{new}"').replace(f"#{old})", f"#{new})").replace(f'"#{old}"', f'"#{new}"')
    return svg


def _legend(ax, series: list[Series] | None = None, lines: bool = True) -> None:
    """The legend right of the axes; with ``series``, one solid entry per series (not the
    faint scatter dots), plus any other labelled artist (the Pareto front)."""
    handles, labels = ax.get_legend_handles_labels()
    if series is not None:
        own = {s.label for s in series}
        extra = [(h, l) for h, l in zip(handles, labels) if l not in own]
        handles = [Line2D([], [], color=s.color, marker=s.marker, linestyle=s.linestyle if lines else "none")
                   for s in series] + [h for h, _ in extra]
        labels = [s.label for s in series] + [l for _, l in extra]
    if not handles:
        return
    ncol = 1 if len(handles) <= 12 else 2
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=ncol, borderaxespad=0)


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=10, color="#444444", wrap=True)


def _finite(values) -> np.ndarray:
    array = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    return array[np.isfinite(array)]


# ---- the figures ---------------------------------------------------------------------------


def accuracy_vs_snr(series: list[Series]):
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    snr_all = np.concatenate([_finite(s.rows["snr_db"]) for s in series] or [np.array([])])
    if snr_all.size == 0:
        _note(ax, "No link SNR recorded in these runs (ideal links, or SNR not applicable).")
        ax.set_xlabel("link SNR (dB)")
        ax.set_ylabel("accuracy on the device's test split")
        return fig
    total_points = sum(len(s.rows) for s in series)
    edges = np.linspace(snr_all.min(), snr_all.max(), 11) if snr_all.max() > snr_all.min() else None
    skipped = []
    for s in series:
        rows = s.rows[~s.rows["failed"]]
        rows = rows[np.isfinite(rows["snr_db"].to_numpy(dtype=float)) & rows["accuracy"].notna()]
        if rows.empty:
            skipped.append(s.label)
            continue
        ax.scatter(rows["snr_db"], rows["accuracy"], s=8, alpha=0.25, color=s.color, marker=s.marker,
                   linewidths=0, rasterized=total_points > RASTERISE_ABOVE)
        if edges is not None:
            bins = pd.cut(rows["snr_db"], edges, include_lowest=True)
            means = rows.groupby(bins, observed=True)["accuracy"].mean()
            centres = [interval.mid for interval in means.index]
            ax.plot(centres, means.to_numpy(), color=s.color, marker=s.marker, linestyle=s.linestyle, label=s.label)
        else:
            ax.plot([snr_all[0]], [rows["accuracy"].mean()], color=s.color, marker=s.marker, label=s.label)
    ax.set_xlabel("link SNR (dB)")
    ax.set_ylabel("accuracy on the device's test split")
    ax.set_title("Accuracy against link SNR (dots: device-rounds; lines: mean per SNR bin)")
    if skipped:
        ax.text(0.01, 0.01, "no SNR: " + ", ".join(skipped), transform=ax.transAxes, fontsize=7, color="#444444")
    _legend(ax)
    return fig


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (bytes, accuracy) points no other point beats: fewer-or-equal bytes and
    higher accuracy, or fewer bytes and equal accuracy. NaN points are never on the front."""
    valid = [i for i, (b, a) in enumerate(points) if np.isfinite(b) and np.isfinite(a)]
    valid.sort(key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in valid:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def accuracy_vs_bytes(series: list[Series], table: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    keyed = table.set_index(["run", "strategy"])
    points = []
    for s in series:
        row = keyed.loc[(s.run.label, s.strategy)]
        points.append((float(row["bytes_per_device_round"]), float(row["accuracy_mean"]), float(row["accuracy_p10"])))
    plotted = [(s, p) for s, p in zip(series, points) if np.isfinite(p[0]) and np.isfinite(p[1])]
    if not plotted:
        _note(ax, "No delivered model has an accuracy yet.")
    for s, (b, mean, p10) in plotted:
        ax.errorbar([b], [mean], yerr=[[mean - p10 if np.isfinite(p10) else 0], [0]], color=s.color,
                    marker=s.marker, markersize=7, capsize=3, linestyle="none", label=s.label)
        if len(plotted) <= 8 and len({p.run.label for p, _ in plotted}) == 1:
            ax.annotate(s.label, (b, mean), textcoords="offset points", xytext=(5, 4), fontsize=7)
    front = pareto_front([(b, m) for b, m, _ in points])
    if front:
        xs = [points[i][0] for i in front]
        ys = [points[i][1] for i in front]
        ax.step(xs, ys, where="post", color="#555555", linestyle=":", linewidth=1)
        ax.scatter(xs, ys, s=160, facecolors="none", edgecolors="#000000", linewidths=1.2, label="Pareto front", zorder=3)
    xs = [p[0] for _, p in plotted]
    if xs and max(xs) > 10 * min(xs) > 0:
        ax.set_xscale("log")
    ax.xaxis.set_major_formatter(EngFormatter(unit="B"))
    ax.set_xlabel("bytes per device per round (down + up, incl. overhead and resends)")
    ax.set_ylabel("accuracy across devices (mean; bar down to p10)")
    ax.set_title("Accuracy against bytes: the trade-off (circled: Pareto front)")
    _legend(ax)
    return fig


def accuracy_spread(series: list[Series]):
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(series) + 2), 4.2))
    data = [device_accuracy(s.run, s.strategy).to_numpy(dtype=float) for s in series]
    positions = np.arange(1, len(series) + 1)
    present = [i for i, d in enumerate(data) if d.size]
    if present:
        boxes = ax.boxplot([data[i] for i in present], positions=positions[present], widths=0.6,
                           patch_artist=True, showfliers=False, medianprops={"color": "#000000"})
        for i, patch in zip(present, boxes["boxes"]):
            patch.set_facecolor(series[i].color)
            patch.set_alpha(0.45)
    rng = np.random.default_rng(0)  # jitter only; fixed so the page is reproducible
    raster = sum(d.size for d in data) > RASTERISE_ABOVE
    for i, (s, d) in enumerate(zip(series, data)):
        if d.size == 0:
            ax.text(positions[i], 0.5, "no data", ha="center", va="center", rotation=90, fontsize=8,
                    transform=ax.get_xaxis_transform())
        elif d.size <= 300:
            ax.scatter(positions[i] + rng.uniform(-0.18, 0.18, d.size), d, s=9, color=s.color, marker=s.marker,
                       alpha=0.7, linewidths=0, zorder=3, rasterized=raster)
    ax.set_xticks(positions)
    ax.set_xticklabels([s.label for s in series], rotation=30 if len(series) > 4 else 0, ha="right" if len(series) > 4 else "center")
    ax.set_xlim(0.4, len(series) + 0.6)
    ax.set_xlabel("strategy")
    ax.set_ylabel("per-device accuracy")
    ax.set_title("Spread of accuracy across devices (box: quartiles, whiskers: 1.5 IQR; dots: devices)")
    return fig


def recon_vs_snr(series: list[Series]):
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    has_snr = any(_finite(s.rows["snr_db"]).size for s in series)
    if not has_snr:
        _note(ax, "No link SNR recorded in these runs: see the NMSE columns of the table.")
        ax.set_xlabel("link SNR (dB)")
        ax.set_ylabel("reconstruction NMSE (dB)")
        return fig
    finite = np.concatenate([_finite(s.rows[~s.rows["failed"]]["recon_nmse_db"]) for s in series] or [np.array([])])
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (-10.0, 0.0)
    # Bit errors in float exponents can give absurd errors (hundreds of dB); those go on a
    # ceiling line so that they do not squash the rest of the plot.
    ceiling = None
    if finite.size >= 5 and high > np.percentile(finite, 90) + 30:
        ceiling = max(float(np.percentile(finite, 90)) + 20, 10.0)
    top = ceiling if ceiling is not None else high
    span = max(top - low, 10.0)
    floor = low - 0.12 * span
    total_points = sum(len(s.rows) for s in series)
    raster = total_points > RASTERISE_ABOVE
    any_exact = False
    for s in series:
        rows = s.rows[~s.rows["failed"]]
        snr = rows["snr_db"].to_numpy(dtype=float)
        nmse = rows["recon_nmse_db"].to_numpy(dtype=float)
        keep = np.isfinite(snr) & ~np.isnan(nmse)
        snr, nmse = snr[keep], nmse[keep]
        exact = np.isneginf(nmse)
        over = (nmse > ceiling) if ceiling is not None else np.zeros_like(exact)
        body = ~exact & ~over
        any_exact |= bool(exact.any())
        ax.scatter(snr[body], nmse[body], s=10, alpha=0.4, color=s.color, marker=s.marker, linewidths=0, rasterized=raster)
        ax.scatter(snr[exact], np.full(exact.sum(), floor), s=24, color=s.color, marker="v", alpha=0.6, linewidths=0,
                   rasterized=raster)
        ax.scatter(snr[over], np.full(over.sum(), ceiling if ceiling is not None else 0.0), s=24, color=s.color,
                   marker="^", alpha=0.6, linewidths=0, rasterized=raster)
        compression = _finite(rows["recon_nmse_compression_db"])
        if compression.size:
            level = 10 * np.log10(np.mean(np.power(10.0, compression / 10)))
            ax.axhline(level, color=s.color, linestyle="--" if s.linestyle == "-" else s.linestyle, linewidth=1, alpha=0.8)
    upper = top - 0.05 * span if ceiling is not None else top
    lower = floor + 0.06 * span if any_exact else low - 0.05 * span
    marks = [(t, f"{t:g}") for t in MaxNLocator(6).tick_values(low, top) if lower <= t <= upper]
    if any_exact:
        ax.axhline(floor, color="#999999", linewidth=0.6)
        marks.append((floor, FLOOR_LABEL))
    if ceiling is not None:
        ax.axhline(ceiling, color="#999999", linewidth=0.6)
        marks.append((ceiling, f">= {ceiling:.0f}"))
    ax.set_yticks([t for t, _ in marks])
    ax.set_yticklabels([label for _, label in marks])
    ax.set_ylim((floor if any_exact else low) - 0.06 * span, top + 0.06 * span)
    ax.set_xlabel("link SNR (dB)")
    ax.set_ylabel("reconstruction NMSE (dB, received vs float model)")
    ax.set_title("Reconstruction error against SNR (dashed: compression alone)")
    _legend(ax, series, lines=False)
    return fig


def cumulative_bytes(series: list[Series], rounds: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    finals = []
    for s in series:
        rows = rounds[(rounds["run"] == s.run.label) & (rounds["strategy"] == s.strategy)]
        if rows.empty:
            continue
        ax.plot(rows["round"], rows["cumulative_fleet_bytes"], color=s.color, marker=s.marker,
                linestyle=s.linestyle, label=s.label)
        finals.append(float(rows["cumulative_fleet_bytes"].iloc[-1]))
    if not finals:
        _note(ax, "No round finished yet.")
    positive = [f for f in finals if f > 0]
    if positive and max(positive) > 20 * min(positive):
        ax.set_yscale("log")
    ax.yaxis.set_major_formatter(EngFormatter(unit="B"))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("cumulative fleet bytes (all devices, down + up)")
    ax.set_title("Fleet traffic over rounds")
    _legend(ax)
    return fig


def _column(frame: pd.DataFrame, preferred: str, fragment: str) -> str | None:
    if preferred in frame:
        return preferred
    return next((c for c in frame.columns if fragment in str(c).lower()), None)


def fleet_distribution(runs: list[RunData]):
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.4))
    for ax, (preferred, fragment, xlabel) in zip(
        axes, [("snr_db", "snr", "device link SNR (dB)"), ("bandwidth_mbps", "bandwidth", "device bandwidth (Mbit/s)")]
    ):
        drawn = False
        for index, run in enumerate(runs):
            column = _column(run.devices, preferred, fragment)
            values = _finite(run.devices[column]) if column else np.array([])
            if values.size == 0:
                continue
            drawn = True
            ax.hist(values, bins=min(30, max(5, int(np.sqrt(values.size)))), histtype="step", linewidth=1.5,
                    color=OKABE_ITO[index % len(OKABE_ITO)], linestyle=LINESTYLES[index % len(LINESTYLES)],
                    label=run.label if len(runs) > 1 else f"{values.size} devices")
        if not drawn:
            _note(ax, f"no {fragment} column in devices.csv (or all n/a)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("devices")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        if drawn:
            ax.legend(fontsize=7)
    fig.suptitle("The fleet: link quality and bandwidth of its devices (devices.csv)")
    fig.tight_layout()
    return fig


# ---- all of them -----------------------------------------------------------------------------

FIGURES: list[tuple[str, str, str]] = [
    ("accuracy-snr", "Accuracy against link SNR",
     "Each dot is one device in one round (failed deliveries left out); the line is the mean per SNR bin."),
    ("accuracy-bytes", "Accuracy against bytes",
     "Mean accuracy across devices against bytes per device per round; the bar reaches down to the 10th "
     "percentile. Circled points form the Pareto front: no other strategy is both cheaper and more accurate."),
    ("accuracy-spread", "Per-device accuracy spread",
     "Distribution of per-device accuracy (mean over rounds in broadcast mode, last round in federated mode)."),
    ("recon-snr", "Reconstruction error against SNR",
     "NMSE of the received model against the server's float model; exact receptions (-inf dB) sit on the "
     "bottom line, outliers far above the rest (bit errors in float exponents) on the top '>=' line; dashed "
     "lines are the compression error alone (a clean decode)."),
    ("cumulative-bytes", "Cumulative fleet bytes",
     "Bytes the whole fleet received (and sent, in federated mode), summed over rounds."),
    ("fleet", "The fleet", "Distribution of the devices' link SNR and bandwidth, from devices.csv."),
]


def render_figures(runs: list[RunData], table: pd.DataFrame, rounds: pd.DataFrame) -> dict[str, str]:
    """figure id -> inline SVG text, in :data:`FIGURES` order."""
    series = series_of(runs)
    makers: dict[str, Callable[[], object]] = {
        "accuracy-snr": lambda: accuracy_vs_snr(series),
        "accuracy-bytes": lambda: accuracy_vs_bytes(series, table),
        "accuracy-spread": lambda: accuracy_spread(series),
        "recon-snr": lambda: recon_vs_snr(series),
        "cumulative-bytes": lambda: cumulative_bytes(series, rounds),
        "fleet": lambda: fleet_distribution(runs),
    }
    with plt.rc_context(_STYLE):
        return {key: _to_svg(makers[key](), key) for key, _, _ in FIGURES}
