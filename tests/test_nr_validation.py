"""The nr link's PHY abstraction against bit-true 5G LDPC (Sionna's encoder, mapper, AWGN, demapper, decoder).

At three SNRs around the waterfall of MCS 5 (QPSK, rate 0.37) with 24-bit code blocks, 400
bit-true blocks each: the number of block errors lies in the 99.9% binomial interval of the BLER
the link uses. scripts/validate_nr_abstraction.py holds the chain and more cases (docs/LINKS.md).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "validate_nr_abstraction.py"


def _script():
    spec = importlib.util.spec_from_file_location("validate_nr_abstraction", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # about 5 s alone on a quiet core, a minute on a loaded machine
def test_bit_true_ldpc_agrees_with_the_abstraction():
    script = _script()
    mcs, k, snrs, n = script.CASES[0]
    rows = script.compare(mcs, k, snrs, n)
    blers = [r["bler"] for r in rows]
    assert 0.05 < min(blers) and max(blers) < 0.95  # the three SNRs are on the waterfall, not beside it
    for r in rows:
        assert r["inside"], r
