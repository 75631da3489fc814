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

from testbed.links import link_params, make_link
from testbed.payload import FORMAT_F32, Payload, Segment, packed_format
from testbed.rng import derive_rng

# Small packets and many attempts, so that the protected part gets through at
# these error rates and the exposed part is what is timed; one copy per send (no coding).
ARQ = dict(packet_bytes=64, max_attempts=64, protected_repetition=1)
CASES = [
    ("ideal", link_params("ideal", protected_repetition=1), "packed"),
    ("bsc ber=1e-3", link_params("bsc", ber=1e-3, **ARQ), "packed"),
    ("bsc ber=1e-5", link_params("bsc", ber=1e-5, **ARQ), "packed"),
    ("awgn bpsk 7 dB (ber 7.7e-4)", link_params("awgn", snr_db=7.0, modulation="bpsk", **ARQ), "packed"),
    ("awgn 16qam 10 dB (ber 1.7e-3)", link_params("awgn", snr_db=10.0, modulation="16qam", **ARQ), "packed"),
    ("erasure loss=0.01 (1 KB packets)", link_params("erasure", loss=0.01, packet_bytes=1024, protected_repetition=1), "packed"),
    ("fading mean 20 dB bpsk", link_params("fading", snr_db=20.0, **ARQ), "packed"),
    ("analog 10 dB (float32)", link_params("analog", snr_db=10.0, **ARQ), "float"),
    # bursts: mean BER 1e-3 (pi_bad 1/101, ber_bad 0.1), bursts of 100 bits on average
    ("gilbert-elliott mean ber 1e-3", link_params("gilbert_elliott", ber_good=0.0, ber_bad=0.1, p_good_to_bad=1e-4,
                                                   p_bad_to_good=0.01, **ARQ), "packed"),
    # the config's defaults: 1 KB packets, 8 sends, protected packets repeated as "auto" chooses (9 copies at 0 dB)
    ("awgn bpsk 0 dB, auto repetition", link_params("awgn", snr_db=0.0), "packed"),
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
