"""The report's built-in figures, registered with :func:`testbed.report.figures.figure`.

Each draws into the matplotlib Figure it is given (no pyplot, no display).
Colours follow the Okabe-Ito palette (safe for the common colour-vision
deficiencies) and are keyed by strategy label; in a report of several runs the
run is told apart by marker and line style, so every series has a colour *and*
a shape. Large scatters are rasterised inside the SVG to keep the page small.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import EngFormatter, MaxNLocator

from testbed.metrics import power_mean_db
from testbed.report.figures import LINESTYLES, OKABE_ITO, Series, View, figure
from testbed.report.tables import device_accuracy

RASTERISE_ABOVE = 2000  # scatter points per figure beyond which they are drawn as an image
FLOOR_LABEL = "exact\n(-inf dB)"
HATCHES = ["", "//", "xx", "..", "\\\\", "++"]  # one per transfer of a scenario


def _legend(ax, series: list[Series] | None = None, lines: bool = True) -> None:
    """The legend right of the axes; with ``series``, one solid entry per series (not the
    faint scatter dots), plus any other labelled artist (the Pareto front)."""
    handles, labels = ax.get_legend_handles_labels()
    if series is not None:
        own = {s.label for s in series}
        extra = [(h, lab) for h, lab in zip(handles, labels) if lab not in own]
        handles = [Line2D([], [], color=s.color, marker=s.marker, linestyle=s.linestyle if lines else "none")
                   for s in series] + [h for h, _ in extra]
        labels = [s.label for s in series] + [lab for _, lab in extra]
    if not handles:
        return
    ncol = 1 if len(handles) <= 12 else 2
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=ncol, borderaxespad=0)


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=10, color="#444444", wrap=True)


def _finite(values) -> np.ndarray:
    array = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    return array[np.isfinite(array)]


def device_round_snr(s: Series) -> pd.DataFrame:
    """The series' measurement rows with ``link_snr_db``: the mean SNR of the device's transfers
    towards it that round (of all its transfers, in a scenario that sends nothing down)."""
    sent = s.transfers
    down = sent[sent["direction"] == "down"]
    sent = down if len(down) else sent
    snr = sent.groupby(["round", "device_id"], as_index=False)["snr_db"].mean().rename(columns={"snr_db": "link_snr_db"})
    return s.measurements.merge(snr, on=["round", "device_id"], how="left")


# ---- the figures, in page order -------------------------------------------------------------


@figure("accuracy-snr", "Accuracy against link SNR",
        "Each dot is one device in one round (every device-round with an accuracy); the line is the mean per "
        "SNR bin. The SNR is that of the transfers towards the device.",
        needs=("accuracy", "snr_db"))
def accuracy_vs_snr(view: View, fig) -> None:
    ax = fig.subplots()
    frames = [(s, device_round_snr(s)) for s in view.series]
    frames = [(s, rows[rows["accuracy"].notna() & np.isfinite(rows["link_snr_db"].to_numpy(dtype=float))])
              for s, rows in frames]
    snr_all = np.concatenate([rows["link_snr_db"].to_numpy(dtype=float) for _, rows in frames] or [np.array([])])
    edges = np.linspace(snr_all.min(), snr_all.max(), 11) if snr_all.size and snr_all.max() > snr_all.min() else None
    raster = sum(len(rows) for _, rows in frames) > RASTERISE_ABOVE
    for s, rows in frames:
        if rows.empty:
            continue
        ax.scatter(rows["link_snr_db"], rows["accuracy"], s=8, alpha=0.25, color=s.color, marker=s.marker,
                   linewidths=0, rasterized=raster)
        if edges is not None:
            means = rows.groupby(pd.cut(rows["link_snr_db"], edges, include_lowest=True), observed=True)["accuracy"].mean()
            ax.plot([i.mid for i in means.index], means.to_numpy(), color=s.color, marker=s.marker,
                    linestyle=s.linestyle, label=s.label)
        else:
            ax.plot([snr_all[0]], [rows["accuracy"].mean()], color=s.color, marker=s.marker, label=s.label)
    ax.set_xlabel("link SNR (dB)")
    ax.set_ylabel("accuracy on the device's test split")
    ax.set_title("Accuracy against link SNR (dots: device-rounds; lines: mean per SNR bin)")
    _legend(ax)


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


@figure("accuracy-bytes", "Accuracy against bytes",
        "Fleet accuracy (mean across devices) against bytes per device per round; the bar reaches down to the "
        "10th percentile. Circled points form the Pareto front: no other strategy is both cheaper and more accurate.",
        needs=("accuracy",))
def accuracy_vs_bytes(view: View, fig) -> None:
    ax = fig.subplots()
    keyed = view.strategies.set_index(["run", "strategy"])
    points = []
    for s in view.series:
        row = keyed.loc[(s.run.label, s.strategy)]
        points.append((float(row["bytes_per_device_round"]), float(row["accuracy_mean"]), float(row["accuracy_p10"])))
    plotted = [(s, p) for s, p in zip(view.series, points) if np.isfinite(p[0]) and np.isfinite(p[1])]
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
    ax.set_xlabel("bytes per device per round (every transfer, incl. overhead and resends)")
    ax.set_ylabel("fleet accuracy (mean; bar down to p10)")
    ax.set_title("Accuracy against bytes: the trade-off (circled: Pareto front)")
    _legend(ax)


@figure("accuracy-spread", "Per-device accuracy spread",
        "Distribution of each device's accuracy, the one fleet accuracy is taken over (its mean over rounds "
        "where every round measures the same model, its last round's where the model changes every round).",
        needs=("accuracy",))
def accuracy_spread(view: View, fig) -> None:
    series = view.series
    fig.set_size_inches(max(6.0, 0.7 * len(series) + 2), 4.2)
    ax = fig.subplots()
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
    many = len(series) > 4
    ax.set_xticks(positions)
    ax.set_xticklabels([s.label for s in series], rotation=30 if many else 0, ha="right" if many else "center")
    ax.set_xlim(0.4, len(series) + 0.6)
    ax.set_xlabel("strategy")
    ax.set_ylabel("per-device accuracy")
    ax.set_title("Spread of accuracy across devices (box: quartiles, whiskers: 1.5 IQR; dots: devices)")


@figure("recon-snr", "Reconstruction error against SNR",
        "NMSE of the received model against the server's float model, one marker per device-round; exact "
        "receptions (-inf dB) sit on the bottom line, outliers far above the rest (bit errors in float exponents) "
        "on the top '>=' line; dashed lines are the compression error alone (a clean decode).",
        needs=("recon_nmse_db", "snr_db"))
def recon_vs_snr(view: View, fig) -> None:
    ax = fig.subplots()
    frames = [(s, device_round_snr(s)) for s in view.series]
    frames = [(s, rows[rows["recon_nmse_db"].notna() & np.isfinite(rows["link_snr_db"].to_numpy(dtype=float))])
              for s, rows in frames]
    finite = np.concatenate([_finite(rows["recon_nmse_db"]) for _, rows in frames] or [np.array([])])
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (-10.0, 0.0)
    # Bit errors in float exponents can give absurd errors (hundreds of dB); those go on a
    # ceiling line so that they do not squash the rest of the plot.
    ceiling = None
    if finite.size >= 5 and high > np.percentile(finite, 90) + 30:
        ceiling = max(float(np.percentile(finite, 90)) + 20, 10.0)
    top = ceiling if ceiling is not None else high
    span = max(top - low, 10.0)
    floor = low - 0.12 * span
    raster = sum(len(rows) for _, rows in frames) > RASTERISE_ABOVE
    any_exact = False
    for s, rows in frames:
        snr = rows["link_snr_db"].to_numpy(dtype=float)
        nmse = rows["recon_nmse_db"].to_numpy(dtype=float)
        exact = np.isneginf(nmse)
        over = (nmse > ceiling) if ceiling is not None else np.zeros_like(exact)
        body = ~exact & ~over
        any_exact |= bool(exact.any())
        ax.scatter(snr[body], nmse[body], s=10, alpha=0.4, color=s.color, marker=s.marker, linewidths=0, rasterized=raster)
        ax.scatter(snr[exact], np.full(exact.sum(), floor), s=24, color=s.color, marker="v", alpha=0.6, linewidths=0,
                   rasterized=raster)
        ax.scatter(snr[over], np.full(over.sum(), ceiling if ceiling is not None else 0.0), s=24, color=s.color,
                   marker="^", alpha=0.6, linewidths=0, rasterized=raster)
        if "recon_nmse_compression_db" in rows:
            compression = _finite(rows["recon_nmse_compression_db"])
            if compression.size:
                level = 10 * np.log10(np.mean(np.power(10.0, compression / 10)))
                ax.axhline(level, color=s.color, linestyle="--" if s.linestyle == "-" else s.linestyle,
                           linewidth=1, alpha=0.8)
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
    _legend(ax, view.series, lines=False)


@figure("traffic", "Traffic by transfer",
        "Bytes on the air per transfer (mean over devices and rounds), one bar per strategy and transfer "
        "(hatching tells the transfers apart); the solid part is the payload, the light part what the link "
        "added: CRC trailers, repetition copies and resends.",
        needs=("bytes",))
def traffic(view: View, fig) -> None:
    table = view.transfers
    names = list(dict.fromkeys(table["transfer"]))
    fig.set_size_inches(max(6.0, 0.45 * len(view.series) * max(1, len(names)) + 3), 4.2)
    ax = fig.subplots()
    width = 0.8 / max(1, len(names))
    for i, s in enumerate(view.series):
        rows = table[(table["run"] == s.run.label) & (table["strategy"] == s.strategy)].set_index("transfer")
        for j, name in enumerate(names):
            if name not in rows.index:
                continue
            row = rows.loc[name]
            per = float(row["transfers"])
            payload, total = float(row["payload_bytes"]) / per, float(row["bytes"]) / per
            x = i + (j - (len(names) - 1) / 2) * width
            ax.bar(x, payload, width, color=s.color, hatch=HATCHES[j % len(HATCHES)], edgecolor="#333333", linewidth=0.5)
            ax.bar(x, total - payload, width, bottom=payload, color=s.color, alpha=0.35,
                   hatch=HATCHES[j % len(HATCHES)], edgecolor="#333333", linewidth=0.5)
    many = len(view.series) > 4
    ax.set_xticks(range(len(view.series)))
    ax.set_xticklabels([s.label for s in view.series], rotation=30 if many else 0, ha="right" if many else "center")
    ax.yaxis.set_major_formatter(EngFormatter(unit="B"))
    ax.set_ylabel("bytes on the air per transfer")
    ax.set_title("Traffic by transfer (solid: payload; light: CRC, repetition, resends)")
    handles = [Patch(facecolor="#dddddd", edgecolor="#333333", hatch=HATCHES[j % len(HATCHES)]) for j in range(len(names))]
    ax.legend(handles, names, title="transfer", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


@figure("cumulative-bytes", "Cumulative fleet bytes",
        "Bytes the whole fleet put on the air (every transfer, every direction), summed over rounds.",
        needs=("bytes",))
def cumulative_bytes(view: View, fig) -> None:
    ax = fig.subplots()
    rounds = view.rounds
    finals = []
    for s in view.series:
        rows = rounds[(rounds["run"] == s.run.label) & (rounds["strategy"] == s.strategy)]
        if rows.empty:
            continue
        ax.plot(rows["round"], rows["cumulative_bytes"], color=s.color, marker=s.marker, linestyle=s.linestyle, label=s.label)
        finals.append(float(rows["cumulative_bytes"].iloc[-1]))
    positive = [f for f in finals if f > 0]
    if positive and max(positive) > 20 * min(positive):
        ax.set_yscale("log")
    ax.yaxis.set_major_formatter(EngFormatter(unit="B"))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("cumulative fleet bytes")
    ax.set_title("Fleet traffic over rounds")
    _legend(ax)


def _measured_columns(run) -> list:
    """The scenario's own float measurements of a run that have a finite value somewhere."""
    return [c for c in run.scenario_columns if c.dtype == "float" and _finite(run.measurements[c.name]).size]


@figure("measurements-rounds", "The scenario's measurements over rounds",
        "Each of the scenario's own measurements (the columns of measurements.csv beyond the base ones), "
        "averaged over the devices per round (dB values on the linear scale); non-finite means are left out.",
        applies=lambda run: bool(_measured_columns(run)))
def measurements_over_rounds(view: View, fig) -> None:
    columns = list({c.name: c for run in view.runs for c in _measured_columns(run)}.values())
    ncols = min(3, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    fig.set_size_inches(3.3 * ncols + 1.8, 2.6 * nrows + 0.4)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, column in zip(axes, columns):
        for s in view.series:
            rows = s.measurements
            if column.name not in rows:
                continue
            average = power_mean_db if column.unit == "dB" else (lambda v: float(v.mean()))
            per_round = rows.groupby("round")[column.name].apply(lambda v: average(v.dropna().astype(float)))
            per_round = per_round[np.isfinite(per_round.to_numpy(dtype=float))]
            ax.plot(per_round.index.astype(int), per_round.to_numpy(dtype=float), color=s.color, marker=s.marker,
                    linestyle=s.linestyle, label=s.label)
        ax.set_title(column.name + (f" ({column.unit})" if column.unit else ""), fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("round")
    for ax in axes[len(columns):]:
        ax.set_visible(False)
    _legend(axes[ncols - 1], view.series)
    fig.subplots_adjust(wspace=0.35, hspace=0.55)  # fixed spacing: tight_layout costs as much as the drawing


def _device_column(frame: pd.DataFrame, preferred: str, fragment: str) -> str | None:
    if preferred in frame:
        return preferred
    return next((c for c in frame.columns if fragment in str(c).lower()), None)


@figure("fleet", "The fleet", "Distribution of the devices' link SNR and bandwidth, from devices.csv.",
        applies=lambda run: len(run.devices) > 0, size=(9.0, 3.4))
def fleet_distribution(view: View, fig) -> None:
    runs = view.runs
    axes = fig.subplots(1, 2)
    for ax, (preferred, fragment, xlabel) in zip(
        axes, [("snr_db", "snr", "device link SNR (dB)"), ("bandwidth_mbps", "bandwidth", "device bandwidth (Mbit/s)")]
    ):
        drawn = False
        for index, run in enumerate(runs):
            column = _device_column(run.devices, preferred, fragment)
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
