"""Throughput of the link models: megabytes of payload per second through ``Link.transmit``.

    .venv/bin/python scripts/bench_links.py [--mb 4] [--repeats 7]

The payload is an exposed segment of random 8-bit packed values (or float32
values for the analog link) plus a 4 KB protected segment, like a quantised
model. Each line gives the median time of ``--repeats`` transmissions, each
with its own generator, and the mean counts; the machine is printed first.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from testbed.links import LinkParams, make_link
from testbed.payload import FORMAT_F32, Payload, Segment, packed_format
from testbed.rng import derive_rng

# Small packets and many attempts, so that the protected part gets through at
# these error rates and the exposed part is what is timed.
ARQ = dict(packet_bytes=64, max_attempts=64)
CASES = [
    ("ideal", LinkParams("ideal"), "packed"),
    ("bsc ber=1e-3", LinkParams("bsc", ber=1e-3, **ARQ), "packed"),
    ("bsc ber=1e-5", LinkParams("bsc", ber=1e-5, **ARQ), "packed"),
    ("awgn bpsk 7 dB (ber 7.7e-4)", LinkParams("awgn", snr_db=7.0, modulation="bpsk", **ARQ), "packed"),
    ("awgn 16qam 10 dB (ber 1.7e-3)", LinkParams("awgn", snr_db=10.0, modulation="16qam", **ARQ), "packed"),
    ("erasure loss=0.01 (1 KB packets)", LinkParams("erasure", loss=0.01, packet_bytes=1024), "packed"),
    ("fading mean 20 dB bpsk", LinkParams("fading", snr_db=20.0, **ARQ), "packed"),
    ("analog 10 dB (float32)", LinkParams("analog", snr_db=10.0, **ARQ), "float"),
    # the config's default: protected packets repeated as "auto" chooses (9 copies at 0 dB)
    ("awgn bpsk 0 dB, auto repetition", LinkParams("awgn", snr_db=0.0, protected_repetition="auto"), "packed"),
]


def machine() -> str:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{platform.node()} | {platform.platform()} | {platform.machine()} {platform.processor() or ''} | "
        f"{cpus} usable CPUs | Python {platform.python_version()} | numpy {np.__version__}"
    )


def payload(kind: str, nbytes: int) -> Payload:
    rng = np.random.default_rng(0)
    if kind == "float":
        exposed = Segment("w", rng.standard_normal(nbytes // 4, dtype=np.float32).tobytes(), False, FORMAT_F32)
    else:
        exposed = Segment("w", rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes(), False, packed_format(8))
    return Payload([exposed, Segment("w/q", rng.bytes(4096), True)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=4.0, help="payload size in MB")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(machine())
    size = int(args.mb * 1e6)
    print(f"payload {size / 1e6:.1f} MB exposed + 4 KB protected, median of {args.repeats}")
    print(f"{'link':32s} {'MB/s':>10s} {'ms':>9s} {'bit errors':>11s} {'resent':>7s} {'lost':>6s} {'delivered':>9s} {'copies':>6s}")
    payloads = {kind: payload(kind, size) for kind in ("packed", "float")}
    for label, params, kind in CASES:
        link, data = make_link(params), payloads[kind]
        times, stats = [], []
        for repeat in range(args.repeats):
            rng = derive_rng(0, "bench", label, repeat)
            start = time.perf_counter()
            result = link.transmit(data, rng)
            times.append(time.perf_counter() - start)
            stats.append(result.stats)
        median = float(np.median(times))
        mean = {k: np.mean([getattr(s, k) for s in stats]) for k in ("bit_errors", "retransmissions", "packets_lost", "protected_repetition")}
        delivered = sum(s.delivered for s in stats)
        print(
            f"{label:32s} {data.nbytes / 1e6 / median:10.0f} {median * 1e3:9.3f} {mean['bit_errors']:11.0f} "
            f"{mean['retransmissions']:7.1f} {mean['packets_lost']:6.1f} {delivered:>5d}/{args.repeats} "
            f"{mean['protected_repetition']:6.1f}"
        )


if __name__ == "__main__":
    main()
