"""Block Rayleigh fading: one gain |h|^2 ~ Exp(1) per transmission (drawn first), then AWGN at that SNR."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from testbed.links.base import Link
from testbed.links.channel import Channel
from testbed.links.modulation import ModulatedParams, SnrDb, ber_from_snr


class FadingLink(Link):
    class Params(ModulatedParams):
        model: Literal["fading"] = "fading"
        snr_db: SnrDb = Field(10.0, description="mean Eb/N0 in dB (the gain of each transmission drawn around it)")

    def channel(self, rng):
        p = self.params
        gain = float(rng.exponential(1.0))
        snr_db = p.snr_db + 10.0 * math.log10(gain) if gain > 0 else -math.inf
        return Channel(ber=ber_from_snr(snr_db, p.modulation), snr_db=snr_db, modulation=p.modulation)
