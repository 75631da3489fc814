"""Time the README's main command as a new user meets it: the quickstart with an empty model cache.

    python scripts/time_quickstart.py [--repeats 1]

Runs `testbed run` (configs/quickstart.yaml) in a fresh temporary cache and run folder, and prints
the wall time of the whole command (start-up, training, Ray, rounds, report) and the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    testbed = Path(sys.executable).with_name("testbed")
    times = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "TESTBED_CACHE_DIR": str(Path(tmp) / "cache")}
            start = time.perf_counter()
            subprocess.run([str(testbed), "run", "--out", str(Path(tmp) / "run"), "--quiet"], cwd=ROOT, env=env,
                           check=True)
            times.append(time.perf_counter() - start)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"quickstart wall time, empty model cache: {', '.join(f'{t:.1f} s' for t in times)}")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"1-minute load average after the runs {load:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
