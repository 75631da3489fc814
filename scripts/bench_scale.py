"""Scale benchmark: time per round and peak memory for 100, 1,000 and 10,000 devices x the 5 quickstart strategies.

For each fleet size: the quickstart config (broadcast, links over 0-20 dB, 50 test images per
device, the five strategies, automatic cohorts) through Flower on Ray, and the same per-device
work in a process pool of every core with no Flower or Ray (scripts/plain_loop.py, sharing
evaluations as the fleet's nodes do: the same work). ``--rounds`` rounds each (default 3): round 1
includes building every worker's world (imports, dataset, models), the time per round is the mean
of the rounds after it (the same rounds, and so the same link noise, in both). Peak memory is the
proportional set size (PSS: shared pages split between the processes that share them) summed over
the whole process tree (this process and every descendant: the Ray workers, or the pool's),
sampled every 2 s (:class:`TreeMemory`). Prints a table with the per-device cost and its growth, writes it as CSV and
plots it.

    nice .venv/bin/python scripts/bench_scale.py [--devices 100 1000 10000] [--repeats K] [--set KEY=VALUE] [--out docs/results]
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def pss_bytes(pid: int) -> int:
    """A process's proportional set size (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class TreeMemory:
    """The peak, over the block, of the PSS summed over this process and its descendants.

    Sampled every 2 s: reading ``smaps_rollup`` costs CPU per process, and a Ray process tree has
    about ten to the plain loop's three, so frequent sampling (every 0.25 s before) slowed the
    fleet more than the loop and skewed the ratio it measures."""

    def __init__(self, every_s: float = 2.0):
        self.every_s, self.peak = every_s, 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        from testbed.engine import descendants

        me = os.getpid()
        while not self._stop.is_set():
            total = pss_bytes(me) + sum(pss_bytes(pid) for pid in descendants(me))
            self.peak = max(self.peak, total)
            self._stop.wait(self.every_s)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


def scale_config(devices: int, rounds: int, workers: int, overrides: tuple[str, ...] = ()):
    from testbed.config import load_config

    return load_config(REPO / "configs" / "quickstart.yaml",
                       [f"fleet.devices={devices}", f"rounds={rounds}", f"engine.num_workers={workers}", "name=scale",
                        *overrides])


def measure(devices: int, rounds: int, workers: int, loop_too: bool = True, overrides: tuple[str, ...] = ()) -> dict:
    from bench_fleet import load, prepared, round_times, steady
    from plain_loop import run_pool

    from testbed.engine import cohort_size
    from testbed.runner import run_experiment

    config = scale_config(devices, rounds, workers, overrides)
    loop, loop_memory = [math.nan], TreeMemory()
    if loop_too:
        experiment = prepared(config)
        with loop_memory:
            loop = run_pool(experiment, list(range(1, rounds + 1)), workers, share=True)
        experiment.finish()
    out = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    load_before = load()
    with TreeMemory() as fleet_memory:
        fleet = round_times(run_experiment(config, out, progress=False))
    labels = len(config.strategies)
    return {
        "devices": devices, "strategies": labels, "workers": workers,
        "devices_per_node": cohort_size(devices, config.engine),
        "fleet_round1_s": fleet[0], "fleet_s": steady(fleet), "loop_s": steady(loop), "ratio": steady(fleet) / steady(loop),
        "fleet_ms_per_device": 1e3 * steady(fleet) / devices, "loop_ms_per_device": 1e3 * steady(loop) / devices,
        "fleet_peak_gb": fleet_memory.peak / 1e9, "loop_peak_gb": loop_memory.peak / 1e9 if loop_too else math.nan,
        "rounds": rounds,
        "load": f"{load_before} -> {load()}", "run_folder": str(out),
    }


def summarise(pairs: list[dict]) -> dict:
    """One row from repeated (loop, fleet) pairs of a size: the median of each time and of the
    pairs' ratios (each ratio measured in one pair, minutes apart), their range, the largest peak."""
    import statistics

    median = lambda key: statistics.median(p[key] for p in pairs)  # noqa: E731
    row = dict(pairs[len(pairs) // 2])
    for key in ("fleet_round1_s", "fleet_s", "loop_s", "ratio", "fleet_ms_per_device", "loop_ms_per_device"):
        row[key] = median(key)
    row["ratio_min"], row["ratio_max"] = min(p["ratio"] for p in pairs), max(p["ratio"] for p in pairs)
    row["fleet_peak_gb"] = max(p["fleet_peak_gb"] for p in pairs)
    row["loop_peak_gb"] = max(p["loop_peak_gb"] for p in pairs)
    row["repeats"] = len(pairs)
    row["load"] = f"{pairs[0]['load'].split(' -> ')[0]} -> {pairs[-1]['load'].split(' -> ')[-1]}"
    return row


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    n = [r["devices"] for r in rows]
    left.loglog(n, [r["fleet_s"] for r in rows], "o-", label="Flower on Ray")
    left.loglog(n, [r["loop_s"] for r in rows], "s--", label="plain loop, every core")
    left.set(xlabel="devices (x 5 strategies)", ylabel="s per round", title="time per round")
    left.legend()
    right.semilogx(n, [r["fleet_peak_gb"] for r in rows], "o-", label="Flower on Ray")
    right.semilogx(n, [r["loop_peak_gb"] for r in rows], "s--", label="plain loop, every core")
    right.set(xlabel="devices (x 5 strategies)", ylabel="GB (PSS, whole process tree)", title="peak memory")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    from bench_fleet import load

    from testbed.engine import machine_cpus

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="default: every CPU")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results")
    parser.add_argument("--fleet-only", type=int, nargs="*", default=[], metavar="DEVICES",
                        help="sizes measured without the plain loop (when the machine has no time for both)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="loop-then-fleet pairs per size; the row has the medians and the pairs' ratios' range")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for both the fleet and the loop, e.g. engine.devices_per_node=25")
    parser.add_argument("--append", action="store_true", help="add the rows to OUT/scale.csv instead of replacing it")
    args = parser.parse_args()
    workers = args.workers or machine_cpus()
    print(f"machine: {platform.platform()}, {machine_cpus()} CPUs; {load()}")
    table = args.out / "scale.csv"
    rows = []
    if args.append and table.exists():  # the earlier sizes, for the growth and the plot
        with open(table, newline="") as f:
            rows = [{k: _number(v) for k, v in r.items()} for r in csv.DictReader(f)]
    for devices in args.devices:
        pairs = [measure(devices, args.rounds, workers, loop_too=devices not in args.fleet_only, overrides=tuple(args.set))
                 for _ in range(args.repeats)]
        rows.append(summarise(pairs))
        r = rows[-1]
        growth = r["fleet_ms_per_device"] / rows[0]["fleet_ms_per_device"]
        print(f"{devices:>6} devices x {r['strategies']}: fleet {r['fleet_s']:.1f} s/round (round 1 {r['fleet_round1_s']:.1f} s), "
              f"loop {r['loop_s']:.1f} s, ratio {r['ratio']:.2f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f} over "
              f"{r['repeats']}); {r['fleet_ms_per_device']:.2f} ms per device "
              f"(x{growth:.2f} the first size's), peak {r['fleet_peak_gb']:.2f} GB (loop {r['loop_peak_gb']:.2f} GB); "
              f"{r['load']}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[-1]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, args.out / "scale.png")
    print(f"wrote {args.out / 'scale.csv'} and {args.out / 'scale.png'}")


if __name__ == "__main__":
    main()
