"""A transfer: one payload over one device's link for one hop, and the one function that runs it.

Everything that crosses a link in any scenario goes through :func:`run_transfer`:
transmit the payload over the device's link for the transfer's hop, with the
channel noise drawn from ``(seed, "link", round, device_id, transfer name)``, then
(optionally) decode what arrived. The noise key holds the transfer's name and
never the strategy, so every strategy meets the same channel on the same
transfer, and adding a transfer to a scenario never changes the noise another
one sees. The result is the transfers-table row and the received or decoded value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from testbed.payload import Payload, PayloadError
from testbed.rng import derive_rng
from testbed.tables import TRANSFERS

# hop -> direction
HOPS = {
    "server->device": "down",
    "device->server": "up",
    "fog->device": "down",
    "device->fog": "up",
}


@dataclass(frozen=True)
class Transfer:
    """One kind of transfer of a scenario's round (a class-level declaration)."""

    name: str  # unique within the scenario: "down", "up"; keys the link noise
    hop: str  # a key of HOPS
    meaning: str = ""  # one line for the docs and the report

    def __post_init__(self):
        if self.hop not in HOPS:
            raise ValueError(f"transfer {self.name}: unknown hop {self.hop!r}; known: {', '.join(HOPS)}")

    @property
    def direction(self) -> str:
        return HOPS[self.hop]


@dataclass
class TransferResult:
    row: dict  # the transfers-table row
    received: Payload | None  # what arrived (None: delivery failed)
    value: Any = None  # the decoded value, when a decoder was given and it succeeded

    @property
    def failure(self) -> str:
        return self.row["failure"]

    @property
    def ok(self) -> bool:
        return not self.row["failure"]


def run_transfer(
    transfer: Transfer,
    payload: Payload,
    *,
    link,
    seed: int,
    round_: int,
    label: str,
    device_id: int,
    strategy: str,
    decode: Callable[[Payload], Any] | None = None,
) -> TransferResult:
    """Send ``payload`` over ``link`` (the device's link for the hop); decode it with ``decode`` if given.

    A payload the decoder refuses (``PayloadError``, or the receiver's model refusing
    the tensors) is a failed transfer, never an exception.
    """
    tx = link.transmit(payload, derive_rng(seed, "link", round_, device_id, transfer.name))
    s = tx.stats
    row = TRANSFERS.empty_row(
        round=round_, label=label, device_id=device_id, transfer=transfer.name, hop=transfer.hop,
        direction=transfer.direction, strategy=strategy, link_model=str(link.params.model),
        snr_db=s.snr_db, bytes=s.bytes_sent, payload_bytes=s.payload_bytes,
        protected_bytes=payload.protected_nbytes, overhead_bytes=s.overhead_bytes, coding_bytes=s.coding_bytes,
        resent_bytes=s.resent_bytes, repetition=s.protected_repetition, mcs=s.mcs, bit_errors=s.bit_errors,
        packets_lost=s.packets_lost, resends=s.retransmissions, airtime_s=s.airtime_s, delivered=s.delivered,
    )
    if tx.received is None:
        row["failure"] = f"delivery: {s.failure or 'not delivered'}"
        return TransferResult(row, None)
    result = TransferResult(row, tx.received)
    if decode is not None:
        try:
            result.value = decode(tx.received)
        except (PayloadError, RuntimeError, KeyError, ValueError) as exc:
            row["failure"] = f"decode: {exc}"
    return result
