"""Per-device metric rows and the run folder files built from them.

One row per (round, strategy, device): the exact bytes a device's link carried,
the reconstruction error of the model it received (split into the part the
compression causes and the part the channel adds) and the accuracy of that
model on the device's local test split. Rows of a round are appended to
metrics.csv when the round ends, so a run killed mid-way keeps every finished
round; metrics.parquet, rounds.csv and summary.json are derived from them.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

# The columns of metrics.csv, in order (the run folder contract).
COLUMNS: tuple[str, ...] = (
    "round",
    "strategy",
    "strategy_kind",
    "bits",
    "device_id",
    "link_model",
    "snr_db",
    "bytes_down",
    "bytes_down_payload",
    "bytes_down_protected",
    "bytes_down_overhead",
    "bytes_down_coding",
    "bytes_down_resent",
    "repetition_down",
    "bit_errors_down",
    "packets_lost_down",
    "resends_down",
    "airtime_down_s",
    "delivered",
    "decode_ok",
    "failure",
    "recon_nmse_db",
    "recon_nmse_compression_db",
    "recon_nmse_channel_db",
    "recon_nmse_conv_db",
    "accuracy",
    "loss",
    "n_test",
    "bytes_up",
    "bytes_up_protected",
    "bit_errors_up",
    "airtime_up_s",
    "train_loss",
)
INT_COLUMNS = {
    "round", "bits", "device_id", "bytes_down", "bytes_down_payload", "bytes_down_protected",
    "bytes_down_overhead", "bytes_down_coding", "bytes_down_resent", "repetition_down", "bit_errors_down", "packets_lost_down", "resends_down",
    "n_test", "bytes_up", "bytes_up_protected", "bit_errors_up",
}
BOOL_COLUMNS = {"delivered", "decode_ok"}
STR_COLUMNS = {"strategy", "strategy_kind", "link_model", "failure"}

ROUND_COLUMNS: tuple[str, ...] = (
    "round",
    "strategy",
    "devices",
    "failed",
    "total_bytes_down",
    "total_bytes_up",
    "airtime_down_s_total",
    "accuracy_mean",
    "accuracy_p10",
    "accuracy_min",
    "recon_nmse_db_mean",
)


# ---- reconstruction error ---------------------------------------------------------


def float_power(state: Mapping[str, torch.Tensor]) -> float:
    """Sum of squares over the float tensors of a state (float64 accumulation)."""
    return float(sum(t.detach().double().pow(2).sum().item() for t in state.values() if t.dtype.is_floating_point))


def squared_error(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Sum of squared differences over the float tensors of ``b`` (names of ``b`` must be in ``a``)."""
    total = 0.0
    for name, ref in b.items():
        if ref.dtype.is_floating_point:
            total += float((a[name].detach().double() - ref.detach().double()).pow(2).sum().item())
    return total


def to_db(ratio: float) -> float:
    """10 log10 of an energy ratio; -inf when exact, NaN/inf propagate (broken reception)."""
    if ratio == 0.0:
        return -math.inf
    if not math.isfinite(ratio):
        return ratio if not math.isnan(ratio) else math.nan
    return 10.0 * math.log10(ratio)


def nmse_db(received: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor], power: float | None = None) -> float:
    """10 log10(sum sq err / sum sq ref) over the float tensors of ``reference``."""
    power = float_power(reference) if power is None else power
    if power == 0.0:
        return math.nan
    return to_db(squared_error(received, reference) / power)


# ---- rows -------------------------------------------------------------------------


def empty_row(round_: int, label: str, kind: str, bits: int | None, device_id: int, link_model: str) -> dict:
    """A row with every column present: NaN for unmeasured numbers, "" for no failure."""
    row: dict = {c: math.nan for c in COLUMNS}
    row.update(
        round=round_, strategy=label, strategy_kind=kind, bits=bits, device_id=device_id, link_model=link_model,
        delivered=False, decode_ok=False, failure="",
    )
    for c in ("bytes_up", "bytes_up_protected", "bit_errors_up"):
        row[c] = None
    return row


def downlink_fields(stats: Mapping, protected_bytes: int) -> dict:
    """Row fields of a downlink transmission from ``LinkStats.as_dict()``."""
    return {
        "snr_db": _float(stats.get("snr_db")),
        "bytes_down": int(stats["bytes_sent"]),
        "bytes_down_payload": int(stats["payload_bytes"]),
        "bytes_down_protected": int(protected_bytes),
        "bytes_down_overhead": int(stats["overhead_bytes"]),
        "bytes_down_coding": int(stats["coding_bytes"]),
        "bytes_down_resent": int(stats["resent_bytes"]),
        "repetition_down": int(stats["protected_repetition"]),
        "bit_errors_down": int(stats["bit_errors"]),
        "packets_lost_down": int(stats["packets_lost"]),
        "resends_down": int(stats["retransmissions"]),
        "airtime_down_s": float(stats["airtime_s"]),
        "delivered": bool(stats["delivered"]),
    }


def uplink_fields(stats: Mapping, protected_bytes: int) -> dict:
    return {
        "bytes_up": int(stats["bytes_sent"]),
        "bytes_up_protected": int(protected_bytes),
        "bit_errors_up": int(stats["bit_errors"]),
        "airtime_up_s": float(stats["airtime_s"]),
    }


def _float(value) -> float:
    return math.nan if value is None else float(value)


def failed_rows(round_: int, labels: Iterable[tuple[str, str, int | None]], devices: Iterable[tuple[int, str]], reason: str) -> list[dict]:
    """Rows for devices whose results never came back (a node that raised or was lost)."""
    rows = []
    for label, kind, bits in labels:
        for device_id, link_model in devices:
            row = empty_row(round_, label, kind, bits, device_id, link_model)
            row["failure"] = reason
            rows.append(row)
    return rows


def sort_rows(rows: list[dict], label_order: list[str]) -> list[dict]:
    """Rows in (round, strategy as configured, device id) order, whatever the cohorts."""
    order = {label: i for i, label in enumerate(label_order)}
    return sorted(rows, key=lambda r: (r["round"], order.get(r["strategy"], len(order)), r["device_id"]))


# ---- writers ----------------------------------------------------------------------


def _cell(column: str, value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "" if column in INT_COLUMNS else "nan"
    if column in BOOL_COLUMNS:
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _append_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(c, row.get(c)) for c in columns])
        f.flush()
        os.fsync(f.fileno())


def append_metrics(run_dir: Path, rows: list[dict]) -> None:
    _append_csv(Path(run_dir) / "metrics.csv", COLUMNS, rows)


def append_rounds(run_dir: Path, rows: list[dict]) -> None:
    _append_csv(Path(run_dir) / "rounds.csv", ROUND_COLUMNS, rows)


def truncate_after(path: Path, last_round: int) -> None:
    """Drop rows of rounds after ``last_round`` (a round that was being written when killed)."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    if not lines:
        return
    header, body = lines[0], lines[1:]
    keep = [line for line in body if line and int(line[0]) <= last_round]
    if len(keep) != len(body):
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(keep)


def read_metrics(run_dir: Path):
    """metrics.csv as a pandas DataFrame with the contract's dtypes."""
    import pandas as pd

    path = Path(run_dir) / "metrics.csv"
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame({c: [] for c in COLUMNS})
    frame = pd.read_csv(path, keep_default_na=False, na_values={c: ["", "nan"] for c in COLUMNS if c not in STR_COLUMNS})
    for c in COLUMNS:  # a folder written before a column existed reads with that column empty
        if c not in frame:
            frame[c] = "" if c in STR_COLUMNS else None
    for c in INT_COLUMNS:
        frame[c] = frame[c].astype("Int64")
    for c in BOOL_COLUMNS:
        frame[c] = frame[c].astype(str).str.lower().eq("true")
    for c in STR_COLUMNS:
        frame[c] = frame[c].astype(str)
    return frame


def write_parquet(run_dir: Path) -> None:
    """metrics.parquet from metrics.csv (rewritten whole: it is derived, the CSV is the record)."""
    frame = read_metrics(run_dir)
    tmp = Path(run_dir) / "metrics.parquet.tmp"
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, Path(run_dir) / "metrics.parquet")


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if v is not None and not math.isnan(v)]


def round_summary(round_: int, label: str, rows: list[dict]) -> dict:
    """One rounds.csv row from the device rows of one (round, strategy)."""
    acc = _finite([r["accuracy"] for r in rows])
    return {
        "round": round_,
        "strategy": label,
        "devices": len(rows),
        "failed": sum(1 for r in rows if r["failure"]),
        "total_bytes_down": sum(int(r["bytes_down"]) for r in rows if _is_number(r["bytes_down"])),
        "total_bytes_up": sum(int(r["bytes_up"]) for r in rows if _is_number(r["bytes_up"])),
        "airtime_down_s_total": float(sum(r["airtime_down_s"] for r in rows if _is_number(r["airtime_down_s"]))),
        "accuracy_mean": float(np.mean(acc)) if acc else math.nan,
        "accuracy_p10": float(np.percentile(acc, 10)) if acc else math.nan,
        "accuracy_min": float(min(acc)) if acc else math.nan,
        "recon_nmse_db_mean": power_mean_db(r["recon_nmse_db"] for r in rows),
    }


def _is_number(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def machine_info() -> dict:
    import flwr
    import ray

    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "flwr": flwr.__version__ if hasattr(flwr, "__version__") else _dist_version("flwr"),
        "ray": ray.__version__,
    }


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def power_mean_db(values) -> float:
    """Mean of dB values taken on the linear scale; -inf (exact) counts as zero, NaN is ignored."""
    array = np.asarray([v for v in values if v is not None], dtype=float)
    array = array[~np.isnan(array)]
    if array.size == 0:
        return math.nan
    linear = np.power(10.0, array / 10.0).mean()
    return float(10.0 * np.log10(linear)) if linear > 0 else -math.inf


def device_accuracies(frame, label: str, mode: str):
    """device_id -> the device's accuracy for a strategy: its mean over rounds (broadcast, where
    every round measures the same model) or its last round (federated, where the model changes).
    Rows without an accuracy (failed deliveries) are left out."""
    rows = frame[(frame["strategy"] == label) & frame["accuracy"].notna()]
    if mode == "federated" and len(rows):
        rows = rows[rows["round"] == rows["round"].max()]
    return rows.groupby("device_id")["accuracy"].mean().astype(float)


def strategy_totals(frame, label: str, mode: str) -> dict:
    """Fleet-level figures of one strategy over all rounds: accuracy statistics across devices."""
    sub = frame[frame["strategy"] == label]
    acc = device_accuracies(frame, label, mode).to_numpy(dtype=float)
    return {
        "accuracy_mean": float(acc.mean()) if acc.size else None,
        "accuracy_p10": float(np.percentile(acc, 10)) if acc.size else None,
        "accuracy_min": float(acc.min()) if acc.size else None,
        "bytes_down_total": int(sub["bytes_down"].fillna(0).sum()),
        "airtime_down_s_total": float(sub["airtime_down_s"].fillna(0.0).sum()),
        "failed": int((sub["failure"] != "").sum()),
    }


def write_json(path: Path, obj) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
