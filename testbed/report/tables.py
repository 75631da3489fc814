"""The report's numbers: its four tables, each column named and defined once here.

- strategies: one row per (run, strategy); the fleet figures are
  :func:`testbed.metrics.label_totals`, the definitions summary.json uses
  (a failed device, the devices that count towards fleet accuracy, a device's
  accuracy over the rounds).
- rounds: ``rounds.csv`` as the run wrote it (:func:`testbed.metrics.round_summary`),
  with the cumulative bytes.
- transfers: one row per (run, strategy, transfer): each transfer's traffic, every
  column of ``transfers.csv`` aggregated over its devices and rounds.
- measurements: one row per (run, strategy, measurement column beyond the base ones):
  what the scenario measured (accuracy, reconstruction error, training loss...).

The column meanings below are the page's "what the columns mean" and the tables of
docs/REPORT.md (a test checks they agree).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from testbed.metrics import device_accuracies, failed, label_totals, power_mean_db
from testbed.report.runs import RunData
from testbed.tables import ROUNDS, TRANSFERS, Column


@dataclass(frozen=True)
class ReportColumn:
    name: str
    header: str  # as the HTML and Markdown tables show it
    meaning: str


_RUN = ReportColumn("run", "run", "the run folder (its name, or the `--label` given)")
_STRATEGY = ReportColumn("strategy", "strategy", "the strategy entry's label in the config")

STRATEGY_COLUMNS: tuple[ReportColumn, ...] = (
    _RUN,
    _STRATEGY,
    ReportColumn("kind", "kind", "the strategy's registered name"),
    ReportColumn("bits", "bits", "the strategy's bit width (empty: unquantised)"),
    ReportColumn("payload_bytes", "payload (B)", "the exact size of the strategy's payload, framing and side "
                 "information included (`payloads.json` `total_bytes`; scenarios that send a model)"),
    ReportColumn("bytes_per_device_round", "bytes/device/round", "fleet bytes over device-rounds: everything "
                 "the transfers of one device put on the air in one round, every direction, payload, CRC trailers, "
                 "repetition copies and resends included; failed devices count (their bytes were spent)"),
    ReportColumn("model_ratio", "ratio (model)", "fp32 bytes of the whole model over the payload's bytes (`payloads.json`)"),
    ReportColumn("conv_ratio", "ratio (conv)", "fp32 bytes of the conv kernels over the payload bytes carrying them"),
    ReportColumn("protected_share", "protected", "share of the payload sent protected (CRC-checked, resent until intact)"),
    ReportColumn("resends", "resends", "protected packets resent, over every transfer, device and round"),
    ReportColumn("resent_bytes", "resent (B)", "their bytes"),
    ReportColumn("coding_bytes", "protection coding (B)", "repetition copies of the protected packets' first sends"),
    ReportColumn("fleet_bytes", "fleet bytes", "bytes on the air over every transfer, device and round "
                 "(`summary.json` `bytes_total`)"),
    ReportColumn("fleet_bytes_down", "fleet bytes down", "the same, transfers towards the devices"),
    ReportColumn("fleet_bytes_up", "fleet bytes up", "the same, transfers from the devices"),
    ReportColumn("airtime_s", "airtime (s)", "time on the air over every transfer, device and round, ARQ round trips included"),
    ReportColumn("accuracy_mean", "acc mean", "fleet accuracy: the mean across **devices** of each device's accuracy, "
                 "which is its mean over the rounds where every round measures the same model (broadcast), its "
                 "last round's where the model changes every round (federated) (`summary.json` `fleet_accuracy`). "
                 "Every device-round with an accuracy counts, a failed one too (a device whose uplink failed "
                 "still measured the model it received); one without (its model never arrived) does not"),
    ReportColumn("accuracy_p10", "acc p10", "the 10th percentile of the same, linear interpolation (numpy's default)"),
    ReportColumn("accuracy_min", "acc min", "the minimum of the same"),
    ReportColumn("central_accuracy", "acc central", "the server's float model on the full test set (`summary.json`)"),
    ReportColumn("clean_accuracy", "acc ideal link", "the clean decode of what the strategy sends (pruned, projected, "
                 "quantised) on the full test set: what an ideal link delivers (`summary.json`)"),
    ReportColumn("nmse_compression_db", "NMSE compr. (dB)", "reconstruction error the compression causes (clean decode "
                 "against the server's float model), over the device-rounds that have one, averaged on the linear "
                 "scale and shown in dB: `10 log10(mean(10^(x/10)))`, so that exact rows (-inf dB) count as zero error "
                 "and one bad row is not hidden by a dB average"),
    ReportColumn("nmse_channel_db", "NMSE channel (dB)", "the part the channel adds (received against clean decode), averaged the same way"),
    ReportColumn("nmse_db", "NMSE total (dB)", "received against the server's float model, averaged the same way"),
    ReportColumn("failed", "failed", "device-rounds with a failure (`measurements.csv` `failure` not empty: a failed "
                 "transfer, a payload that cannot be decoded, an update left out of the aggregate, a node lost)"),
    ReportColumn("device_rounds", "device-rounds", "(device, round) rows of the strategy"),
    ReportColumn("devices", "devices", "devices that took part"),
    ReportColumn("rounds", "rounds", "rounds with rows"),
)

_CUMULATIVE = ReportColumn("cumulative_bytes", "cumulative bytes", "`bytes` summed over this round and the ones before")
ROUND_COLUMNS: tuple[ReportColumn, ...] = (
    _RUN,
    _STRATEGY,
    *(ReportColumn(c.name, c.name, c.meaning) for c in ROUNDS.columns if c.name != "label"),
    _CUMULATIVE,
)

# The traffic table: every column of transfers.csv past its keys, aggregated over the
# transfers of one (run, strategy, transfer name). Quantities (bytes, seconds, counts)
# add up; a level (SNR in dB) and a setting (copies per send) are averaged; texts that
# describe the transfer are listed; flags and failures are counted.
_TRANSFER_KEYS = ("round", "label", "device_id", "transfer")
_RENAMED = {"strategy": "kind", "failure": "failed"}


def _aggregate(column: Column) -> str:
    if column.name == "failure":
        return "count"
    if column.dtype == "str":
        return "list"
    if column.dtype == "bool":
        return "count"
    return "mean" if column.unit == "dB" or column.name in ("repetition", "mcs") else "sum"


_AGGREGATE_WORDS = {"list": "the values found", "count": "transfers where", "mean": "mean over the transfers",
                    "sum": "summed over the transfers"}


def _traffic_columns(*ways: str) -> tuple[ReportColumn, ...]:
    """The traffic table's columns of transfers.csv aggregated in one of ``ways``, in declared order."""
    out = []
    for c in TRANSFERS.columns:
        if c.name in _TRANSFER_KEYS or _aggregate(c) not in ways:
            continue
        if c.name == "failure":
            meaning = "transfers that failed (`failure` not empty: delivery or decoding)"
        else:
            meaning = f"{_AGGREGATE_WORDS[_aggregate(c)]}: {c.meaning}" + (f" ({c.unit})" if c.unit else "")
        name = _RENAMED.get(c.name, c.name)
        out.append(ReportColumn(name, name, meaning))
    return tuple(out)


TRANSFER_COLUMNS: tuple[ReportColumn, ...] = (
    _RUN,
    _STRATEGY,
    ReportColumn("transfer", "transfer", "the scenario's name for the transfer"),
    *_traffic_columns("list"),
    ReportColumn("transfers", "transfers", "transfers of that name (devices x rounds)"),
    *_traffic_columns("count"),
    ReportColumn("bytes_per_transfer", "bytes/transfer", "`bytes` over `transfers`"),
    *_traffic_columns("sum", "mean"),
)

MEASUREMENT_COLUMNS: tuple[ReportColumn, ...] = (
    _RUN,
    _STRATEGY,
    ReportColumn("measurement", "measurement", "a column of `measurements.csv` beyond the base ones: what the "
                 "scenario measured on the devices"),
    ReportColumn("unit", "unit", "its unit"),
    ReportColumn("rows", "rows", "device-rounds with a value"),
    ReportColumn("mean", "mean", "over those device-rounds (dB values on the linear scale, as the NMSE "
                 "above; flags: the share that are true)"),
    ReportColumn("min", "min", "the smallest value"),
    ReportColumn("max", "max", "the largest value"),
)


def names(columns) -> list[str]:
    return [c.name for c in columns]


# ---- the tables ------------------------------------------------------------------------


def _payload_number(payload: dict, key: str) -> float:
    value = payload.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _number(value) -> float:
    return math.nan if value is None else float(value)


def _sum(frame: pd.DataFrame, column: str) -> int:
    return int(frame[column].fillna(0).sum())


def device_accuracy(run: RunData, strategy: str) -> pd.Series:
    """device_id -> that device's fleet accuracy (testbed.metrics.device_accuracies, as summary.json)."""
    return device_accuracies(run.measurements, strategy, run.over_rounds)


def strategy_row(run: RunData, strategy: str) -> dict:
    mine = run.measurements[run.measurements["label"] == strategy]
    sent = run.transfers[run.transfers["label"] == strategy]
    totals = label_totals(run.measurements, run.transfers, strategy, run.over_rounds)
    payload = run.payloads.get(strategy, {})
    summary = run.summary.get("strategies", {}).get(strategy, {})
    kind = payload.get("strategy") or summary.get("strategy") or (mine["strategy"].iloc[0] if len(mine) else "")
    bits = payload.get("bits", summary.get("bits"))
    if bits is None and mine["bits"].notna().any():
        bits = int(mine["bits"].dropna().iloc[0])
    payload_bytes = _payload_number(payload, "total_bytes")

    def nmse(column):
        return power_mean_db(mine[column]) if column in mine else math.nan

    return {
        "run": run.label,
        "strategy": strategy,
        "kind": kind,
        "bits": None if bits is None else int(bits),
        "payload_bytes": payload_bytes,
        "bytes_per_device_round": totals["bytes_total"] / totals["device_rounds"] if totals["device_rounds"] else math.nan,
        "model_ratio": _payload_number(payload, "model_ratio"),
        "conv_ratio": _payload_number(payload, "conv_ratio"),
        "protected_share": _payload_number(payload, "protected_bytes") / payload_bytes if payload_bytes else math.nan,
        "resends": _sum(sent, "resends"),
        "resent_bytes": _sum(sent, "resent_bytes"),
        "coding_bytes": _sum(sent, "coding_bytes"),
        "fleet_bytes": totals["bytes_total"],
        "fleet_bytes_down": totals["bytes_down_total"],
        "fleet_bytes_up": totals["bytes_up_total"],
        "airtime_s": totals["airtime_s_total"],
        "accuracy_mean": _number(totals["accuracy_mean"]),
        "accuracy_p10": _number(totals["accuracy_p10"]),
        "accuracy_min": _number(totals["accuracy_min"]),
        "central_accuracy": _number(summary.get("central_accuracy")),
        "clean_accuracy": _number(summary.get("clean_accuracy")),
        "nmse_compression_db": nmse("recon_nmse_compression_db"),
        "nmse_channel_db": nmse("recon_nmse_channel_db"),
        "nmse_db": nmse("recon_nmse_db"),
        "failed": totals["failed"],
        "device_rounds": totals["device_rounds"],
        "devices": int(mine["device_id"].nunique()),
        "rounds": int(mine["round"].nunique()),
    }


def strategy_table(runs: list[RunData]) -> pd.DataFrame:
    """One row per (run, strategy), columns :data:`STRATEGY_COLUMNS`."""
    rows = [strategy_row(run, strategy) for run in runs for strategy in run.strategies]
    table = pd.DataFrame(rows, columns=names(STRATEGY_COLUMNS))
    table["bits"] = table["bits"].astype("Int64")
    return table


def rounds_table(runs: list[RunData]) -> pd.DataFrame:
    """One row per (run, strategy, round): rounds.csv, with the cumulative bytes."""
    parts = []
    for run in runs:
        for strategy in run.strategies:
            rows = run.round_stats[run.round_stats["label"] == strategy].sort_values("round")
            rows = rows.drop(columns="label").assign(run=run.label, strategy=strategy)
            rows[_CUMULATIVE.name] = rows["bytes"].fillna(0).cumsum()
            parts.append(rows)
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return frame.reindex(columns=names(ROUND_COLUMNS))


def _traffic_row(run: RunData, strategy: str, transfer: str, rows: pd.DataFrame) -> dict:
    out = {"run": run.label, "strategy": strategy, "transfer": transfer, "transfers": int(len(rows))}
    for column in TRANSFERS.columns:
        if column.name in _TRANSFER_KEYS:
            continue
        values = rows[column.name]
        how = _aggregate(column)
        if how == "count":
            value = int(failed(rows).sum()) if column.name == "failure" else int(values.sum())
        elif how == "list":
            value = ", ".join(dict.fromkeys(v for v in values if v))
        elif how == "mean":
            value = float(values.mean()) if values.notna().any() else math.nan
        elif column.dtype == "int":
            value = int(values.fillna(0).sum())
        else:
            value = float(values.fillna(0).sum())
        out[_RENAMED.get(column.name, column.name)] = value
    out["bytes_per_transfer"] = out["bytes"] / len(rows) if len(rows) else math.nan
    return out


def transfer_table(runs: list[RunData]) -> pd.DataFrame:
    """One row per (run, strategy, transfer), in the scenario's order of transfers: the traffic."""
    out = []
    for run in runs:
        for strategy in run.strategies:
            mine = run.transfers[run.transfers["label"] == strategy]
            for transfer in run.transfer_names:
                rows = mine[mine["transfer"] == transfer]
                if len(rows):
                    out.append(_traffic_row(run, strategy, transfer, rows))
    return pd.DataFrame(out, columns=names(TRANSFER_COLUMNS))


def _measurement_row(run: RunData, strategy: str, column: Column, values: pd.Series) -> dict:
    row = {"run": run.label, "strategy": strategy, "measurement": column.name, "unit": column.unit}
    if column.dtype == "str":
        present = values[values.astype(str) != ""]
        return {**row, "rows": int(len(present)), "mean": math.nan, "min": math.nan, "max": math.nan}
    numbers = values.astype(float).dropna()
    if column.unit == "dB":
        mean = power_mean_db(numbers)
    else:
        mean = float(numbers.mean()) if len(numbers) else math.nan
    low, high = (float(numbers.min()), float(numbers.max())) if len(numbers) else (math.nan, math.nan)
    return {**row, "rows": int(len(numbers)), "mean": mean, "min": low, "max": high}


def measurement_table(runs: list[RunData]) -> pd.DataFrame:
    """One row per (run, strategy, scenario measurement column), in the scenario's declared order."""
    out = []
    for run in runs:
        for strategy in run.strategies:
            mine = run.measurements[run.measurements["label"] == strategy]
            out += [_measurement_row(run, strategy, c, mine[c.name]) for c in run.scenario_columns]
    return pd.DataFrame(out, columns=names(MEASUREMENT_COLUMNS))


@dataclass(eq=False)
class Report:
    """The runs of one report and its tables."""

    runs: list[RunData]
    strategies: pd.DataFrame
    rounds: pd.DataFrame
    transfers: pd.DataFrame
    measurements: pd.DataFrame

    @classmethod
    def of(cls, runs: list[RunData]) -> "Report":
        return cls(runs, strategy_table(runs), rounds_table(runs), transfer_table(runs), measurement_table(runs))

    def only(self, runs: list[RunData]) -> "Report":
        """The same report restricted to some of its runs (a figure that applies to those only)."""
        keep = {run.label for run in runs}

        def rows(frame):
            return frame[frame["run"].isin(keep)].reset_index(drop=True)

        return Report(list(runs), rows(self.strategies), rows(self.rounds), rows(self.transfers), rows(self.measurements))


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


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def format_cell(column: str, value, unit: str = "") -> str:
    """A report-table cell as text for the Markdown and HTML tables (``unit``: of a measurement row)."""
    if _missing(value):
        return "-" if column == "bits" else "n/a"
    if isinstance(value, str):
        return value
    if column.endswith("_db") or unit == "dB":
        return format_db(float(value))
    if "bytes" in column.split("_") and column != "protected_share":
        return format_bytes(value)
    if column.endswith("ratio"):
        return f"{value:.2f}x"
    if column == "protected_share":
        return f"{100 * value:.1f}%"
    if column.startswith("accuracy") or column.endswith("_accuracy"):
        return f"{value:.4f}"
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() and abs(value) < 1e12 else f"{value:.4g}"
    return str(value)


def markdown_table(table: pd.DataFrame, columns: tuple[ReportColumn, ...]) -> str:
    """A GitHub-flavoured Markdown table of formatted cells."""
    columns = [c for c in columns if c.name in table.columns]
    lines = [
        "| " + " | ".join(c.header for c in columns) + " |",
        "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(table[c.name]) else "---" for c in columns) + "|",
    ]
    for _, row in table.iterrows():
        cells = [format_cell(c.name, row[c.name]).replace("|", "\\|") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def definitions_markdown(columns: tuple[ReportColumn, ...]) -> str:
    """The meaning of every column of a report table, as docs/REPORT.md shows it."""
    lines = ["| column | meaning |", "|---|---|"]
    lines += [f"| {c.header} | {c.meaning} |" for c in columns]
    return "\n".join(lines) + "\n"
