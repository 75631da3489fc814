"""Packet erasures: each packet lost with probability ``loss``; exposed ones arrive as zeros, protected ones are resent."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from testbed.attributes import number
from testbed.links.base import Link, LinkParams
from testbed.links.channel import Channel


class ErasureLink(Link):
    class Params(LinkParams):
        model: Literal["erasure"] = "erasure"
        loss: Annotated[float, number(ge=0, lt=1)] = Field(0.0, description="probability that a packet is lost")

    def channel(self, rng):
        return Channel(ber=0.0, loss=self.params.loss)
