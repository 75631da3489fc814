"""Reading run folders into one object per run, through the run folder's declared tables.

``transfers.csv`` and ``rounds.csv`` are read with their declarations
(:mod:`testbed.tables`), ``measurements.csv`` with the measurement table of the
run's scenario (its own columns included), looked up in the scenario registry;
a scenario not installed here falls back to the base measurement columns, its
own columns keeping the types pandas infers. Only committed rounds are kept
(those ``progress.json`` counts as done), so a run killed mid-way, or one whose
last round is still being written, loads with what it has.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd
import yaml

from testbed.tables import MEASUREMENTS, ROUNDS, TRANSFERS, Column, Table


class ReportError(ValueError):
    """A folder that cannot be reported; the message is one line naming it."""


@dataclass(eq=False)
class RunData:
    """One run folder, loaded."""

    path: Path
    label: str  # how the report names this run (the folder name unless given)
    scenario: str  # the scenario's registered name ("" when the folder does not say)
    over_rounds: str  # how a device's accuracy is taken over rounds: "mean" or "last" (testbed.metrics)
    measurement_table: Table  # the declaration measurements.csv was read with
    measurements: pd.DataFrame  # measurements.csv, committed rounds
    transfers: pd.DataFrame  # transfers.csv, committed rounds
    round_stats: pd.DataFrame  # rounds.csv, committed rounds
    devices: pd.DataFrame
    payloads: dict[str, dict]  # strategy label -> payloads.json entry
    summary: dict
    config_text: str
    config: dict = field(default_factory=dict)
    transfer_order: tuple[str, ...] = ()  # the scenario's transfer names, as it declares them
    rounds_done: int = 0

    @property
    def strategies(self) -> list[str]:
        """Strategy labels in config order, then any others found in the run's files."""
        order = [e.get("label") for e in self.config.get("strategies", []) if isinstance(e, dict)]
        order += list(self.payloads) + list(self.summary.get("strategies", {}))
        order += list(pd.unique(self.measurements["label"])) + list(pd.unique(self.transfers["label"]))
        return list(dict.fromkeys(str(s) for s in order if s))

    @property
    def transfer_names(self) -> list[str]:
        """The transfers of this run: the scenario's declared ones first, then any others found."""
        return list(dict.fromkeys([*self.transfer_order, *pd.unique(self.transfers["transfer"])]))

    @property
    def scenario_columns(self) -> list[Column]:
        """The measurement columns beyond the base ones (accuracy, train_loss...): what the scenario measured.

        Declared columns come with their unit and meaning; those of a scenario not installed
        here are described by the type pandas inferred."""
        declared = {c.name: c for c in self.measurement_table.columns}
        out = []
        for name in self.measurements.columns:
            if name in MEASUREMENTS.names:
                continue
            out.append(declared.get(name) or Column(name, _inferred_dtype(self.measurements[name]), "", ""))
        return out

    @cached_property
    def wide(self) -> pd.DataFrame:
        """The wide per-device view (as metrics.csv): each measurement row with its transfers' figures."""
        from testbed.metrics import wide_view

        return wide_view(self.measurements, self.transfers)

    @property
    def rounds(self) -> int | None:
        value = self.summary.get("rounds", self.config.get("rounds"))
        return int(value) if value is not None else None


def _inferred_dtype(values: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(values):
        return "bool"
    if pd.api.types.is_integer_dtype(values):
        return "int"
    if pd.api.types.is_float_dtype(values):
        return "float"
    return "str"


def _read_json(path: Path, default):
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None


def _scenario(config: dict, summary: dict) -> tuple[str, type | None, Table]:
    """The run's scenario name, its class (None: not installed here) and its measurement table."""
    from testbed.scenarios import SCENARIOS, ScenarioSpecError, scenario_options

    spec = config.get("scenario")
    spec = spec if isinstance(spec, dict) else {}
    name = str(spec.get("name") or summary.get("scenario") or "")
    try:
        cls = SCENARIOS.get(name)
    except KeyError:
        return name, None, MEASUREMENTS
    try:
        _, options = scenario_options({**spec, "name": name})
    except ScenarioSpecError:  # options of another version: the declared columns still apply
        options = None
    return name, cls, cls.measurements_table(options)


def _read_table(table: Table, path: Path, committed: int | None) -> pd.DataFrame:
    try:
        frame = table.read(path)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise ReportError(f"{table.file(path)}: cannot parse ({' '.join(str(exc).split())})") from None
    if committed is not None:
        frame = frame[frame["round"] <= committed].reset_index(drop=True)
    return frame


def _rounds_done(committed: int | None, summary: dict, measurements: pd.DataFrame) -> int:
    if committed is not None:  # progress.json is the commit marker
        return committed
    if "rounds_done" in summary:
        return int(summary["rounds_done"])
    return int(measurements["round"].max()) if len(measurements) else 0


def load_run(path: str | Path, label: str | None = None) -> RunData:
    """Load one run folder; ``label`` names it in the report (default: the folder name)."""
    from testbed.scenarios import Scenario

    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path}: not a folder")
    if not (path / "config.yaml").exists() and not MEASUREMENTS.file(path).exists():
        raise ReportError(f"{path}: not a run folder (no config.yaml or {MEASUREMENTS.file(path).name})")
    config_text = (path / "config.yaml").read_text() if (path / "config.yaml").exists() else ""
    try:
        config = yaml.safe_load(config_text) or {}
    except yaml.YAMLError:
        config = {}
    config = config if isinstance(config, dict) else {}
    summary = _read_json(path / "summary.json", {})
    summary = summary if isinstance(summary, dict) else {}
    progress = _read_json(path / "progress.json", {})
    # Rows of a round after the last committed one were being written when the run stopped.
    committed = progress.get("rounds_done") if isinstance(progress, dict) else None
    committed = int(committed) if isinstance(committed, int) else None
    name, cls, measurement_table = _scenario(config, summary)
    over_rounds = summary.get("fleet_accuracy") or (cls or Scenario).fleet_accuracy
    measurements = _read_table(measurement_table, path, committed)
    try:
        devices = pd.read_csv(path / "devices.csv") if (path / "devices.csv").exists() else pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path / 'devices.csv'}: cannot parse ({' '.join(str(exc).split())})") from None
    payload_list = _read_json(path / "payloads.json", [])
    payloads = {str(p["label"]): p for p in payload_list if isinstance(p, dict) and "label" in p}
    return RunData(
        path=path,
        label=label or path.resolve().name,
        scenario=name,
        over_rounds=str(over_rounds),
        measurement_table=measurement_table,
        measurements=measurements,
        transfers=_read_table(TRANSFERS, path, committed),
        round_stats=_read_table(ROUNDS, path, committed),
        devices=devices,
        payloads=payloads,
        summary=summary,
        config_text=config_text,
        config=config,
        transfer_order=tuple(t.name for t in cls.transfers) if cls is not None else (),
        rounds_done=_rounds_done(committed, summary, measurements),
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
