"""The link models deliver exactly what they delivered before they became a registry of models.

tests/data/links_golden.json holds, for 372 cases (every model; several SNRs, BERs and
losses; repetition auto, 1 and 3; two payloads of protected, exposed and float segments;
two generator keys), the statistics, a digest of the received segments and the erased
ranges that the earlier single-module link code gave (see tests/golden_links.py).
"""

from __future__ import annotations

import json

import pytest

from golden_links import GOLDEN, PAYLOADS, STATS, cases, payload, run

RECORDED = json.loads(GOLDEN.read_text())
PAYLOAD = {kind: payload(kind) for kind in PAYLOADS}


def test_the_grid_and_the_payloads_are_the_recorded_ones():
    assert [c["name"] for c in cases()] == list(RECORDED["cases"])
    assert RECORDED["stats"] == list(STATS)
    # The byte counts follow the payload's framing: a new wire format means rewriting the file on purpose.
    assert {kind: p.framing_nbytes for kind, p in PAYLOAD.items()} == RECORDED["framing_nbytes"]


@pytest.mark.parametrize("case", cases(), ids=lambda c: c["name"])
def test_same_statistics_bytes_and_erasures(case):
    assert run(case, PAYLOAD) == RECORDED["cases"][case["name"]]
