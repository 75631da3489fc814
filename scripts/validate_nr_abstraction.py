"""Bit-true 5G LDPC against the nr link's PHY abstraction: BLER of small code blocks at a few SNRs.

    PYTHONPATH=. .venv/bin/python scripts/validate_nr_abstraction.py            # the table in docs/LINKS.md

The bit-true chain is Sionna's own link level: random bits, the 5G LDPC encoder (38.212 rate
matching to ceil(k / rate / Qm) Qm coded bits, as Sionna's tables were made), Gray QAM mapper,
complex AWGN of variance 1/SNR (SNR per symbol, Es = 1), the APP demapper and the 5G LDPC decoder
(20 iterations, boxplus-phi: Sionna's defaults). A block is an error when any information bit
differs. The abstraction is ``testbed.links.nr.bler`` (Sionna's ``PHYAbstraction.get_bler``), and
the raw table point, where the SNR is one of the table's, is read from Sionna's JSON file.
``tests/test_nr_validation.py`` runs the first case.
"""

from __future__ import annotations

import argparse
import json
import math
import os

from scipy.stats import binom

CASES = [  # (MCS of PDSCH table 1, information bits per block, SNRs in dB, blocks per SNR)
    (5, 24, (-1.4, -0.5, 0.4), 400),  # QPSK, rate 0.37: the test's case (two table points, one between)
    (5, 100, (-1.4, -1.0, 0.0, 0.4), 300),  # a steeper waterfall: the table's 1.8 dB spacing shows
    (11, 24, (2.1, 3.9, 5.7), 300),  # 16-QAM, rate 0.37
]


def bit_true_errors(mcs: int, k: int, snrs_db, n: int, seed: int = 0) -> list[int]:
    """Block errors among ``n`` blocks of ``k`` information bits at each SNR (Es/N0, dB), PDSCH table 1."""
    import torch
    from sionna.phy.fec.ldpc import LDPC5GDecoder, LDPC5GEncoder
    from sionna.phy.mapping import Constellation, Demapper, Mapper
    from sionna.phy.nr.utils import decode_mcs_index

    torch.set_num_threads(1)
    qm, rate = decode_mcs_index(mcs, 1, is_pusch=False, device="cpu")
    qm, rate = int(qm), float(rate)
    encoder = LDPC5GEncoder(k, int(math.ceil(k / rate / qm) * qm), num_bits_per_symbol=qm, device="cpu")
    decoder = LDPC5GDecoder(encoder, hard_out=True, num_iter=20, device="cpu")
    constellation = Constellation("qam", qm, device="cpu")
    mapper, demapper = Mapper(constellation=constellation, device="cpu"), Demapper("app", constellation=constellation, device="cpu")
    generator = torch.Generator().manual_seed(seed)
    errors = []
    with torch.no_grad():
        for snr_db in snrs_db:
            no = 10.0 ** (-snr_db / 10.0)
            bits = torch.randint(0, 2, (n, k), generator=generator).float()
            x = mapper(encoder(bits))
            noise = torch.complex(torch.randn(x.shape, generator=generator), torch.randn(x.shape, generator=generator))
            y = x + (noise * math.sqrt(no / 2)).to(x.dtype)
            decided = decoder(demapper(y, torch.tensor(no)))
            errors.append(int((decided != bits).any(dim=1).sum()))
    return errors


def table_point(mcs: int, k: int, snr_db: float) -> float | None:
    """The BLER Sionna's PDSCH table 1 file holds at ``snr_db`` (None when it is not one of its SNRs)."""
    import sionna.sys

    path = os.path.join(os.path.dirname(sionna.sys.__file__), "bler_tables", "PDSCH_table1.json")
    with open(path, encoding="utf-8") as f:
        entry = json.load(f)["category"]["1"]["index"]["1"]["MCS"][str(mcs)]
    for s, b in zip(entry["SNR_db"], entry["CBS"][str(k)]["BLER"]):
        if abs(s - snr_db) < 0.05:
            return float(b)
    return None


def compare(mcs: int, k: int, snrs_db, n: int, seed: int = 0) -> list[dict]:
    """One row per SNR: the bit-true count, the abstraction's BLER and the 99.9% binomial interval of it."""
    from testbed.links.nr import bler

    errors = bit_true_errors(mcs, k, snrs_db, n, seed)
    abstraction = bler("pdsch1", (mcs,) * len(snrs_db), (k,) * len(snrs_db), tuple(float(s) for s in snrs_db))
    rows = []
    for snr_db, e, p in zip(snrs_db, errors, abstraction):
        lo, hi = binom.interval(0.999, n, float(p))
        rows.append(dict(mcs=mcs, k=k, snr_db=snr_db, n=n, errors=e, bler=e / n, abstraction=float(p),
                         low=int(lo), high=int(hi), inside=bool(lo <= e <= hi), table=table_point(mcs, k, snr_db)))
    return rows


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print("| MCS (PDSCH table 1) | info bits | SNR (dB) | blocks | bit-true BLER | abstraction BLER | 99.9% interval of errors | inside | table point |")
    print("|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for mcs, k, snrs, n in CASES:
        for r in compare(mcs, k, snrs, n):
            table = "" if r["table"] is None else f"{r['table']:.3f}"
            print(f"| {mcs} | {k} | {r['snr_db']:g} | {n} | {r['bler']:.3f} | {r['abstraction']:.3f} | "
                  f"[{r['low']}, {r['high']}] ({r['errors']} seen) | {'yes' if r['inside'] else '**no**'} | {table} |")


if __name__ == "__main__":
    main()
