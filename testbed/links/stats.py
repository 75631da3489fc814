"""What one transmission over a link produced: its figures, and what arrived."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from testbed.payload import Payload


@dataclass
class LinkStats:
    payload_bytes: int = 0  # payload.nbytes
    overhead_bytes: int = 0  # CRC-32 trailers of the protected packets (first sends)
    coding_bytes: int = 0  # the extra copies of the protected packets' first sends (repetition - 1 of each)
    resent_bytes: int = 0  # every byte of every resent packet, CRC and every copy included
    bytes_sent: int = 0  # payload + overhead + coding + resent
    bits_sent: int = 0
    bit_errors: int = 0  # bits that differ in the exposed data as delivered
    packets: int = 0  # packets of the first send, protected and exposed
    packets_lost: int = 0  # exposed packets erased
    retransmissions: int = 0  # resent protected packets
    airtime_s: float = 0.0
    delivered: bool = True
    failure: str = ""
    snr_db: float = math.nan  # effective SNR of this transmission (NaN: not applicable)
    ber: float = 0.0  # effective bit error rate of this transmission (of the uncoded, exposed bits)
    protected_repetition: int = 1  # copies of each protected packet per send (the one "auto" chose)
    mcs: int = -1  # the MCS a coded link (nr) sent at; -1 for the uncoded links

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Transmission:
    received: Payload | None  # None when delivery failed
    stats: LinkStats
    # exposed segment name -> byte ranges [start, stop) lost and replaced by zeros
    erased: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
