"""The fleet: devices with their link, compute profile and data partition.

A fleet comes from the config (each attribute fixed, a list cycled over the
devices, or a distribution drawn per device) or from a trace CSV of measured
devices; ``to_csv`` writes it back in the trace format so a run's fleet can be
reloaded exactly.

Draws are keyed by attribute and device id (``derive_rng(seed, "fleet",
"link.snr_db", device_id)``), so adding devices leaves the earlier devices as
they were, and each round's availability is keyed by round and device id.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from testbed.config import Choice, ComputeConfig, ConfigError, FleetConfig, LinkConfig, LogNormal, Normal, Uniform
from testbed.links import AUTO, LINK_RULES, Link, LinkParams, link_param_problem, make_link
from testbed.rng import derive_rng


class FleetError(ConfigError):
    """A fleet that cannot be built; one line naming the key (or file, line and column)."""


def _finite(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


COMPUTE_RULES = {
    "speed_factor": (lambda v: _finite(v) and v > 0, "must be > 0"),
    "availability": (lambda v: _finite(v) and 0 <= v <= 1, "must be in [0, 1]"),
}

_INT_FIELDS = ("packet_bytes", "max_attempts")
_STR_FIELDS = ("model", "modulation")
_INT_OR_AUTO_FIELDS = ("protected_repetition",)  # a count, or "auto"


def _problem(name: str, value) -> str | None:
    if name in LINK_RULES:
        return link_param_problem(name, value)
    accepts, rule = COMPUTE_RULES[name]
    return None if accepts(value) else rule


def _coerce(name: str, value):
    """The value in the type the device stores (checked by ``_problem`` first)."""
    if name in _STR_FIELDS:
        return value
    if name in _INT_OR_AUTO_FIELDS:
        return value if value == AUTO else int(value)
    if name in _INT_FIELDS:
        return int(value)
    return float(value)


@dataclass(frozen=True)
class Device:
    device_id: int
    link: LinkParams
    speed_factor: float = 1.0  # relative compute speed (1 = reference device)
    availability: float = 1.0  # probability the device takes part in a round
    partition: int | None = None  # data partition; None: the device's position in the fleet


# ---- trace CSV columns -----------------------------------------------------------------
class IntOrAuto:
    """Column type of a whole number or the word "auto"."""


# column -> (attribute of the device or its link, type)
_COLUMNS: dict[str, tuple[str, type]] = {
    "device_id": ("device_id", int),
    "snr_db": ("snr_db", float),
    "bandwidth_mbps": ("bandwidth_mbps", float),
    "latency_ms": ("latency_ms", float),
    "compute_factor": ("speed_factor", float),
    "availability": ("availability", float),
    "link_model": ("model", str),
    "ber": ("ber", float),
    "modulation": ("modulation", str),
    "packet_bytes": ("packet_bytes", int),
    "loss": ("loss", float),
    "max_attempts": ("max_attempts", int),
    "protected_repetition": ("protected_repetition", IntOrAuto),
    "partition": ("partition", int),
}
REQUIRED_COLUMNS = ("device_id", "snr_db", "bandwidth_mbps", "latency_ms", "compute_factor", "availability")
CSV_COLUMNS = tuple(_COLUMNS)


def _resolve(spec: Any, key: str, device_id: int, position: int, seed: int) -> tuple[Any, bool]:
    """One device's value of a fleet attribute: (value, whether it was drawn)."""
    if isinstance(spec, list):
        if not spec:
            raise FleetError(f"fleet.{key}: the list of values is empty")
        return spec[position % len(spec)], False
    if not isinstance(spec, (Uniform, Normal, LogNormal, Choice)):
        return spec, False
    rng = derive_rng(seed, "fleet", key, device_id)
    if isinstance(spec, Uniform):
        return float(rng.uniform(*spec.uniform)), True
    if isinstance(spec, Normal):
        return float(rng.normal(*spec.normal)), True
    if isinstance(spec, LogNormal):
        return float(rng.lognormal(*spec.lognormal)), True
    if not spec.choice:
        raise FleetError(f"fleet.{key}: choice needs at least one value")
    if spec.weights is None:
        return spec.choice[int(rng.integers(len(spec.choice)))], True
    weights = np.asarray(spec.weights, dtype=np.float64)
    if not (np.all(np.isfinite(weights)) and np.all(weights >= 0) and weights.sum() > 0):
        raise FleetError(f"fleet.{key}: weights must be non-negative with a positive sum, got {spec.weights}")
    return spec.choice[int(rng.choice(len(weights), p=weights / weights.sum()))], True


def _attribute(spec: Any, section: str, name: str, device_id: int, position: int, seed: int):
    key = f"{section}.{name}"
    value, drawn = _resolve(spec, key, device_id, position, seed)
    if drawn and name in _INT_FIELDS and isinstance(spec, (Uniform, Normal, LogNormal)) and _finite(value):
        value = round(value)  # a continuous draw of a count
    problem = _problem(name, value)
    if problem:
        verb = "drew" if drawn else "has"
        raise FleetError(f"fleet.{key}: device {device_id} {verb} {value!r}, {problem}")
    return _coerce(name, value)


def _link_params(cfg: LinkConfig, device_id: int, position: int, seed: int, given: dict | None = None) -> LinkParams:
    given = given or {}
    values = {}
    for f in fields(LinkParams):
        if f.name in given:
            values[f.name] = given[f.name]
        else:
            values[f.name] = _attribute(getattr(cfg, f.name), "link", f.name, device_id, position, seed)
    return LinkParams(**values)


class Fleet:
    def __init__(self, devices: list[Device]):
        ids = [d.device_id for d in devices]
        if len(set(ids)) != len(ids):
            repeated = sorted({i for i in ids if ids.count(i) > 1})
            raise FleetError(f"fleet: device ids must be unique, repeated: {repeated}")
        self.devices = [d if d.partition is not None else replace(d, partition=i) for i, d in enumerate(devices)]
        self._by_id = {d.device_id: d for d in self.devices}
        self._links: dict[int, Link] = {}

    # ---- building ----------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: FleetConfig, seed: int, base_dir: str | Path | None = None) -> "Fleet":
        """Draw the fleet of ``cfg`` (or read its trace; a relative trace path is under ``base_dir``)."""
        if cfg.trace:
            path = Path(cfg.trace)
            if not path.is_absolute():
                path = Path(base_dir or ".") / path
            return cls.from_csv(path, defaults=cfg.link, seed=seed)
        compute: ComputeConfig = cfg.compute
        devices = []
        for device_id in range(cfg.devices):
            link = _link_params(cfg.link, device_id, device_id, seed)
            devices.append(
                Device(
                    device_id=device_id,
                    link=link,
                    speed_factor=_attribute(compute.speed_factor, "compute", "speed_factor", device_id, device_id, seed),
                    availability=_attribute(compute.availability, "compute", "availability", device_id, device_id, seed),
                    partition=device_id,
                )
            )
        return cls(devices)

    @classmethod
    def from_csv(cls, path: str | Path, defaults: LinkConfig | None = None, seed: int = 0) -> "Fleet":
        """Read a trace CSV; optional link columns missing (or empty) come from ``defaults``."""
        path = Path(path)
        defaults = defaults if defaults is not None else LinkConfig()
        try:
            handle = path.open(newline="")
        except OSError as exc:
            raise FleetError(f"{path}: cannot read trace ({exc.strerror})") from None
        with handle:
            reader = csv.reader(handle)
            header = None
            devices, first_line = [], {}
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if header is None:
                    header = [cell.strip() for cell in row]
                    _check_header(path, line, header)
                    continue
                if len(row) != len(header):
                    raise FleetError(f"{path} line {line}: {len(row)} cells, expected {len(header)}")
                device = _device_from_row(path, line, dict(zip(header, row)), len(devices), defaults, seed)
                if device.device_id in first_line:
                    raise FleetError(
                        f"{path} line {line}, column device_id: device {device.device_id} "
                        f"already on line {first_line[device.device_id]}"
                    )
                first_line[device.device_id] = line
                devices.append(device)
        if header is None:
            raise FleetError(f"{path}: empty, expected a header line with {', '.join(REQUIRED_COLUMNS)}")
        if not devices:
            raise FleetError(f"{path}: no devices after the header")
        return cls(devices)

    def to_csv(self, path: str | Path) -> Path:
        """Write the fleet as a trace CSV with every column; ``from_csv`` reloads it exactly."""
        path = Path(path)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            for d in self.devices:
                row = []
                for column, (attr, kind) in _COLUMNS.items():
                    value = getattr(d.link, attr) if hasattr(d.link, attr) else getattr(d, attr)
                    row.append(repr(float(value)) if kind is float else str(value))
                writer.writerow(row)
        return path

    # ---- use -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.devices)

    def __iter__(self) -> Iterator[Device]:
        return iter(self.devices)

    def __eq__(self, other) -> bool:
        return isinstance(other, Fleet) and self.devices == other.devices

    def device(self, device_id: int) -> Device:
        try:
            return self._by_id[device_id]
        except KeyError:
            raise KeyError(f"no device {device_id} in the fleet") from None

    def link(self, device_id: int) -> Link:
        """The device's link (built once, then cached)."""
        link = self._links.get(device_id)
        if link is None:
            link = self._links[device_id] = make_link(self.device(device_id).link)
        return link

    def available(self, round: int, seed: int) -> list[Device]:
        """The devices taking part in ``round``: each with its availability probability."""
        return [
            d
            for d in self.devices
            if d.availability >= 1 or derive_rng(seed, "availability", round, d.device_id).random() < d.availability
        ]


# ---- trace parsing ---------------------------------------------------------------------


def _check_header(path: Path, line: int, header: list[str]) -> None:
    unknown = [c for c in header if c not in _COLUMNS]
    if unknown:
        raise FleetError(f"{path} line {line}: unknown column {unknown[0]!r} (known: {', '.join(CSV_COLUMNS)})")
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise FleetError(f"{path} line {line}: column {repeated[0]!r} appears twice")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise FleetError(f"{path} line {line}: missing column(s) {', '.join(missing)}")


def _parse_cell(path: Path, line: int, column: str, cell: str, kind: type):
    where = f"{path} line {line}, column {column}"
    text = cell.strip()
    if kind is str or (kind is IntOrAuto and text == AUTO):
        return text
    try:
        value = float(text)
    except ValueError:
        expected = "a whole number or 'auto'" if kind is IntOrAuto else "a number"
        raise FleetError(f"{where}: {cell!r} is not {expected}") from None
    if kind in (int, IntOrAuto):
        if not (math.isfinite(value) and value.is_integer()):
            raise FleetError(f"{where}: {cell!r} is not a whole number")
        return int(value)
    return value


def _device_from_row(path: Path, line: int, row: dict[str, str], position: int, defaults: LinkConfig, seed: int) -> Device:
    values: dict[str, Any] = {}
    for column, cell in row.items():
        attr, kind = _COLUMNS[column]
        if not cell.strip():
            if column in REQUIRED_COLUMNS:
                raise FleetError(f"{path} line {line}, column {column}: empty, a value is required")
            continue  # an optional column left empty: the default
        value = _parse_cell(path, line, column, cell, kind)
        if attr in LINK_RULES or attr in COMPUTE_RULES:
            problem = _problem(attr, value)
            if problem:
                raise FleetError(f"{path} line {line}, column {column}: {value!r} {problem}")
            value = _coerce(attr, value)
        elif value < 0:  # device_id, partition
            raise FleetError(f"{path} line {line}, column {column}: {value!r} must be >= 0")
        values[attr] = value
    device_id = values.pop("device_id")
    link_given = {name: values.pop(name) for name in list(values) if name in LINK_RULES}
    link = _link_params(defaults, device_id, position, seed, link_given)
    return Device(
        device_id=device_id,
        link=link,
        speed_factor=values["speed_factor"],
        availability=values["availability"],
        partition=values.get("partition", position),
    )
