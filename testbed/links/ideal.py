"""The ideal link: no errors, no losses; the payload itself is what arrives (nothing copied)."""

from __future__ import annotations

from typing import Literal

from testbed.links.base import Link, LinkParams
from testbed.links.channel import Channel


class IdealLink(Link):
    class Params(LinkParams):
        model: Literal["ideal"] = "ideal"

    def channel(self, rng):
        return Channel(ber=0.0)
