"""Protection of the protected part: CRC-32 per packet, repetition coding, selective-repeat ARQ, ``auto``.

Every protected packet carries a CRC-32 trailer (4 bytes). Each send of it carries ``r``
copies (``protected_repetition``), which the receiver combines; the channel state says how
(:meth:`Channel.combined`: maximum-ratio combining of soft values, a majority vote of hard
bits, any copy that arrives). A packet still with a bit error, or lost, is resent, at most
``max_attempts`` sends in all; one packet not through then fails the whole delivery.
``"auto"`` picks, per transmission, the smallest ``r`` in 1..64 with which one send of a
full packet gets through with probability >= 0.9 (:func:`choose_repetition`).

Resends are simulated exactly without flipping bits: on a memoryless channel a packet of
``m`` bits (CRC included) gets through one send with probability ``(1 - loss_r) * (1 -
ber_r) ** m`` (the rates after combining ``r`` copies), so its number of sends is
geometric (:func:`memoryless_sends`). A channel with memory draws the sends itself
(``Channel.draw_sends``). All packets are sent even when one fails (the sender does not know
yet), so a failed delivery's byte counts are what the attempt cost; every send of a
protected packet costs ``r`` times its bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from testbed.attributes import AUTO
from testbed.links import packets

CRC_BYTES = 4  # CRC-32 trailer of every protected packet
MAX_REPETITION = 64  # the most copies "auto" sends
AUTO_TARGET = 0.9  # "auto": probability that one send of a full protected packet gets through


def majority_vote_ber(ber: float, copies: int) -> float:
    """Bit error rate after a majority vote over ``copies`` independent hard copies of a bit.

    P(at least ceil(copies/2) of the copies flipped): for an even number of
    copies a tie counts as an error (the decoder cannot tell).
    """
    if copies == 1 or ber <= 0 or ber >= 1:
        return ber
    return _majority_vote_ber(float(ber), int(copies))


@lru_cache(maxsize=4096)
def _majority_vote_ber(ber: float, copies: int) -> float:
    ok = 1.0 - ber
    return math.fsum(math.comb(copies, k) * ber**k * ok ** (copies - k) for k in range((copies + 1) // 2, copies + 1))


def packet_success(bits: int, ber: float, loss: float) -> float:
    """Probability that one send of a packet of ``bits`` bits arrives, and without a bit error."""
    return (1.0 - loss) * (math.exp(bits * math.log1p(-ber)) if ber < 1 else 0.0)


def memoryless_sends(groups: list[tuple[int, int]], ber: float, loss: float, max_attempts: int, rng: np.random.Generator):
    """Sends of each packet of ``groups`` [(count, bits)] over a memoryless channel: geometric draws.

    A packet that needs more than ``max_attempts`` sends is given ``max_attempts + 1``.
    """
    if ber <= 0 and loss <= 0:
        return [np.ones(n, dtype=np.int64) for n, _ in groups]
    out = []
    for n, bits in groups:
        success = packet_success(bits, ber, loss)
        if success >= 1.0:
            out.append(np.ones(n, dtype=np.int64))
        elif success <= 0.0:
            out.append(np.full(n, max_attempts + 1, dtype=np.int64))
        else:
            out.append(np.minimum(rng.geometric(success, size=n), max_attempts + 1))
    return out


def choose_repetition(ch, packet_bytes: int) -> int:
    """The "auto" repetition: the smallest number of copies in 1..MAX_REPETITION with which one
    send of a full protected packet (``packet_bytes`` + CRC) succeeds with probability >= AUTO_TARGET
    on channel ``ch``; MAX_REPETITION if none does.

    Scanned upwards, not bisected: a majority vote over an even number of copies is worse than
    over one copy fewer, so the success probability is not monotone in the copies.
    """
    bits = 8 * (packet_bytes + CRC_BYTES)
    for copies in range(1, MAX_REPETITION + 1):
        if ch.send_success(bits, copies) >= AUTO_TARGET:
            return copies
    return MAX_REPETITION


@dataclass(frozen=True)
class Protection:
    """CRC, repetition and ARQ of a link's protected packets."""

    packet_bytes: int
    max_attempts: int
    repetition: int | str  # copies per send, or "auto"

    def copies(self, ch) -> int:
        """Copies of each protected packet per send on channel state ``ch``."""
        return choose_repetition(ch, self.packet_bytes) if self.repetition == AUTO else self.repetition

    def send(self, nbytes: int, ch, copies: int, rng: np.random.Generator, stats) -> int:
        """Send ``nbytes`` of protected data (``copies`` copies per send); fill the stats; return the ARQ rounds."""
        if ch.error_free:  # every packet through at its first send
            return 0
        sizes = packets.groups(nbytes, self.packet_bytes)
        sends = ch.draw_sends([(n, 8 * (size + CRC_BYTES)) for n, size in sizes], copies, self.max_attempts, rng)
        worst, first_failed, index = 1, None, 0
        for (n, size), drawn in zip(sizes, sends):
            failed = np.flatnonzero(drawn > self.max_attempts)
            if failed.size and first_failed is None:
                first_failed = index + int(failed[0])
            drawn = np.minimum(drawn, self.max_attempts)
            resent = int(drawn.sum()) - n
            stats.retransmissions += resent
            stats.resent_bytes += resent * copies * (size + CRC_BYTES)
            worst = max(worst, int(drawn.max()))
            index += n
        if first_failed is not None:
            stats.delivered = False
            stats.failure = f"protected packet {first_failed} not delivered after {self.max_attempts} attempts"
            if copies > 1:
                stats.failure += f" of {copies} copies"
        return worst - 1
