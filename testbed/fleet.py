"""The fleet: devices with their link, compute profile and data partition.

A fleet comes from the config (each attribute fixed, a list cycled over the devices, or a
distribution drawn per device; see :mod:`testbed.attributes`) or from a trace CSV of
measured devices; ``to_csv`` writes it back in the trace format so a run's fleet can be
reloaded exactly.

Draws are keyed by attribute and device id (``derive_rng(seed, "fleet", "link.snr_db",
device_id)``), so adding devices leaves the earlier devices as they were, and each round's
availability is keyed by round and device id. A device's link model is drawn first; it
takes the parameters of its own model (from the config section, else the model's defaults).

The trace columns are derived from the link schema (:func:`testbed.links.schema.parameters`)
and the compute section: :func:`columns`. A trace may give each device's device<->fog hop link
too, in the same columns prefixed ``fog_`` (``fog_link_model``, ``fog_snr_db``, ...).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from testbed.attributes import Rule, draw, is_measured, one_of, rule_of, whole
from testbed.config import ComputeConfig, ConfigError, FleetConfig, FogConfig
from testbed.links import Link, LinkParams, available, make_link
from testbed.links.schema import LinkSection, link_section, parameters
from testbed.rng import derive_rng


class FleetError(ConfigError):
    """A fleet that cannot be built; one line naming the key (or file, line and column)."""


@dataclass(frozen=True)
class Device:
    device_id: int
    link: LinkParams
    speed_factor: float = 1.0  # relative compute speed (1 = reference device)
    availability: float = 1.0  # probability the device takes part in a round
    schedule: str = "1"  # per round (cycled): 1 it can take part, 0 it cannot
    partition: int | None = None  # data partition; None: the device's position in the fleet
    fog: int | None = None  # the fog node it is attached to (a trace's fog column); None: by fleet.fog.assign
    fog_link: LinkParams | None = None  # its device<->fog hops' link (trace fog_* or fleet.fog.link); None: its own link


# ---- trace CSV columns -----------------------------------------------------------------

# Trace names that differ from the attribute's: the link's model, the compute section's speed factor.
_COLUMN_NAMES = {"model": "link_model", "speed_factor": "compute_factor"}
FOG_PREFIX = "fog_"  # the device<->fog hop link's columns: the link columns with this prefix


@dataclass(frozen=True)
class Column:
    name: str  # in the CSV
    attr: str  # the device's attribute, or the link parameter
    rule: Rule
    link: bool  # a link parameter (or the link model)
    required: bool  # the header must have it; every row gives it
    measured: bool  # a measured link value: the rows whose link model has it must give it
    fog_hop: bool = False  # a parameter of the device<->fog hop link (fog_*), not of the device's own link


def columns(fog_hops: bool = True) -> dict[str, Column]:
    """The trace columns, in ``devices.csv`` order: device id, link model and parameters, compute,
    partition, fog node, and (``fog_hops``) the device<->fog hop link's model and parameters. None of
    the hop columns is required: a row that gives none uses ``fleet.fog.link``, else its own link."""
    models = available()
    links = [Column("link_model", "model", one_of(*models), True, False, False)]
    for p in parameters().values():
        everywhere = len(p.models) == len(models)
        links.append(Column(_COLUMN_NAMES.get(p.name, p.name), p.name, p.rule, True, p.measured and everywhere, p.measured))
    out = [Column("device_id", "device_id", whole(ge=0), False, True, False), *links]
    for name, field in ComputeConfig.model_fields.items():
        out.append(Column(_COLUMN_NAMES.get(name, name), name, rule_of(field), False, is_measured(field), False))
    out.append(Column("partition", "partition", whole(ge=0), False, False, False))
    out.append(Column("fog", "fog", whole(ge=0), False, False, False))
    if fog_hops:
        out += [replace(c, name=FOG_PREFIX + c.name, required=False, fog_hop=True) for c in links]
    return {c.name: c for c in out}


def required_columns() -> tuple[str, ...]:
    return tuple(name for name, c in columns().items() if c.required)


# ---- drawing a device ---------------------------------------------------------------------


def _attribute(spec: Any, rule: Rule, key: str, device_id: int, position: int, seed: int):
    value, drawn = draw(spec, rule, seed, key, device_id, position)
    problem = rule.problem(value)
    if problem:
        raise FleetError(f"fleet.{key}: device {device_id} {'drew' if drawn else 'has'} {value!r}, {problem}")
    return rule.check(value)


def _link_params(
    section: LinkSection, device_id: int, position: int, seed: int, given: Mapping[str, Any] | None = None,
    key: str = "link",
) -> LinkParams:
    """One device's link: its model (given, or drawn from the section), then that model's parameters
    (given, else drawn from the section, else the model's defaults). ``key`` names the section in
    draws and errors (``fog.link``: the device<->fog hops' own draws)."""
    given = given or {}
    fields = type(section).model_fields
    model = given.get("model")
    if model is None:
        model = _attribute(section.model, rule_of(fields["model"]), f"{key}.model", device_id, position, seed)
    params = available()[model].Params
    values = {}
    for name, field in params.model_fields.items():
        if name == "model":
            continue
        if name in given:
            values[name] = given[name]
        elif name in fields:
            values[name] = _attribute(getattr(section, name), rule_of(field), f"{key}.{name}", device_id, position, seed)
    return params(model=model, **values)


class Fleet:
    def __init__(self, devices: list[Device]):
        self.fog = FogConfig()  # fog nodes: with_fog
        self._fog_links: dict[int, Link] = {}
        ids = [d.device_id for d in devices]
        if len(set(ids)) != len(ids):
            repeated = sorted({i for i in ids if ids.count(i) > 1})
            raise FleetError(f"fleet: device ids must be unique, repeated: {repeated}")
        self.devices = [d if d.partition is not None else replace(d, partition=i) for i, d in enumerate(devices)]
        self._by_id = {d.device_id: d for d in self.devices}
        self._position = {d.device_id: i for i, d in enumerate(self.devices)}
        self._links: dict[int, Link] = {}
        for d in self.devices:  # a model may refuse a combination of its parameters when its link is built
            try:
                self.link(d.device_id)
            except ValueError as exc:
                raise FleetError(f"fleet.link: device {d.device_id}: {exc}") from None
            self._build_fog_link(d)

    # ---- building ----------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: FleetConfig, seed: int, base_dir: str | Path | None = None) -> "Fleet":
        """Draw the fleet of ``cfg`` (or read its trace; a relative trace path is under ``base_dir``,
        the config file's folder), with its fog nodes (``cfg.fog``)."""
        if cfg.trace:
            path = Path(cfg.trace)
            if not path.is_absolute():
                path = Path(base_dir or ".") / path
            return cls.from_csv(path, defaults=cfg.link, seed=seed, fog_defaults=cfg.fog.link).with_fog(cfg.fog, seed)
        compute = cfg.compute
        fields = ComputeConfig.model_fields
        devices = []
        for device_id in range(cfg.devices):
            attrs = {
                name: _attribute(getattr(compute, name), rule_of(field), f"compute.{name}", device_id, device_id, seed)
                for name, field in fields.items()
            }
            devices.append(Device(device_id, _link_params(cfg.link, device_id, device_id, seed), partition=device_id, **attrs))
        return cls(devices).with_fog(cfg.fog, seed)

    def with_fog(self, fog: FogConfig, seed: int) -> "Fleet":
        """Attach the fog nodes of ``fog``. A device's hop link is its trace's (``fog_*`` columns), else
        drawn from ``fog.link`` (keyed ``fog.link.*`` and the device id), else its own link."""
        self.fog = fog
        for i, d in enumerate(self.devices):
            if d.fog is not None and d.fog >= fog.nodes:
                raise FleetError(f"fleet.trace: device {d.device_id}: fog node {d.fog} is beyond fleet.fog.nodes = {fog.nodes} "
                                 f"(0..{fog.nodes - 1})")
            if d.fog_link is None and fog.link is not None:
                d = self.devices[i] = self._by_id[d.device_id] = replace(
                    d, fog_link=_link_params(fog.link, d.device_id, i, seed, key="fog.link"))
                self._build_fog_link(d)
        return self

    def _build_fog_link(self, d: Device) -> None:
        if d.fog_link is not None:
            try:
                self._fog_links[d.device_id] = make_link(d.fog_link)
            except ValueError as exc:  # a model may refuse a combination of its parameters
                raise FleetError(f"fleet.fog.link: device {d.device_id}: {exc}") from None

    @classmethod
    def from_csv(
        cls, path: str | Path, defaults: LinkSection | None = None, seed: int = 0, fog_defaults: LinkSection | None = None,
    ) -> "Fleet":
        """Read a trace CSV; link parameters missing (or empty) come from ``defaults`` (a ``fleet.link``
        section). A row with any ``fog_*`` cell gives its fog hop link: the cells it leaves empty are
        its own link's (its model, and the parameters the hop's model shares with it), and the rest
        come from ``fog_defaults`` (``fleet.fog.link``), else from ``defaults``."""
        path = Path(path)
        defaults = defaults if defaults is not None else link_section()
        sections = (defaults, fog_defaults if fog_defaults is not None else defaults)  # own link, fog hop link
        cols = columns()
        reader = csv.reader(io.StringIO(_read_text(path), newline=""))
        header = None
        devices, first_line = [], {}  # first_line: device id -> its line
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip() for cell in row]
                _check_header(path, line, header, cols)
                continue
            if len(row) != len(header):
                raise FleetError(f"{path} line {line}: {len(row)} cells, expected {len(header)}")
            device = _device_from_row(path, line, dict(zip(header, row)), len(devices), sections, seed, cols)
            if device.device_id in first_line:
                raise FleetError(
                    f"{path} line {line}, column device_id: device {device.device_id} already on line {first_line[device.device_id]}"
                )
            first_line[device.device_id] = line
            devices.append(device)
        if header is None:
            raise FleetError(f"{path}: empty, expected a header line with {', '.join(required_columns())}")
        if not devices:
            raise FleetError(f"{path}: no devices after the header")
        for device in devices:
            if device.partition >= len(devices):
                raise FleetError(
                    f"{path} line {first_line[device.device_id]}, column partition: {device.partition} is beyond the fleet's "
                    f"{len(devices)} partitions (0..{len(devices) - 1}, one per device)"
                )
        return cls(devices)

    def to_csv(self, path: str | Path) -> Path:
        """Write the fleet as a trace CSV with every column; ``from_csv`` reloads it exactly.

        A link parameter the device's model does not have is left empty; the ``fog_*`` columns are
        written when some device has a hop link of its own.
        """
        path = Path(path)
        cols = columns(fog_hops=any(d.fog_link is not None for d in self.devices))
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(cols)
            for d in self.devices:
                row = []
                for c in cols.values():
                    link = d.fog_link if c.fog_hop else d.link
                    if c.link and (link is None or c.attr not in type(link).model_fields):
                        row.append("")
                        continue
                    value = getattr(link if c.link else d, c.attr)
                    row.append("" if value is None else repr(value) if isinstance(value, float) else str(value))
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

    def fog_node(self, device_id: int) -> int:
        """The fog node (0..fog.nodes-1) a device is attached to: its trace's, else by the ``fog.assign`` rule."""
        if self.device(device_id).fog is not None:
            return self.device(device_id).fog
        position, nodes = self._position[device_id], self.fog.nodes
        return position % nodes if self.fog.assign == "round-robin" else position * nodes // len(self.devices)

    def fog_link(self, device_id: int) -> Link:
        """The link of the device's device<->fog hops: drawn from ``fog.link``, else its own link."""
        link = self._fog_links.get(device_id)
        return self.link(device_id) if link is None else link

    def available(self, round: int, seed: int) -> list[Device]:
        """The devices taking part in ``round``: those its schedule allows, each with its availability
        probability (a draw keyed by round and device)."""
        return [
            d
            for d in self.devices
            if d.schedule[(round - 1) % len(d.schedule)] == "1"
            and (d.availability >= 1 or derive_rng(seed, "availability", round, d.device_id).random() < d.availability)
        ]

    def flops_per_s(self, device_id: int, reference: float) -> float:
        """The device's compute speed: ``reference`` (fleet.reference_flops_per_s) x its speed factor."""
        return reference * self.device(device_id).speed_factor


# ---- trace parsing ---------------------------------------------------------------------


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FleetError(f"{path}: cannot read trace ({exc.strerror})") from None
    try:
        return data.decode("utf-8-sig")  # a byte-order mark (spreadsheets write one) is not a column name
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise FleetError(f"{path} line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the trace as UTF-8") from None


def _check_header(path: Path, line: int, header: list[str], cols: dict[str, Column]) -> None:
    unknown = [c for c in header if c not in cols]
    if unknown:
        raise FleetError(f"{path} line {line}: unknown column {unknown[0]!r} (known: {', '.join(cols)})")
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise FleetError(f"{path} line {line}: column {repeated[0]!r} appears twice")
    missing = [name for name, c in cols.items() if c.required and name not in header]
    if missing:
        raise FleetError(f"{path} line {line}: missing column(s) {', '.join(missing)}")


def _device_from_row(
    path: Path, line: int, row: dict[str, str], position: int, sections: tuple[LinkSection, LinkSection], seed: int,
    cols: dict[str, Column],
) -> Device:
    device: dict[str, Any] = {}
    given: tuple[dict[str, Any], dict[str, Any]] = ({}, {})  # the device's link, its fog hop link
    for name, cell in row.items():
        c, text, where = cols[name], cell.strip(), f"{path} line {line}, column {name}"
        if not text:
            if c.required:
                raise FleetError(f"{where}: empty, a value is required")
            continue  # an optional column left empty: the default
        try:
            value = c.rule.from_text(text)
        except ValueError as exc:
            raise FleetError(f"{where}: {exc}") from None
        problem = c.rule.problem(value)
        if problem:
            raise FleetError(f"{where}: {value!r} {problem}")
        (given[c.fog_hop] if c.link else device)[c.attr] = c.rule.check(value)
    params = _link_params(sections[0], device["device_id"], position, seed, given[0])
    _check_link_cells(path, line, params, given[0], cols, fog_hop=False)
    if given[1]:  # the row gives its fog hop link: what it leaves out is its own link's (the same radio)
        hop = {**params.model_dump(), **given[1]}
        device["fog_link"] = _link_params(sections[1], device["device_id"], position, seed, hop, key="fog.link")
        _check_link_cells(path, line, device["fog_link"], given[1], cols, fog_hop=True, known=hop)
    return Device(link=params, **{"partition": position, **device})  # no compute_factor: the reference speed


def _check_link_cells(
    path: Path, line: int, params: LinkParams, given: dict[str, Any], cols: dict[str, Column], fog_hop: bool,
    known: dict[str, Any] | None = None,
) -> None:
    """The row's link cells ``given`` against the model they built; ``known``: the values the link had
    from the row, its cells and what it took from the device's own link (default: ``given``)."""
    known = given if known is None else known
    for name, c in cols.items():
        if not c.link or c.attr == "model" or c.fog_hop != fog_hop:
            continue
        has = c.attr in type(params).model_fields
        # A measured value the device's model does not use (an SNR on a bsc link) describes the
        # device and is left aside; any other parameter of another model is a mistake.
        if c.attr in given and not has and not c.measured:
            raise FleetError(f"{path} line {line}, column {name}: link model {params.model} has no parameter {c.attr} (leave it empty)")
        if c.measured and has and c.attr not in known:
            raise FleetError(f"{path} line {line}, column {name}: link model {params.model} needs a measured value")
