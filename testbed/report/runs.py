"""Reading run folders (the contract in docs/REPORT.md) into one object per run.

Every file is optional except metrics.csv's existence is what makes a run worth
reporting: a run killed mid-way, or one whose last round is still being
written, still loads with what it has.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from testbed.metrics import BOOL_COLUMNS, COLUMNS, STR_COLUMNS, read_metrics


class ReportError(ValueError):
    """A folder that cannot be reported; the message is one line naming it."""


@dataclass
class RunData:
    """One run folder, loaded."""

    path: Path
    label: str  # how the report names this run (the folder name unless given)
    metrics: pd.DataFrame
    devices: pd.DataFrame
    payloads: dict[str, dict]  # strategy label -> payloads.json entry
    summary: dict
    config_text: str
    config: dict = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return str(self.summary.get("mode") or self.config.get("mode") or "broadcast")

    @property
    def strategies(self) -> list[str]:
        """Strategy labels in config order, then any others found in the metrics."""
        order = [e.get("label") for e in self.config.get("strategies", []) if isinstance(e, dict)]
        order += list(self.payloads) + list(self.summary.get("strategies", {}))
        order += list(pd.unique(self.metrics["strategy"]))
        return list(dict.fromkeys(s for s in order if s))

    @property
    def rounds_done(self) -> int:
        if "rounds_done" in self.summary:
            return int(self.summary["rounds_done"])
        return int(self.metrics["round"].max()) if len(self.metrics) else 0

    @property
    def rounds(self) -> int | None:
        value = self.summary.get("rounds", self.config.get("rounds"))
        return int(value) if value is not None else None


def _read_metrics(path: Path) -> pd.DataFrame:
    csv = path / "metrics.csv"
    if not csv.exists():
        raise ReportError(f"{path}: no metrics.csv (not a run folder, or the run has not finished a round)")
    try:
        frame = read_metrics(path)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise ReportError(f"{csv}: cannot parse ({exc})") from None
    # Plain floats (NaN where empty) for the tables and plots.
    for column in COLUMNS:
        if column not in STR_COLUMNS and column not in BOOL_COLUMNS:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    # A failed delivery is any row that did not end with a decoded model.
    frame["failed"] = ~frame["delivered"] | ~frame["decode_ok"] | (frame["failure"] != "")
    return frame


def _read_json(path: Path, default):
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None


def load_run(path: str | Path, label: str | None = None) -> RunData:
    """Load one run folder; ``label`` names it in the report (default: the folder name)."""
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path}: not a folder")
    metrics = _read_metrics(path)
    devices = pd.read_csv(path / "devices.csv") if (path / "devices.csv").exists() else pd.DataFrame()
    payload_list = _read_json(path / "payloads.json", [])
    payloads = {str(p["label"]): p for p in payload_list if isinstance(p, dict) and "label" in p}
    summary = _read_json(path / "summary.json", {})
    config_text = (path / "config.yaml").read_text() if (path / "config.yaml").exists() else ""
    try:
        config = yaml.safe_load(config_text) or {}
    except yaml.YAMLError:
        config = {}
    return RunData(
        path=path,
        label=label or path.resolve().name,
        metrics=metrics,
        devices=devices,
        payloads=payloads,
        summary=summary if isinstance(summary, dict) else {},
        config_text=config_text,
        config=config if isinstance(config, dict) else {},
    )


def load_runs(paths, labels=None) -> list[RunData]:
    """Load several run folders; labels default to folder names, made unique if they clash."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ReportError("no run folders given")
    if labels is None:
        labels = [p.resolve().name for p in paths]
        if len(set(labels)) < len(labels):  # same folder name under different parents
            labels = [f"{p.resolve().parent.name}/{p.resolve().name}" for p in paths]
    if len(labels) != len(paths):
        raise ReportError(f"{len(labels)} labels for {len(paths)} run folders")
    return [load_run(p, label) for p, label in zip(paths, labels)]
