"""Per-device links: what a payload looks like after crossing a noisy channel.

Modules: :mod:`~testbed.links.base` (what a link is, the transmission pipeline),
:mod:`~testbed.links.protection` (CRC, repetition, ARQ, ``auto``), :mod:`~testbed.links.packets`
(packets and bit damage), :mod:`~testbed.links.channel` (a transmission's channel state),
:mod:`~testbed.links.modulation` (closed-form BERs), one module per link model,
:mod:`~testbed.links.registry` (models by name, entry points) and :mod:`~testbed.links.schema`
(the parameters, the config section and the docs tables derived from them).
"""

from testbed.links.base import Link, LinkParams, LinkStats, Transmission
from testbed.links.registry import available, get, link_params, make_link, register

__all__ = ["Link", "LinkParams", "LinkStats", "Transmission", "available", "get", "link_params", "make_link", "register"]
