"""Bit error rates of Gray-coded modulations over AWGN, and the SNR parameters of the models that use them."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import Field

from testbed.attributes import MEASURED, number, one_of
from testbed.links.base import LinkParams

MODULATIONS = ("bpsk", "qpsk", "16qam")


def q_function(x: float) -> float:
    """Gaussian tail probability Q(x) = P(N(0,1) > x)."""
    return 0.5 * math.erfc(x / math.sqrt(2.0))


def ber_from_snr(snr_db: float, modulation: str) -> float:
    """Bit error rate over AWGN at Eb/N0 = ``snr_db`` with Gray-coded ``modulation``."""
    return ber_from_ebn0(10.0 ** (snr_db / 10.0), modulation)


def ber_from_ebn0(ebn0: float, modulation: str) -> float:
    """Bit error rate over AWGN at a linear Eb/N0 of ``ebn0`` with Gray-coded ``modulation``."""
    if modulation in ("bpsk", "qpsk"):
        # Gray QPSK is two independent BPSK streams: the same BER per bit.
        return q_function(math.sqrt(2.0 * ebn0))
    if modulation == "16qam":
        # Exact BER of Gray-coded square 16-QAM: K. Cho and D. Yoon, "On the general
        # BER expression of one- and two-dimensional amplitude modulations", IEEE
        # Trans. Commun. 50(7), 2002, eq. (14) with M = 16:
        # Pb = 3/4 Q(a) + 1/2 Q(3a) - 1/4 Q(5a),  a = sqrt(4/5 Eb/N0).
        a = math.sqrt(0.8 * ebn0)
        return 0.75 * q_function(a) + 0.5 * q_function(3 * a) - 0.25 * q_function(5 * a)
    raise ValueError(f"unknown modulation {modulation!r}: expected one of {', '.join(MODULATIONS)}")


def ber_square_qam(esn0: float, bits_per_symbol: int) -> float:
    """Bit error rate of Gray-coded square QAM with ``bits_per_symbol`` bits (2: QPSK, 4, 6, 8, 10)
    over AWGN at a linear Es/N0 of ``esn0``: the general expression of Cho and Yoon (as for 16-QAM
    above), Pb = 1/log2(L) sum_k Pb(k), L = sqrt(M), with Pb(k) = 1/L sum_i (-1)^floor(i 2^(k-1) / L)
    (2^(k-1) - floor(i 2^(k-1) / L + 1/2)) 2 Q((2i + 1) sqrt(3 Es/N0 / (M - 1))), i < (1 - 2^-k) L."""
    if bits_per_symbol < 2 or bits_per_symbol % 2:
        raise ValueError(f"square QAM needs an even number of bits per symbol >= 2, got {bits_per_symbol}")
    m = 1 << bits_per_symbol
    side = 1 << (bits_per_symbol // 2)
    arg = math.sqrt(3.0 * max(esn0, 0.0) / (m - 1))
    total = 0.0
    for k in range(1, bits_per_symbol // 2 + 1):
        weight = 1 << (k - 1)
        terms = (
            (-1) ** (i * weight // side) * (weight - math.floor(i * weight / side + 0.5)) * 2 * q_function((2 * i + 1) * arg)
            for i in range(int((1 - 2.0**-k) * side))
        )
        total += math.fsum(terms) / side
    return min(max(total / (bits_per_symbol // 2), 0.0), 0.5)


SnrDb = Annotated[float, number(), MEASURED]


class SnrParams(LinkParams):
    """Parameters of a link whose bits cross at a signal-to-noise ratio."""

    snr_db: SnrDb = Field(10.0, description="Eb/N0 in dB")


class ModulatedParams(SnrParams):
    """Parameters of a digitally modulated link."""

    modulation: Annotated[str, one_of(*MODULATIONS)] = Field("bpsk", description="Gray-coded bpsk, qpsk or 16qam")
