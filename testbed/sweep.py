"""Sweeps: run an experiment at every point of a grid of config values.

A config's ``sweep:`` section maps dotted config keys to lists of values::

    sweep:
      fleet.link.snr_db: [0, 10, 20]
      strategies.2.bits: [4, 8]

and the sweep runs every point of the cartesian product (here six), each into
``OUT/points/<name>`` where the name is built from the point's values, so that
re-running the sweep finds the points already done and skips them, and resumes a
point that was interrupted. Points run one after another: each is a whole run of
the orchestrator, using the whole Ray engine for its devices (the parallelism is
within a point, across devices). At the end the sweep writes ``OUT/report.html``
(every point's strategies, labelled ``point / strategy``) and ``OUT/sweep.csv``
(one row per point and strategy: the point's values, then the report's numbers).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from testbed.config import ConfigError, ExperimentConfig, apply_overrides, dump_config, validate_tree

log = logging.getLogger("testbed.sweep")

_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")
NAME_LIMIT = 120  # characters of a point's folder name before it is shortened with a hash


@dataclass(frozen=True)
class SweepPoint:
    values: dict[str, Any]  # dotted key -> value, in the sweep's key order
    name: str  # folder name under points/, stable for the same values
    label: str  # short form for plots and tables: "snr_db=0 bits=4"
    config: ExperimentConfig


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def point_name(values: dict[str, Any]) -> str:
    """``{"fleet.link.snr_db": 0, "strategies.2.bits": 4}`` -> ``fleet.link.snr_db=0__strategies.2.bits=4``.

    Characters unsafe in a file name become ``-``; when that loses information (or
    the name is too long) a hash of the exact values is appended, so two points
    never share a folder.
    """
    raw = "__".join(f"{key}={_text(value)}" for key, value in values.items())
    safe = _UNSAFE.sub("-", raw).strip("-")
    if safe != raw or len(safe) > NAME_LIMIT:
        digest = hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:8]
        safe = f"{safe[:NAME_LIMIT]}-{digest}"
    return safe


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each dotted key's shortest dotted suffix that no other key shares."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if not any(other != key and (other == suffix or other.endswith("." + suffix)) for other in keys):
                break
        out[key] = suffix
    return out


def sweep_grid(sweep: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of the sweep's values, the last key varying fastest."""
    if not sweep:
        raise ConfigError("sweep: no keys to sweep")
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep: {key}: needs a non-empty list of values")
    keys = list(sweep)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(sweep[k] for k in keys))]


def sweep_points(config: ExperimentConfig, source: str = "sweep") -> list[SweepPoint]:
    """Every point's validated config (the sweep section removed), checked before anything runs."""
    if not config.sweep:
        raise ConfigError(f"{source}: the config has no sweep: section (dotted key -> list of values)")
    base = config.model_dump(mode="json")
    base["sweep"] = None
    shorts = short_keys(list(config.sweep))
    points, names = [], {}
    for values in sweep_grid(config.sweep):
        tree = json.loads(json.dumps(base))  # a deep copy
        # JSON is YAML, so apply_overrides parses every value back to what the sweep listed.
        try:
            apply_overrides(tree, [f"{key}={json.dumps(value)}" for key, value in values.items()])
        except (IndexError, KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise ConfigError(f"{source}: sweep: {exc}") from None
            raise ConfigError(f"{source}: sweep: cannot set {list(values)} ({exc})") from None
        name = point_name(values)
        point_source = f"{source} (sweep point {name})"
        point_config = validate_tree(tree, point_source)
        if name in names:
            raise ConfigError(f"{source}: sweep: two points share the name {name}: list each value once")
        names[name] = values
        label = " ".join(f"{shorts[key]}={_text(value)}" for key, value in values.items())
        points.append(SweepPoint(values=values, name=name, label=label, config=point_config))
    return points


def point_state(point_dir: Path, config: ExperimentConfig) -> str:
    """``done`` (summary.json says every round is done), ``partial`` (the run was started:
    its config.yaml is there, so the orchestrator can resume it) or ``new``.

    A point folder whose config.yaml is not this point's config (the sweep's config was
    edited since) is an error rather than a silent reuse of other settings' results.
    """
    written = point_dir / "config.yaml"
    if not written.exists():
        return "new"
    if written.read_text() != dump_config(config):
        raise ConfigError(
            f"{written}: was run with another config than this sweep's point; "
            "delete the point's folder to rerun it, or sweep into another --out"
        )
    try:
        summary = json.loads((point_dir / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        summary = {}
    if summary.get("rounds_done") == config.rounds and summary.get("rounds", config.rounds) == config.rounds:
        return "done"
    return "partial"


def sweep_table(points: list[SweepPoint], table: pd.DataFrame) -> pd.DataFrame:
    """The report's strategy table with the point's values in front: one row per point and strategy."""
    keys = list(points[0].values) if points else []
    by_label = {p.label: p for p in points}
    rows = []
    for _, row in table.iterrows():
        point = by_label[row["run"]]
        front = {"point": point.name, **{k: _text(v) if not isinstance(v, (int, float)) else v for k, v in point.values.items()}}
        rows.append({**front, **row.drop(labels=["run"]).to_dict()})
    return pd.DataFrame(rows, columns=["point", *keys, *[c for c in table.columns if c != "run"]])


def run_sweep(
    config: ExperimentConfig,
    out_dir: str | Path,
    ray_address: str | None = None,
    progress: bool = True,
    config_path: str | Path | None = None,
) -> Path:
    """Run every point not yet done, then write OUT/report.html and OUT/sweep.csv; returns the report."""
    from testbed.engine import local_ray_head
    from testbed.runner import run_experiment
    from testbed.report import strategy_table, write_report
    from testbed.report.runs import load_runs

    out_dir = Path(out_dir)
    points = sweep_points(config, str(config_path or "sweep"))
    (out_dir / "points").mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(dump_config(config))
    (out_dir / "sweep.json").write_text(
        json.dumps([{"name": p.name, "label": p.label, "values": p.values} for p in points], indent=2) + "\n"
    )
    todo = []
    for index, point in enumerate(points, 1):
        point_dir = out_dir / "points" / point.name
        state = point_state(point_dir, point.config)
        what = {"done": "already done, skipped", "partial": "resuming", "new": "running"}[state]
        log.info("sweep point %d/%d %s: %s", index, len(points), point.name, what)
        if progress:
            print(f"sweep point {index}/{len(points)} {point.label}: {what}", flush=True)
        if state != "done":
            todo.append((point, point_dir, state))
    # One Ray for every point: attach to the given cluster, else start a local head once.
    address = ray_address or config.engine.ray_address
    with contextlib.nullcontext(address) if address or not todo else local_ray_head(config.engine.num_workers) as address:
        for point, point_dir, state in todo:
            run_experiment(
                point.config,
                point_dir,
                resume=state == "partial",
                ray_address=address,
                progress=progress,
                config_path=config_path,
            )
    point_dirs = [out_dir / "points" / p.name for p in points]
    labels = [p.label for p in points]
    report = write_report(point_dirs, out_dir / "report.html", labels=labels)
    table = strategy_table(load_runs(point_dirs, labels))
    sweep_table(points, table).to_csv(out_dir / "sweep.csv", index=False)
    return report
