"""Make an example report: run a small config (default configs/tiny.yaml) and write its report,
or report existing run folders; prints how long the report took, and on what machine.

    .venv/bin/python scripts/make_example_report.py [--config CONFIG] [--out DIR] [--runs DIR ...]

The report is written at the end of every run, so its time matters: it should stay
within a few seconds for a fleet of thousands of devices.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"))
    parser.add_argument("--out", default="runs/example-report", help="run folder of the example run")
    parser.add_argument("--runs", nargs="+", default=None, help="report these run folders instead of running")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    from testbed.report import load_runs, report_files, write_report

    if args.runs:
        dirs = [Path(d) for d in args.runs]
        out_html = dirs[0] / "report.html" if len(dirs) == 1 else Path(args.out) / "report.html"
    else:
        from testbed.config import load_config
        from testbed.runner import run_experiment

        config = load_config(args.config, args.set)
        dirs = [run_experiment(config, args.out, progress=True, config_path=args.config)]
        out_html = dirs[0] / "report.html"
    start = time.perf_counter()
    page = write_report(dirs, out_html)
    seconds = time.perf_counter() - start
    runs = load_runs(dirs)
    measured = sum(len(run.measurements) for run in runs)
    sent = sum(len(run.transfers) for run in runs)
    print(f"report of {len(dirs)} run(s), {measured} measurement rows, {sent} transfer rows: {seconds:.2f} s "
          f"({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()})")
    for role, path in report_files(page).items():
        print(f"  {role:15s} {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
