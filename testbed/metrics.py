"""What the testbed measures, and the one definition of every fleet statistic.

- Reconstruction error: NMSE of a received state against a reference, in dB.
- A failed device (in a round, for a label) is a measurement row with a failure;
  the devices that count towards fleet accuracy are the rows with an accuracy.
  summary.json, rounds.csv and the report all use :func:`failed`,
  :func:`device_accuracies` and :func:`round_summary`, never their own.
- The wide per-device view (metrics.csv, metrics.parquet): each measurement row
  with its transfers' figures beside it, derived from the declared tables.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from testbed.atomic import atomic_write, atomic_write_text

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


def conv_nmse_db(received: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]) -> float:
    """NMSE over the conv kernels alone (k > 1): where the symmetry codecs act, since BatchNorm
    statistics dominate the whole model's power."""
    from strategies.base import is_conv_kernel

    kernels = {name: t for name, t in reference.items() if is_conv_kernel(t)}
    return nmse_db(received, kernels) if kernels else math.nan


# ---- fleet statistics -------------------------------------------------------------------


def failed(frame):
    """Boolean Series: the measurement rows of failed devices."""
    return frame["failure"].astype(str) != ""


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def _is_number(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def round_summary(round_: int, label: str, measurements: list[dict], transfers: list[dict]) -> dict:
    """One rounds.csv row from the measurement and transfer rows of one (round, label)."""
    absent = sum(1 for r in measurements if r.get("unavailable"))
    measurements = [r for r in measurements if not r.get("unavailable")]
    acc = _finite(r.get("accuracy") for r in measurements)
    latencies = _finite(r.get("latency_s") for r in measurements)

    def total(key, direction=None):
        return sum(r[key] for r in transfers if _is_number(r[key]) and direction in (None, r["direction"]))

    return {
        "round": round_,
        "label": label,
        "devices": len(measurements),
        "failed": sum(1 for r in measurements if r["failure"]),
        "unavailable": absent,
        "late": sum(1 for r in measurements if r.get("late")),
        "on_time": sum(1 for r in measurements if not r["failure"] and not r.get("late")),
        "latency_s_max": max(latencies) if latencies else math.nan,
        "bytes": int(total("bytes")),
        "bytes_down": int(total("bytes", "down")),
        "bytes_up": int(total("bytes", "up")),
        "airtime_s": float(total("airtime_s")),
        "accuracy_mean": float(np.mean(acc)) if acc else math.nan,
        "accuracy_p10": float(np.percentile(acc, 10)) if acc else math.nan,
        "accuracy_min": float(min(acc)) if acc else math.nan,
        "recon_nmse_db_mean": power_mean_db(r.get("recon_nmse_db") for r in measurements),
    }


def device_accuracies(measurements, label: str, over_rounds: str):
    """device_id -> the device's accuracy for a label: its mean over rounds (``over_rounds="mean"``,
    scenarios where every round measures the same model) or its last round (``"last"``, where the
    model changes every round). Rows without an accuracy are left out; a device whose uplink failed
    still measured the model it received, so it counts here while it counts as failed too."""
    if "accuracy" not in measurements:
        return measurements.iloc[0:0].groupby("device_id").size().astype(float)
    rows = measurements[(measurements["label"] == label) & measurements["accuracy"].notna()]
    if over_rounds == "last" and len(rows):
        rows = rows[rows["round"] == rows["round"].max()]
    return rows.groupby("device_id")["accuracy"].mean().astype(float)


def label_totals(measurements, transfers, label: str, over_rounds: str) -> dict:
    """Fleet-level figures of one label over all rounds: accuracy across devices, bytes, failures."""
    acc = device_accuracies(measurements, label, over_rounds).to_numpy(dtype=float)
    sent = transfers[transfers["label"] == label]
    mine = measurements[measurements["label"] == label]
    if "unavailable" in mine:
        mine = mine[~mine["unavailable"].astype(bool)]  # rows of devices that did not take part
    return {
        "accuracy_mean": float(acc.mean()) if acc.size else None,
        "accuracy_p10": float(np.percentile(acc, 10)) if acc.size else None,
        "accuracy_min": float(acc.min()) if acc.size else None,
        "bytes_total": int(sent["bytes"].fillna(0).sum()),
        "bytes_down_total": int(sent.loc[sent["direction"] == "down", "bytes"].fillna(0).sum()),
        "bytes_up_total": int(sent.loc[sent["direction"] == "up", "bytes"].fillna(0).sum()),
        "airtime_s_total": float(sent["airtime_s"].fillna(0.0).sum()),
        "failed": int(failed(mine).sum()),
        "device_rounds": int(len(mine)),
    }


# ---- the wide per-device view ------------------------------------------------------------


def wide_view(measurements, transfers):
    """One row per measurement row, with each transfer's figures as columns named by the
    declared ``wide`` templates (``bytes_down``, ``bit_errors_up``...)."""
    import pandas as pd

    from testbed.tables import TRANSFERS

    keys = ["round", "label", "device_id"]
    wide = measurements.copy()
    for name in pd.unique(transfers["transfer"]):
        part = transfers[transfers["transfer"] == name]
        columns = {c.name: c.wide.format(t=name) for c in TRANSFERS.columns if c.wide}
        part = part[keys + list(columns)].rename(columns=columns)
        wide = wide.merge(part, on=keys, how="left")
    return wide


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


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def write_frame(path: Path, frame) -> None:
    """A derived table as CSV or Parquet (by the suffix), written atomically."""
    if Path(path).suffix == ".parquet":
        atomic_write(path, lambda f: frame.to_parquet(f, index=False))
    else:
        atomic_write_text(path, frame.to_csv(index=False, lineterminator="\n"))


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
