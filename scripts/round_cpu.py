"""Where a fleet round's CPU goes: per round, the wall time and the CPU seconds of every process.

Runs the scale benchmark's config (the quickstart: broadcast, five strategies, links over 0-20 dB)
through Flower on Ray and, as each round is committed, reads the CPU time (user + system, from
/proc) of this process (the driver: the ServerApp and Flower's simulation engine) and of every
descendant, summed by process name (the Ray workers running the devices, the raylet, the GCS,
Ray's other helpers). Prints one line per round: the wall time, the CPU seconds per name, and the
idle share of the machine's CPUs. Linux only. Not a test.

    .venv/bin/python scripts/round_cpu.py [--devices 100] [--rounds 6]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))


def cpu_by_name() -> dict[str, float]:
    """CPU seconds so far of this process ("driver") and each descendant, summed by name."""
    from testbed.engine import descendants

    me, tick = os.getpid(), os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = collections.defaultdict(float)
    for pid in [me, *descendants(me)]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            name = "driver" if pid == me else Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:  # gone
            continue
        totals[name] += (int(fields[11]) + int(fields[12])) / tick
    return totals


def main() -> None:
    from bench_scale import scale_config

    from testbed.engine import machine_cpus
    from testbed.orchestrator import Experiment
    from testbed.runner import run_experiment

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    cpus = machine_cpus()
    last = [cpu_by_name(), time.perf_counter()]
    finish_round = Experiment._finish_round

    def measured(experiment, flight):  # the commit, then the CPU every process used since the last one
        finish_round(experiment, flight)
        now, at = cpu_by_name(), time.perf_counter()
        used = {name: now[name] - last[0].get(name, 0.0) for name in now}
        wall = at - last[1]
        last[:] = [now, at]
        shown = ", ".join(f"{name} {s:.2f}" for name, s in sorted(used.items(), key=lambda kv: -kv[1]) if s >= 0.01)
        idle = 1 - sum(used.values()) / (wall * cpus)
        print(f"round {flight.round}: wall {wall:.2f} s; CPU s: {shown}; idle {100 * idle:.0f} % of {cpus} CPUs", flush=True)

    Experiment._finish_round = measured
    run_experiment(scale_config(args.devices, args.rounds, cpus), Path(tempfile.mkdtemp(prefix="round-cpu-")), progress=False)


if __name__ == "__main__":
    main()
