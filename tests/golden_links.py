"""Golden outputs of the link models: what each model delivers for a grid of cases.

    PYTHONPATH=. .venv/bin/python tests/golden_links.py    # rewrites tests/data/links_golden.json

The JSON was first written by the link code before it became a registry of
models with separate protection and packet modules (commit 71c5871), and
``tests/test_links_golden.py`` checks that the code of today gives the same
statistics, the same received bytes and the same erased ranges, case by case.
Rewrite it only when a change of behaviour is meant (a new payload framing
changes every byte count), and say so in the commit.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from pathlib import Path

import numpy as np

from testbed.links import link_params, make_link
from testbed.payload import FORMAT_BYTES, FORMAT_F16, FORMAT_F32, Payload, Segment, packed_format
from testbed.rng import derive_rng

GOLDEN = Path(__file__).resolve().parent / "data" / "links_golden.json"

# model -> parameter sets (each also crossed with the repetitions, payloads and keys below)
GRID = {
    "ideal": [dict(packet_bytes=64), dict(packet_bytes=1000, latency_ms=3.0)],
    "bsc": [dict(ber=b, packet_bytes=pb, max_attempts=m) for b, pb, m in [(1e-4, 256, 4), (2e-3, 64, 8), (0.02, 64, 30), (0.1, 16, 8)]],
    "awgn": [
        dict(snr_db=s, modulation=mod, packet_bytes=pb, max_attempts=8)
        for (s, pb), mod in itertools.product([(0.0, 64), (4.0, 128), (8.0, 256), (12.0, 1024)], ["bpsk", "qpsk", "16qam"])
    ],
    "analog": [dict(snr_db=s, packet_bytes=pb, max_attempts=10) for s, pb in [(0.0, 16), (6.0, 100), (15.0, 512), (40.0, 1024)]],
    "erasure": [dict(loss=x, packet_bytes=pb, max_attempts=m) for x, pb, m in [(0.05, 100, 5), (0.2, 256, 8), (0.5, 64, 12)]],
    "fading": [
        dict(snr_db=s, modulation=mod, packet_bytes=200, max_attempts=6, bandwidth_mbps=2.5)
        for s, mod in itertools.product([5.0, 12.0, 25.0], ["bpsk", "16qam"])
    ],
}
REPETITIONS = ["auto", 1, 3]
PAYLOADS = ("mixed", "side")
KEYS = (0, 1)
STATS = (
    "payload_bytes", "overhead_bytes", "coding_bytes", "resent_bytes", "bytes_sent", "bits_sent", "bit_errors",
    "packets", "packets_lost", "retransmissions", "airtime_s", "delivered", "failure", "snr_db", "ber",
    "protected_repetition",
)


def payload(kind: str) -> Payload:
    """Protected, exposed packed/bytes and exposed float segments (an empty one too)."""
    rng = np.random.default_rng(11)
    if kind == "mixed":
        segments = [
            Segment("w", rng.integers(0, 256, 6000, dtype=np.uint8).tobytes(), False, packed_format(8)),
            Segment("f32", rng.standard_normal(500).astype("<f4").tobytes(), False, FORMAT_F32),
            Segment("w/q", rng.bytes(700), True),
            Segment("empty", b"", False),
            Segment("f16", rng.standard_normal(300).astype("<f2").tobytes(), False, FORMAT_F16),
            Segment("raw", rng.bytes(1500), False, FORMAT_BYTES),
        ]
    else:
        segments = [
            Segment("side", rng.bytes(5000), True),
            Segment("p", rng.integers(0, 16, 3000, dtype=np.uint8).tobytes(), False, packed_format(4)),
            Segment("f", rng.standard_normal(250).astype("<f4").tobytes(), False, FORMAT_F32),
        ]
    return Payload(segments)


def cases() -> list[dict]:
    out = []
    for model, sets in GRID.items():
        for index, params in enumerate(sets):
            for repetition, kind, key in itertools.product(REPETITIONS, PAYLOADS, KEYS):
                out.append(dict(model=model, params=params, repetition=repetition, payload=kind, key=key,
                                name=f"{model}/{index}/r={repetition}/{kind}/{key}"))
    return out


def _number(x):
    return x if math.isfinite(x) else repr(x)  # JSON has no NaN or infinities


def run(case: dict, payloads: dict[str, Payload]) -> dict:
    """What the link delivers in ``case``: statistics, a digest of the received segments, erased ranges."""
    params = link_params(case["model"], **case["params"], protected_repetition=case["repetition"])
    sent = payloads[case["payload"]]
    t = make_link(params).transmit(sent, derive_rng(case["key"], "golden", case["name"]))
    stats = t.stats.as_dict()
    digest = None
    if t.received is not None:
        h = hashlib.sha256()
        for seg in t.received.segments:
            h.update(f"{seg.name}:{seg.fmt}:{int(seg.protected)}:{seg.nbytes}:".encode())
            h.update(seg.data)
        digest = h.hexdigest()[:20]
    return {
        "stats": [_number(stats[k]) if isinstance(stats[k], float) else stats[k] for k in STATS],
        "received": digest,
        "erased": {name: [list(r) for r in ranges] for name, ranges in sorted(t.erased.items())},
    }


def main() -> None:
    payloads = {kind: payload(kind) for kind in PAYLOADS}
    golden = {
        "stats": list(STATS),
        "framing_nbytes": {kind: p.framing_nbytes for kind, p in payloads.items()},
        "cases": {case["name"]: run(case, payloads) for case in cases()},
    }
    GOLDEN.parent.mkdir(exist_ok=True)
    lines = [json.dumps({k: v for k, v in golden.items() if k != "cases"})[:-1] + ', "cases": {']
    lines += [f"{json.dumps(name)}: {json.dumps(result)}," for name, result in golden["cases"].items()]
    lines[-1] = lines[-1][:-1]
    GOLDEN.write_text("\n".join(lines) + "\n}}\n")  # one case a line: diffs name the cases that changed
    print(f"{len(golden['cases'])} cases -> {GOLDEN} ({GOLDEN.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
