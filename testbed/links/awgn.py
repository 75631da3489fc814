"""Digital modulation over AWGN at Eb/N0 ``snr_db``: a BSC with the modulation's closed-form BER.

Copies of a protected packet are combined by maximum-ratio combining (see ``Channel.combined``).
"""

from __future__ import annotations

from typing import Literal

from testbed.links.base import Link
from testbed.links.channel import Channel
from testbed.links.modulation import ModulatedParams, ber_from_snr


class AWGNLink(Link):
    class Params(ModulatedParams):
        model: Literal["awgn"] = "awgn"

    def channel(self, rng):
        p = self.params
        return Channel(ber=ber_from_snr(p.snr_db, p.modulation), snr_db=p.snr_db, modulation=p.modulation)
