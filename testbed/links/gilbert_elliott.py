"""Gilbert-Elliott burst errors: a two-state Markov chain over the bits, each state with its own BER.

Each bit is sent in the *good* or the *bad* state; after it the chain moves from good to bad
with probability ``p = p_good_to_bad`` and from bad to good with ``r = p_bad_to_good``, and
the bit flips with probability ``ber_good`` or ``ber_bad`` of its state. In the long run a
fraction ``pi_bad = p / (p + r)`` of the bits is sent in the bad state, a burst lasts ``1/r``
bits on average and the mean BER is ``(1 - pi_bad) * ber_good + pi_bad * ber_bad``.
(E. N. Gilbert, "Capacity of a burst-noise channel", Bell Syst. Tech. J. 39, 1960;
E. O. Elliott, "Estimates of error rates for codes on burst-noise channels", Bell Syst.
Tech. J. 42, 1963.)

The states are drawn run by run, not bit by bit: the time in a state is geometric (1/p bits
good, 1/r bad on average), and the errors inside the runs of each state are placed like
the BSC's (gaps between errors). Each stream of bits (the exposed part; each ARQ round of
protected packets) starts in a state drawn from the stationary distribution.

Protected packets (our choice, see docs/LINKS.md): the copies of a packet are sent back to
back and the receiver keeps a copy whose CRC checks (selection combining; with bursts the
copies are not independent, so a majority vote has no closed form). Errors of neighbouring
packets are correlated too, so the ARQ is simulated: each round sends the packets not yet
through over the chain, and a packet gets through when one of its copies has no bit error.
``auto`` uses the exact probability that one send gets through (:meth:`BurstChannel.send_success`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from testbed.attributes import number
from testbed.links import packets
from testbed.links.base import Link, LinkParams
from testbed.links.channel import Channel

_MAX_PAIRS = 1 << 20  # sojourn pairs drawn at a time


@dataclass(frozen=True)
class BurstChannel(Channel):
    """A Gilbert-Elliott channel's state; ``ber`` is its stationary mean."""

    ber_good: float = 0.0
    ber_bad: float = 0.0
    p: float = 0.0  # good -> bad, per bit
    r: float = 1.0  # bad -> good, per bit (> 0)

    @property
    def pi_bad(self) -> float:
        return self.p / (self.p + self.r)

    def combined(self, copies: int):
        raise NotImplementedError("copies on a burst channel are not independent: see send_success and draw_sends")

    def runs(self, nbits: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The chain's runs over ``nbits`` bits: (starts, lengths, whether each run is bad), in order."""
        if nbits <= 0:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, np.empty(0, dtype=bool)
        if self.p <= 0:  # never leaves the good state (pi_bad = 0: it starts there)
            return np.zeros(1, dtype=np.int64), np.full(1, nbits, dtype=np.int64), np.zeros(1, dtype=bool)
        first_bad = bool(rng.random() < self.pi_bad)
        # the runs alternate: each lasts Geometric(probability of leaving its state) bits
        leave_first, leave_second = (self.r, self.p) if first_bad else (self.p, self.r)
        mean_pair = 1 / self.p + 1 / self.r
        chunks, total = [], 0
        while total < nbits:
            pairs = min(int((nbits - total) / mean_pair) + 16, _MAX_PAIRS)
            chunk = np.empty(2 * pairs, dtype=np.int64)
            chunk[0::2] = rng.geometric(leave_first, size=pairs)
            chunk[1::2] = rng.geometric(leave_second, size=pairs)
            np.minimum(chunk, nbits, out=chunk)  # a run as long as the stream ends it (and cannot overflow)
            chunks.append(chunk)
            total += int(chunk.sum())
        lengths = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
        ends = np.cumsum(lengths)
        n = int(np.searchsorted(ends, nbits)) + 1  # the runs that start within the stream
        starts = ends[:n] - lengths[:n]
        lengths = lengths[:n].copy()
        lengths[-1] = nbits - starts[-1]
        bad = np.zeros(n, dtype=bool)
        bad[0 if first_bad else 1 :: 2] = True
        return starts, lengths, bad

    def error_positions(self, nbits: int, rng: np.random.Generator) -> np.ndarray:
        starts, lengths, bad = self.runs(nbits, rng)
        parts = []
        for in_bad, ber in ((False, self.ber_good), (True, self.ber_bad)):
            s, n = starts[bad == in_bad], lengths[bad == in_bad]
            # errors among the state's bits laid end to end, then put back into their runs
            found = packets.error_positions(int(n.sum()), ber, rng)
            if found.size:
                offsets = np.cumsum(n) - n
                run = np.searchsorted(offsets, found, side="right") - 1
                parts.append(s[run] + found - offsets[run])
        if len(parts) < 2:  # each part is in order already
            return parts[0] if parts else np.empty(0, dtype=np.int64)
        return np.sort(np.concatenate(parts), kind="stable")  # a merge of two sorted runs

    def send_success(self, bits: int, copies: int) -> float:
        """P(at least one of ``copies`` back-to-back copies of ``bits`` bits has no error), chain stationary.

        Exact, by the chain's transfer matrices over a block of ``bits`` bits: ``(D P)^bits``
        (every bit clean, ``D`` the diagonal of 1 - BER per state) and ``P^bits`` (any);
        their difference is a block with an error, taken ``copies`` times in a row.
        """
        chain = np.array([[1 - self.p, self.p], [self.r, 1 - self.r]])
        clean = np.linalg.matrix_power(np.diag([1 - self.ber_good, 1 - self.ber_bad]) @ chain, bits)
        hit = np.linalg.matrix_power(chain, bits) - clean
        start = np.array([1 - self.pi_bad, self.pi_bad])
        all_hit = float(start @ np.linalg.matrix_power(hit, copies) @ np.ones(2))
        return min(1.0, max(0.0, 1.0 - all_hit))

    def draw_sends(self, groups, copies, max_attempts, rng):
        bits = np.concatenate([np.full(n, b, dtype=np.int64) for n, b in groups])
        sends = np.zeros(bits.size, dtype=np.int64)
        pending = np.arange(bits.size)
        for _ in range(max_attempts):
            sends[pending] += 1
            ends = np.cumsum(np.repeat(bits[pending], copies))  # packet by packet, copies back to back
            hit = np.unique(np.searchsorted(ends, self.error_positions(int(ends[-1]), rng), side="right"))
            pending = pending[np.bincount(hit // copies, minlength=pending.size) == copies]  # every copy hit
            if not pending.size:
                break
        sends[pending] = max_attempts + 1
        return np.split(sends, np.cumsum([n for n, _ in groups])[:-1])


class GilbertElliottLink(Link):
    class Params(LinkParams):
        model: Literal["gilbert_elliott"] = "gilbert_elliott"
        ber_good: Annotated[float, number(ge=0, le=1)] = Field(1e-6, description="bit error rate in the good state")
        ber_bad: Annotated[float, number(ge=0, le=1)] = Field(0.1, description="bit error rate in the bad state (a burst)")
        p_good_to_bad: Annotated[float, number(ge=0, le=1)] = Field(
            1e-4, description="per-bit probability of going from the good state to the bad one (a burst starts)"
        )
        p_bad_to_good: Annotated[float, number(gt=0, le=1)] = Field(
            0.1, description="per-bit probability of going back to the good state: a burst lasts 1/p_bad_to_good bits on average"
        )

    def channel(self, rng):
        p = self.params
        pi_bad = p.p_good_to_bad / (p.p_good_to_bad + p.p_bad_to_good)
        mean = (1 - pi_bad) * p.ber_good + pi_bad * p.ber_bad
        return BurstChannel(ber=mean, ber_good=p.ber_good, ber_bad=p.ber_bad, p=p.p_good_to_bad, r=p.p_bad_to_good)
