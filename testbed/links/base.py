"""What a link is: a channel model with one device's parameters, and what a transmission gives back.

A link cuts a :class:`Payload` into packets of ``packet_bytes`` and sends them in two parts:

- the *protected* part (the payload's framing plus its protected segments), through the
  link's :class:`~testbed.links.protection.Protection` (CRC-32 per packet, repetition
  coding, selective-repeat ARQ): it arrives intact, or the whole delivery fails;
- the *exposed* part (the exposed segments, concatenated in payload order), raw: the
  receiver takes it with the channel's bit errors, noise or erasures
  (:mod:`testbed.links.packets`).

A link model is a :class:`Link` subclass with its own ``Params`` (a :class:`LinkParams`
subclass holding only its parameters and naming the model) and a ``channel`` method, the
channel's state for one transmission; a model with damage of its own (analog noise) also
overrides ``damage_exposed``. It is registered by name in :mod:`testbed.links.registry`.

Airtime: ``bytes_sent * 8 / bandwidth + latency * (1 + rounds)``, where ``rounds`` is the
number of ARQ retransmission rounds: the first send costs one latency, and each round of
resends waits one more for the acknowledgements.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from testbed.attributes import MEASURED, auto_or_whole, number, whole
from testbed.links import packets
from testbed.links.protection import CRC_BYTES, Protection
from testbed.links.stats import LinkStats, Transmission
from testbed.payload import Payload, Segment



class LinkParams(BaseModel):
    """The parameters every link model has; a model's ``Params`` subclass adds its own.

    The subclass names its model with ``model: Literal["name"] = "name"``. Each field's
    rule (its metadata) is the one place its valid values are written: the config, the
    fleet's draws, the trace columns and the docs tables all use it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    bandwidth_mbps: Annotated[float, number(gt=0), MEASURED] = Field(10.0, description="link rate in Mbit/s")
    latency_ms: Annotated[float, number(ge=0), MEASURED] = Field(
        20.0, description="one-way latency in ms; each ARQ round of resends waits one more"
    )
    packet_bytes: Annotated[int, whole(ge=1)] = Field(1024, description="payload bytes per packet (the last may be shorter)")
    max_attempts: Annotated[int, whole(ge=1)] = Field(
        8, description="sends of one protected packet before the delivery fails"
    )
    protected_repetition: Annotated[int | str, auto_or_whole(ge=1)] = Field(
        "auto",
        description="copies of each protected packet per send, combined by the receiver; auto: the fewest "
        "(1..64) with which one send of a full packet gets through with probability >= 0.9",
    )


class Link:
    """A channel model with one device's parameters; ``transmit`` is pure given the generator."""

    Params: ClassVar[type[LinkParams]] = LinkParams
    model: ClassVar[str] = ""  # the name in configs: the default of ``Params.model``

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        name = cls.Params.model_fields["model"].default
        cls.model = name if isinstance(name, str) else ""

    def __init__(self, params: LinkParams):
        if not isinstance(params, self.Params):
            raise TypeError(f"{type(self).__name__} takes {self.Params.__qualname__}, got {type(params).__qualname__}")
        self.params = params
        self.protection = Protection(params.packet_bytes, params.max_attempts, params.protected_repetition)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"

    def channel(self, rng: np.random.Generator):
        """The channel's state for one transmission (drawn first, from ``rng``)."""
        raise NotImplementedError

    def transmit(self, payload: Payload, rng: np.random.Generator) -> Transmission:
        p = self.params
        ch = self.channel(rng)
        copies = self.protection.copies(ch)
        protected_nbytes = payload.protected_nbytes
        exposed_nbytes = payload.nbytes - protected_nbytes
        n_protected = packets.count(protected_nbytes, p.packet_bytes)
        stats = LinkStats(
            payload_bytes=protected_nbytes + exposed_nbytes,
            overhead_bytes=CRC_BYTES * n_protected,
            coding_bytes=(copies - 1) * (protected_nbytes + CRC_BYTES * n_protected),
            packets=n_protected + packets.count(exposed_nbytes, p.packet_bytes),
            snr_db=ch.snr_db,
            ber=ch.ber,
            protected_repetition=copies,
        )
        rounds = self.protection.send(protected_nbytes, ch, copies, rng, stats)
        stats.bytes_sent = stats.payload_bytes + stats.overhead_bytes + stats.coding_bytes + stats.resent_bytes
        stats.bits_sent = 8 * stats.bytes_sent
        stats.airtime_s = stats.bits_sent / (p.bandwidth_mbps * 1e6) + p.latency_ms * 1e-3 * (1 + rounds)
        if not stats.delivered:
            return Transmission(None, stats)
        exposed = [s for s in payload.segments if not s.protected]
        changed, erased = self.damage_exposed(exposed, ch, rng, stats) if exposed else ({}, {})
        if not changed:  # nothing damaged: the payload itself is what arrives, nothing copied
            return Transmission(payload, stats, erased)
        return Transmission(payload.with_segments([changed.get(s.name, s) for s in payload.segments]), stats, erased)

    def damage_exposed(self, exposed: list[Segment], ch, rng: np.random.Generator, stats: LinkStats):
        """The damaged exposed segments, {name: segment}, and the erased ranges; fills the stats."""
        if ch.error_free:
            return {}, {}
        return packets.damage(exposed, ch, self.params.packet_bytes, rng, stats)
