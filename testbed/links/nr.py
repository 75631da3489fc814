"""A 5G NR link: LDPC code blocks at an MCS, HARQ with chase combining, BLER from Sionna's tables.

The payload's two parts (protected: framing and protected segments; exposed: the exposed
segments, concatenated) are each sent as transport blocks (TBs) of the size TS 38.214 gives
one slot at the MCS, the last one padded. Each TB carries a TB CRC (24 bits, 16 for small
TBs) and is segmented into code blocks (CBs) as in TS 38.212 5.2.2 (CRC-24 per CB when there
are several); Sionna computes both (``sionna.phy.nr.utils.calculate_tb_size``).

Every CB is decoded, or not, with the probability Sionna's PHY abstraction gives
(``sionna.sys.PHYAbstraction.get_bler``: 5G NR BLER tables of LDPC over AWGN, by MCS, CB
size and SNR). HARQ resends a failed CB (CB-group retransmission with one CB per group,
**our choice**); the receiver chase-combines the copies, so the k-th decoding sees the sum of
the k per-transmission SNRs (linear), here ``k * SNR`` since every transmission of a
transfer sees the same channel (one block of fading per transfer, like the ``fading`` link).
The k-th attempt fails, given that the earlier ones did, with BLER(k * SNR): the usual
system-level abstraction, which treats the decoding failures of the attempts as independent.

A protected CB still failed after ``max_attempts`` transmissions fails the delivery. An exposed
CB that failed every attempt (``exposed_harq: once``: its one transmission) is delivered
anyway (**our choice**): with bit errors at the raw BER of the MCS's modulation at the
combined SNR (the systematic bits decided from the combined soft values, as if uncoded), or,
with ``failed_exposed: erased``, zeroed and its bytes listed in ``erased``.

Airtime: the coded bits sent (first transmissions and HARQ retransmissions), in slots of
``prbs`` PRBs x 12 subcarriers x 13 data symbols (one of the 14 carries DMRS), each slot
``1 ms / 2^numerology``, plus ``latency_ms`` per HARQ round as for the other links.
Sionna is imported when the first nr link transmits, not with ``testbed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from testbed.attributes import AUTO, auto_or_whole, number, one_of, whole
from testbed.links import packets
from testbed.links.base import Link
from testbed.links.channel import Channel
from testbed.links.modulation import SnrDb, SnrParams, ber_square_qam
from testbed.links.stats import LinkStats, Transmission
from testbed.payload import Payload

# Sionna's BLER tables by name: (category: 0 PUSCH, 1 PDSCH; MCS table index; MCS indices with a table)
TABLES = {
    "pdsch1": (1, 1, range(3, 29)),
    "pdsch2": (1, 2, range(2, 28)),
    "pdsch3": (1, 3, range(9, 29)),
    "pdsch4": (1, 4, range(2, 27)),
    "pusch1": (0, 1, range(3, 28)),
    "pusch2": (0, 2, range(9, 28)),
}
SUBCARRIERS_PER_PRB = 12
DATA_SYMBOLS = 13  # of the 14 OFDM symbols of a slot, one carries DMRS


@dataclass(frozen=True)
class Plan:
    """One MCS's transport block for a slot: sizes in bits."""

    mcs: int
    bits_per_symbol: int
    tb_bits: int  # information bits of a TB (TBS)
    tb_crc: int
    cb_bits: int  # bits of a CB, its CRC included (what the BLER tables are indexed by)
    cb_crc: int
    cbs: int  # code blocks per TB
    coded: tuple[int, ...]  # coded bits sent for each CB of a TB (rate matching); their sum fills the slot

    @property
    def slot_bits(self) -> int:
        return sum(self.coded)

    @property
    def cb_data(self) -> int:
        """TB bits (data, then the TB CRC) each CB carries."""
        return self.cb_bits - self.cb_crc


@lru_cache(maxsize=1)
def _phy():
    import torch
    from sionna.sys import PHYAbstraction

    torch.set_num_threads(1)
    return PHYAbstraction(device="cpu")


@lru_cache(maxsize=4096)
def plan(table: str, mcs: int, prbs: int) -> Plan:
    """The TB and CBs of one slot of ``prbs`` PRBs at ``mcs`` (TS 38.214 5.1.3.2, TS 38.212 5.2.2, 5.4.2.1)."""
    from sionna.phy.nr.utils import calculate_tb_size, decode_mcs_index

    category, index, _ = TABLES[table]
    qm, rate = decode_mcs_index(mcs, index, is_pusch=category == 0, device="cpu")
    tbs, cb_bits, cbs, tb_crc, cb_crc, coded = calculate_tb_size(
        int(qm), float(rate), num_prbs=prbs, num_ofdm_symbols=DATA_SYMBOLS, num_dmrs_per_prb=0, device="cpu"
    )
    coded = tuple(int(e) for e in np.asarray(coded).reshape(-1))
    return Plan(mcs, int(qm), int(tbs), int(tb_crc), int(cb_bits), int(cb_crc), int(cbs), coded)


@lru_cache(maxsize=65536)
def bler(table: str, mcs: tuple[int, ...], cb_bits: tuple[int, ...], snr_db: tuple[float, ...]) -> np.ndarray:
    """Sionna's BLER for each (MCS, CB size, SNR in dB) of the table: one vectorised look-up, cached."""
    import torch

    category, index, _ = TABLES[table]
    snr = torch.tensor([10.0 ** (s / 10.0) for s in snr_db], dtype=torch.float32)
    out = _phy().get_bler(torch.tensor(mcs, dtype=torch.int32), index, category, torch.tensor(cb_bits, dtype=torch.int32), snr)
    return np.minimum(out.numpy().astype(np.float64), 1.0)  # inf (no table) is a certain failure


def choose_mcs(table: str, prbs: int, snr_db: float, target: float) -> int:
    """Link adaptation: the highest MCS whose first transmission's BLER at ``snr_db`` is <= ``target``
    (the lowest of the table if none)."""
    candidates = tuple(TABLES[table][2])
    sizes = tuple(plan(table, m, prbs).cb_bits for m in candidates)
    ok = np.flatnonzero(bler(table, candidates, sizes, (snr_db,) * len(candidates)) <= target)
    return candidates[int(ok[-1])] if ok.size else candidates[0]


def survival(table: str, p: Plan, snr_db: float, attempts: int) -> np.ndarray:
    """P(a CB is not through after k transmissions), k = 1..attempts: prod_j BLER(j * SNR) (chase combining)."""
    combined = tuple(snr_db + 10.0 * math.log10(k) for k in range(1, attempts + 1))
    return np.cumprod(bler(table, (p.mcs,) * attempts, (p.cb_bits,) * attempts, combined))


@dataclass(frozen=True)
class _Residual(Channel):
    """The exposed part's errors: only inside the CBs that failed (their stream bit ranges)."""

    ranges: tuple[tuple[int, int], ...] = ()

    @property
    def error_free(self) -> bool:
        return self.ber <= 0 or not self.ranges

    def error_positions(self, nbits, rng):
        lengths = np.array([hi - lo for lo, hi in self.ranges], dtype=np.int64)
        inside = packets.error_positions(int(lengths.sum()), self.ber, rng)
        ends = np.cumsum(lengths)
        which = np.searchsorted(ends, inside, side="right")
        starts = np.array([lo for lo, _ in self.ranges], dtype=np.int64)
        return starts[which] + inside - (ends[which] - lengths[which])


class NRLink(Link):
    class Params(SnrParams):
        model: Literal["nr"] = "nr"
        snr_db: SnrDb = Field(
            10.0, description="SNR per resource element (Es/N0, the SINR of Sionna's BLER tables) in dB; the mean with rayleigh fading"
        )
        fading: Annotated[str, one_of("none", "rayleigh")] = Field(
            "none", description="none: snr_db every transfer; rayleigh: block fading, |h|^2 ~ Exp(1) per transfer as the fading link"
        )
        mcs_table: Annotated[str, one_of(*TABLES)] = Field(
            "pdsch1", description="the 38.214 MCS table (and channel) of Sionna's BLER tables"
        )
        mcs_index: Annotated[int | str, auto_or_whole(ge=0, le=28)] = Field(
            AUTO, description="the MCS; auto: link adaptation per transfer, the highest MCS with BLER <= target_bler at its SNR"
        )
        target_bler: Annotated[float, number(gt=0, lt=1)] = Field(0.1, description="link adaptation's BLER target for a first transmission")
        prbs: Annotated[int, whole(ge=1, le=275)] = Field(51, description="physical resource blocks per slot (12 subcarriers each)")
        numerology: Annotated[int, whole(ge=0, le=4)] = Field(
            1, description="subcarrier spacing 15 kHz x 2^numerology; a slot lasts 1 ms / 2^numerology"
        )
        exposed_harq: Annotated[str, one_of("harq", "once")] = Field(
            "harq", description="harq: exposed CBs are resent like protected ones (up to max_attempts); once: sent once"
        )
        failed_exposed: Annotated[str, one_of("bit_errors", "erased")] = Field(
            "bit_errors", description="an exposed CB that failed: raw bit errors of its modulation at the combined SNR, or erased"
        )

    def __init__(self, params):
        super().__init__(params)
        calibrated = TABLES[params.mcs_table][2]
        if params.mcs_index != AUTO and params.mcs_index not in calibrated:
            raise ValueError(
                f"nr link: mcs_index {params.mcs_index} has no BLER table in {params.mcs_table} "
                f"(Sionna's tables cover MCS {calibrated[0]}..{calibrated[-1]})"
            )

    def snr(self, rng: np.random.Generator) -> float:
        """This transfer's SNR in dB (drawn first, like the fading link's gain)."""
        p = self.params
        if p.fading == "none":
            return p.snr_db
        gain = float(rng.exponential(1.0))
        return p.snr_db + 10.0 * math.log10(gain) if gain > 0 else -math.inf

    def transmit(self, payload: Payload, rng: np.random.Generator) -> Transmission:
        p = self.params
        snr_db = self.snr(rng)
        look_db = max(snr_db, -100.0)  # a fade to zero gain: below every table, a certain failure
        mcs = choose_mcs(p.mcs_table, p.prbs, look_db, p.target_bler) if p.mcs_index == AUTO else p.mcs_index
        tb = plan(p.mcs_table, mcs, p.prbs)
        protected_nbytes = payload.protected_nbytes
        exposed_nbytes = payload.nbytes - protected_nbytes
        parts = [(protected_nbytes, p.max_attempts), (exposed_nbytes, p.max_attempts if p.exposed_harq == "harq" else 1)]
        tbs = [-(-8 * nbytes // tb.tb_bits) for nbytes, _ in parts]
        carried = (tb.tb_bits + tb.tb_crc + tb.cbs * tb.cb_crc) * sum(tbs)  # TB bits, padding and CRCs
        first = tb.slot_bits * sum(tbs)
        coded = np.array(tb.coded, dtype=np.int64)
        stats = LinkStats(
            payload_bytes=payload.nbytes,
            overhead_bytes=carried // 8 - payload.nbytes,
            coding_bytes=(first - carried) // 8,
            packets=tb.cbs * sum(tbs),
            snr_db=snr_db,
            protected_repetition=1,
        )
        resent_bits, worst, failed_ranges, residual_ber = 0, 1, [], 0.0
        for part, ((nbytes, attempts), count) in enumerate(zip(parts, tbs)):
            n = tb.cbs * count
            if n == 0:
                continue
            left = survival(p.mcs_table, tb, look_db, attempts)  # P(not through after k sends)
            u = rng.random(n)
            sends = 1 + (u[:, None] < left[None, :-1]).sum(axis=1)
            failed = np.flatnonzero(u < left[-1])
            resent_bits += int(((sends - 1) * np.tile(coded, count)).sum())
            stats.retransmissions += int((sends - 1).sum())
            worst = max(worst, int(sends.max()))
            if part == 0 and failed.size:
                stats.delivered = False
                stats.failure = f"protected code block {int(failed[0])} not delivered after {attempts} transmissions at MCS {mcs}"
            elif part == 1:
                esn0 = attempts * 10.0 ** (look_db / 10.0)
                residual_ber = ber_square_qam(esn0, tb.bits_per_symbol)
                if p.failed_exposed == "bit_errors":  # erased CBs carry no bit errors
                    stats.ber = float(left[-1]) * residual_ber
                failed_ranges = self._stream_ranges(failed, tb, 8 * nbytes)
        stats.resent_bytes = -(-resent_bits // 8)
        stats.bytes_sent = stats.payload_bytes + stats.overhead_bytes + stats.coding_bytes + stats.resent_bytes
        stats.bits_sent = 8 * stats.bytes_sent
        slots = -(-(first + resent_bits) // tb.slot_bits) if first else 0
        stats.airtime_s = slots * 1e-3 / 2**p.numerology + p.latency_ms * 1e-3 * worst
        stats.mcs = mcs
        if not stats.delivered:
            return Transmission(None, stats)
        exposed = [s for s in payload.segments if not s.protected]
        if not failed_ranges:
            return Transmission(payload, stats)
        if p.failed_exposed == "erased":
            changed, erased = self._erase(exposed, failed_ranges, stats)
        else:
            ch = _Residual(ber=residual_ber, snr_db=snr_db, ranges=tuple(failed_ranges))
            changed, erased = ({}, {}) if ch.error_free else packets.damage(exposed, ch, p.packet_bytes, rng, stats)
        if not changed:
            return Transmission(payload, stats, erased)
        return Transmission(payload.with_segments([changed.get(s.name, s) for s in payload.segments]), stats, erased)

    @staticmethod
    def _stream_ranges(failed: np.ndarray, tb: Plan, nbits: int) -> list[tuple[int, int]]:
        """Bit ranges of the exposed stream that the failed CBs carried (TB by TB, CB by CB)."""
        out = []
        for cb in failed.tolist():
            block, within = divmod(cb, tb.cbs)
            lo = block * tb.tb_bits + within * tb.cb_data
            hi = min(lo + tb.cb_data, (block + 1) * tb.tb_bits, nbits)  # the last CB also holds the TB CRC
            if lo < hi:
                out.append((lo, hi))
        return out

    @staticmethod
    def _erase(exposed, ranges, stats):
        """Zero the bytes the failed CBs touched; their ranges per segment."""
        changed, erased, offset = {}, {}, 0
        stats.packets_lost += len(ranges)
        for seg in exposed:
            start, stop = offset, offset + seg.nbytes
            offset = stop
            cut = []
            for lo, hi in ranges:
                a, b = max(lo // 8, start), min(-(-hi // 8), stop)
                if a < b:
                    if cut and cut[-1][1] >= a - start:
                        cut[-1] = (cut[-1][0], b - start)
                    else:
                        cut.append((a - start, b - start))
            if cut:
                data = bytearray(seg.data)
                for a, b in cut:
                    data[a:b] = bytes(b - a)
                changed[seg.name] = seg.replace_data(bytes(data))
                erased[seg.name] = cut
        return changed, erased
