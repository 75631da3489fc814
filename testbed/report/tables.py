"""The report's numbers: one row per (run, strategy) and one per (run, strategy, round).

Definitions (also in docs/REPORT.md):

- bytes per device per round: mean of ``bytes_down`` (+ ``bytes_up``) over every
  (device, round) row, failed deliveries included (their bytes were spent).
- accuracy across devices: each device's accuracy is the mean over the rounds it
  received a model in broadcast mode (every round is a fresh draw of the same model
  over its link) and its accuracy in the last round in federated mode (the model
  changes each round); mean, 10th percentile (linear interpolation) and minimum are
  taken over devices. Failed deliveries have no accuracy and are counted apart.
- reconstruction NMSE: averaged in the linear domain and shown in dB,
  ``10 log10(mean(10^(x/10)))``, so that -inf (exact) rows count as zero error.
"""

from __future__ import annotations

import math

import pandas as pd

from testbed.metrics import device_accuracies, power_mean_db  # noqa: F401 (power_mean_db: used by scripts)
from testbed.report.runs import RunData

# Strategy-table columns, in order, with the header the Markdown and HTML tables show.
STRATEGY_COLUMNS: dict[str, str] = {
    "run": "run",
    "strategy": "strategy",
    "kind": "kind",
    "bits": "bits",
    "payload_bytes": "payload (B)",
    "bytes_per_device_round": "bytes/device/round",
    "model_ratio": "ratio (model)",
    "conv_ratio": "ratio (conv)",
    "protected_share": "protected",
    "resends": "resends",
    "resent_bytes": "resent (B)",
    "coding_bytes": "protection coding (B)",
    "fleet_bytes": "fleet bytes",
    "fleet_bytes_down": "fleet bytes down",
    "fleet_bytes_up": "fleet bytes up",
    "airtime_s": "airtime (s)",
    "accuracy_mean": "acc mean",
    "accuracy_p10": "acc p10",
    "accuracy_min": "acc min",
    "central_accuracy": "acc central",
    "clean_accuracy": "acc ideal link",
    "nmse_compression_db": "NMSE compr. (dB)",
    "nmse_channel_db": "NMSE channel (dB)",
    "nmse_db": "NMSE total (dB)",
    "failed": "failed",
    "device_rounds": "device-rounds",
    "devices": "devices",
    "rounds": "rounds",
}

ROUND_COLUMNS = [
    "run",
    "strategy",
    "round",
    "devices",
    "failed",
    "bytes_down",
    "bytes_up",
    "fleet_bytes",
    "cumulative_fleet_bytes",
    "airtime_s",
    "accuracy_mean",
    "accuracy_p10",
    "accuracy_min",
    "nmse_db",
]


def device_accuracy(run: RunData, strategy: str) -> pd.Series:
    """device_id -> that device's accuracy (the definition summary.json uses too)."""
    return device_accuracies(run.metrics[~run.metrics["failed"]], strategy, run.mode)


def _quantiles(values: pd.Series) -> tuple[float, float, float]:
    if values.empty:
        return math.nan, math.nan, math.nan
    return float(values.mean()), float(values.quantile(0.10)), float(values.min())


def _payload_number(payload: dict, key: str) -> float:
    value = payload.get(key)
    return float(value) if isinstance(value, (int, float)) and value is not None else math.nan


def strategy_row(run: RunData, strategy: str) -> dict:
    rows = run.metrics[run.metrics["strategy"] == strategy]
    payload = run.payloads.get(strategy, {})
    summary = run.summary.get("strategies", {}).get(strategy, {})
    kind = payload.get("strategy") or summary.get("strategy") or (rows["strategy_kind"].iloc[0] if len(rows) else "")
    bits = payload.get("bits", summary.get("bits"))
    if bits is None and len(rows) and rows["bits"].notna().any():
        bits = int(rows["bits"].dropna().iloc[0])
    payload_bytes = _payload_number(payload, "total_bytes")
    if math.isnan(payload_bytes) and len(rows):
        payload_bytes = float(rows["bytes_down_payload"].mean())
    protected = _payload_number(payload, "protected_bytes")
    if math.isnan(protected) and len(rows):
        protected = float(rows["bytes_down_protected"].mean())
    down = float(rows["bytes_down"].fillna(0).sum())
    up = float(rows["bytes_up"].fillna(0).sum())
    acc_mean, acc_p10, acc_min = _quantiles(device_accuracy(run, strategy))
    delivered = rows[~rows["failed"]]
    return {
        "run": run.label,
        "strategy": strategy,
        "kind": kind,
        "bits": int(bits) if isinstance(bits, (int, float)) and not math.isnan(bits) else None,
        "payload_bytes": payload_bytes,
        "bytes_per_device_round": (down + up) / len(rows) if len(rows) else math.nan,
        "model_ratio": _payload_number(payload, "model_ratio"),
        "conv_ratio": _payload_number(payload, "conv_ratio"),
        "protected_share": protected / payload_bytes if payload_bytes else math.nan,
        "resends": int(rows["resends_down"].fillna(0).sum()),
        "resent_bytes": int(rows["bytes_down_resent"].fillna(0).sum()),
        "coding_bytes": int(rows["bytes_down_coding"].fillna(0).sum()),
        "fleet_bytes": down + up,
        "fleet_bytes_down": down,
        "fleet_bytes_up": up,
        "airtime_s": float(rows["airtime_down_s"].fillna(0).sum() + rows["airtime_up_s"].fillna(0).sum()),
        "accuracy_mean": acc_mean,
        "accuracy_p10": acc_p10,
        "accuracy_min": acc_min,
        "central_accuracy": float(summary["central_accuracy"]) if summary.get("central_accuracy") is not None else math.nan,
        "clean_accuracy": float(summary["clean_accuracy"]) if summary.get("clean_accuracy") is not None else math.nan,
        "nmse_compression_db": power_mean_db(delivered["recon_nmse_compression_db"]),
        "nmse_channel_db": power_mean_db(delivered["recon_nmse_channel_db"]),
        "nmse_db": power_mean_db(delivered["recon_nmse_db"]),
        "failed": int(rows["failed"].sum()),
        "device_rounds": int(len(rows)),
        "devices": int(rows["device_id"].nunique()),
        "rounds": int(rows["round"].nunique()),
    }


def strategy_table(runs: list[RunData]) -> pd.DataFrame:
    """One row per (run, strategy), columns :data:`STRATEGY_COLUMNS`."""
    rows = [strategy_row(run, strategy) for run in runs for strategy in run.strategies]
    table = pd.DataFrame(rows, columns=list(STRATEGY_COLUMNS))
    table["bits"] = table["bits"].astype("Int64")
    return table


def rounds_table(runs: list[RunData]) -> pd.DataFrame:
    """One row per (run, strategy, round), with the fleet's cumulative bytes."""
    out = []
    for run in runs:
        for strategy in run.strategies:
            rows = run.metrics[run.metrics["strategy"] == strategy]
            cumulative = 0.0
            for round_, group in sorted(rows.groupby("round"), key=lambda kv: kv[0]):
                ok = group[~group["failed"] & group["accuracy"].notna()]["accuracy"]
                mean, p10, minimum = _quantiles(ok)
                down = float(group["bytes_down"].fillna(0).sum())
                up = float(group["bytes_up"].fillna(0).sum())
                cumulative += down + up
                out.append(
                    {
                        "run": run.label,
                        "strategy": strategy,
                        "round": int(round_),
                        "devices": int(len(group)),
                        "failed": int(group["failed"].sum()),
                        "bytes_down": down,
                        "bytes_up": up,
                        "fleet_bytes": down + up,
                        "cumulative_fleet_bytes": cumulative,
                        "airtime_s": float(group["airtime_down_s"].fillna(0).sum() + group["airtime_up_s"].fillna(0).sum()),
                        "accuracy_mean": mean,
                        "accuracy_p10": p10,
                        "accuracy_min": minimum,
                        "nmse_db": power_mean_db(group[~group["failed"]]["recon_nmse_db"]),
                    }
                )
    return pd.DataFrame(out, columns=ROUND_COLUMNS)


# ---- text formatting -----------------------------------------------------------------


def format_bytes(value: float) -> str:
    """1234567 -> '1.23 MB' (SI units, as link rates are quoted)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    value = float(value)
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f} B"


def format_db(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "-inf (exact)" if value < 0 else "inf"
    return f"{value:.1f}"


def format_cell(column: str, value) -> str:
    """A strategy-table cell as text for the Markdown and HTML tables."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "n/a" if column not in ("bits",) else "-"
    if column.endswith("_db"):
        return format_db(value)
    if column in ("payload_bytes", "bytes_per_device_round", "fleet_bytes", "fleet_bytes_down", "fleet_bytes_up", "resent_bytes", "coding_bytes"):
        return format_bytes(value)
    if column.endswith("ratio"):
        return f"{value:.2f}x"
    if column == "protected_share":
        return f"{100 * value:.1f}%"
    if column.startswith("accuracy") or column == "central_accuracy":
        return f"{value:.4f}"
    if column == "airtime_s":
        return f"{value:.3g}"
    return str(value)


def markdown_table(table: pd.DataFrame, headers: dict[str, str] | None = None) -> str:
    """A GitHub-flavoured Markdown table of formatted cells."""
    headers = headers or {c: c for c in table.columns}
    columns = [c for c in headers if c in table.columns]
    lines = [
        "| " + " | ".join(headers[c] for c in columns) + " |",
        "|" + "|".join("---" if c in ("run", "strategy", "kind") else "---:" for c in columns) + "|",
    ]
    for _, row in table.iterrows():
        cells = [format_cell(c, row[c]).replace("|", "\\|") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
