"""Binary symmetric channel: every bit flips with probability ``ber``; copies are majority-voted."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from testbed.attributes import number
from testbed.links.base import Link, LinkParams
from testbed.links.channel import Channel


class BSCLink(Link):
    class Params(LinkParams):
        model: Literal["bsc"] = "bsc"
        ber: Annotated[float, number(ge=0, le=1)] = Field(0.0, description="probability that a bit flips")

    def channel(self, rng):
        return Channel(ber=self.params.ber)
