"""The channel's state for one transmission: what protection and packet damage ask of it.

:class:`Channel` is a memoryless channel: independent bit errors at ``ber`` and independent
packet losses at ``loss``. A channel with memory (Gilbert-Elliott) subclasses it and
overrides how errors fall (``error_positions``) and how protected packets get through
(``send_success``, ``draw_sends``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from testbed.links import packets
from testbed.links.modulation import ber_from_ebn0
from testbed.links.protection import majority_vote_ber, memoryless_sends, packet_success


@dataclass(frozen=True)
class Channel:
    ber: float  # bit error rate of digitally sent bits
    loss: float = 0.0  # probability a packet is lost
    snr_db: float = math.nan
    # modulation of soft-decision links (bits decided from the combined soft values);
    # "" for hard-decision channels (bsc) whose copies are combined by majority vote
    modulation: str = ""

    @property
    def error_free(self) -> bool:
        return self.ber <= 0 and self.loss <= 0

    def combined(self, copies: int) -> tuple[float, float]:
        """(bit error rate, packet loss) of a packet sent ``copies`` times and combined at the receiver.

        Soft decisions: maximum-ratio combining of coherent copies adds their
        Eb/N0 (the noise is independent, the signal adds in phase), so the bits
        are decided at ``copies`` times the Eb/N0: the modulation's closed form
        there (for 16-QAM too, the same per-dimension decision on the combined
        symbol). Hard decisions: majority vote. Erasures: the packet is lost
        only if every copy is.
        """
        if copies == 1:
            return self.ber, self.loss
        loss = self.loss**copies
        if self.ber <= 0:
            return 0.0, loss
        if self.modulation:
            return ber_from_ebn0(copies * 10.0 ** (self.snr_db / 10.0), self.modulation), loss
        return majority_vote_ber(self.ber, copies), loss

    def send_success(self, bits: int, copies: int) -> float:
        """Probability that one send of a ``bits``-bit packet in ``copies`` copies gets through."""
        return packet_success(bits, *self.combined(copies))

    def draw_sends(self, groups: list[tuple[int, int]], copies: int, max_attempts: int, rng: np.random.Generator):
        """Sends each protected packet of ``groups`` [(count, bits)] needs (``max_attempts + 1``: never through)."""
        return memoryless_sends(groups, *self.combined(copies), max_attempts, rng)

    def error_positions(self, nbits: int, rng: np.random.Generator) -> np.ndarray:
        """Sorted positions of the bit errors among ``nbits`` exposed bits."""
        return packets.error_positions(nbits, self.ber, rng)
