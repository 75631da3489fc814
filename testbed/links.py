"""Per-device links: what a payload looks like after crossing a noisy channel.

A link cuts a :class:`Payload` into packets and sends them:

- the *protected* part (the payload's framing plus its protected segments) in
  packets of ``packet_bytes`` that each carry a CRC-32 trailer (4 bytes). A
  packet received with any bit error, or lost, is resent (selective-repeat
  ARQ), at most ``max_attempts`` sends per packet; protected data therefore
  always arrives intact, or the whole delivery fails;
- the *exposed* part (the exposed segments, concatenated in payload order) in
  packets of ``packet_bytes`` without a checksum: the receiver takes them as
  they come, with the channel's bit errors, noise or erasures.

Protected packets are also channel coded, by repetition: each send of a
protected packet carries ``r = protected_repetition`` copies of it, which the
receiver combines (maximum-ratio combining of soft values on the modulated
links, a majority vote of hard bits on bsc, any copy that arrives on erasure
links; see :meth:`Channel.combined`). ``"auto"`` picks, per transmission, the
smallest ``r`` in 1..64 with which one send of a full packet gets through with
probability >= 0.9 (:func:`choose_repetition`). The exposed part is never
coded.

Resends are simulated exactly without flipping bits: a protected packet of
``m`` bits (CRC included) gets through one send with probability
``(1 - loss_r) * (1 - ber_r) ** m``, the rates after combining ``r`` copies,
so its number of sends is geometric; a packet whose draw exceeds
``max_attempts`` is given up and the delivery fails. All packets are sent even
then (the sender does not know yet), so the byte counts of a failed delivery
are what the attempt cost; every send of a protected packet costs ``r`` times
its bytes.

Airtime: ``bytes_sent * 8 / bandwidth + latency * (1 + rounds)`` where
``rounds`` is the number of ARQ retransmission rounds (the largest number of
sends any protected packet needed, minus one): the first send costs one
latency, and each round of resends waits one more latency for the
acknowledgements.

Bit errors in exposed data are placed by drawing the gaps between errors
(geometric), so the cost grows with the number of errors, not of bits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from typing import ClassVar

import numpy as np

from testbed.payload import FORMAT_F16, FORMAT_F32, Payload, Segment

MODELS = ("ideal", "bsc", "awgn", "analog", "erasure", "fading")
MODULATIONS = ("bpsk", "qpsk", "16qam")
CRC_BYTES = 4  # CRC-32 trailer of every protected packet
AUTO = "auto"  # protected_repetition chosen per transmission from the channel state
MAX_REPETITION = 64  # the most copies "auto" sends
AUTO_TARGET = 0.9  # "auto": probability that one send of a full protected packet gets through


# ---- parameters ---------------------------------------------------------------------


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _finite(value) -> bool:
    return _is_number(value) and math.isfinite(value)


def _whole(value) -> bool:
    return _finite(value) and float(value).is_integer()


# name -> (accepts the value, what it must be): the one place the rules live,
# used by LinkParams itself and by the fleet to name the device and key.
LINK_RULES = {
    "model": (lambda v: v in MODELS, "must be one of " + ", ".join(MODELS)),
    "snr_db": (_finite, "must be a finite number"),
    "ber": (lambda v: _finite(v) and 0 <= v <= 1, "must be in [0, 1]"),
    "modulation": (lambda v: v in MODULATIONS, "must be one of " + ", ".join(MODULATIONS)),
    "bandwidth_mbps": (lambda v: _finite(v) and v > 0, "must be > 0"),
    "latency_ms": (lambda v: _finite(v) and v >= 0, "must be >= 0"),
    "packet_bytes": (lambda v: _whole(v) and v >= 1, "must be a whole number >= 1"),
    "loss": (lambda v: _finite(v) and 0 <= v < 1, "must be in [0, 1)"),
    "max_attempts": (lambda v: _whole(v) and v >= 1, "must be a whole number >= 1"),
    "protected_repetition": (lambda v: v == AUTO or (_whole(v) and v >= 1), "must be 'auto' or a whole number >= 1"),
}


def link_param_problem(name: str, value) -> str | None:
    """What is wrong with ``value`` for link parameter ``name``, or None."""
    accepts, rule = LINK_RULES[name]
    try:
        return None if accepts(value) else rule
    except TypeError:
        return rule


@dataclass(frozen=True)
class LinkParams:
    """Concrete link parameters of one device (see the module docstring and docs/LINKS.md)."""

    model: str = "awgn"
    snr_db: float = 10.0  # Eb/N0 (digital), signal-to-noise (analog), mean Eb/N0 (fading)
    ber: float = 0.0  # bsc only
    modulation: str = "bpsk"
    bandwidth_mbps: float = 10.0
    latency_ms: float = 20.0
    packet_bytes: int = 1024
    loss: float = 0.0  # erasure only
    max_attempts: int = 8
    # copies of every protected packet per send; "auto": chosen per transmission.
    # 1 (no coding) here; the config's default is "auto".
    protected_repetition: int | str = 1

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            problem = link_param_problem(f.name, value)
            if problem:
                raise ValueError(f"link {f.name}: {value!r} {problem}")
        for name in ("snr_db", "ber", "bandwidth_mbps", "latency_ms", "loss"):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("packet_bytes", "max_attempts"):
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.protected_repetition != AUTO:
            object.__setattr__(self, "protected_repetition", int(self.protected_repetition))


# ---- bit error rates ---------------------------------------------------------------


def q_function(x: float) -> float:
    """Gaussian tail probability Q(x) = P(N(0,1) > x)."""
    return 0.5 * math.erfc(x / math.sqrt(2.0))


def ber_from_snr(snr_db: float, modulation: str) -> float:
    """Bit error rate over AWGN at Eb/N0 = ``snr_db`` with Gray-coded ``modulation``."""
    return ber_from_ebn0(10.0 ** (snr_db / 10.0), modulation)


def ber_from_ebn0(ebn0: float, modulation: str) -> float:
    """Bit error rate over AWGN at a linear Eb/N0 of ``ebn0`` with Gray-coded ``modulation``."""
    if modulation in ("bpsk", "qpsk"):
        # Gray QPSK is two independent BPSK streams: the same BER per bit.
        return q_function(math.sqrt(2.0 * ebn0))
    if modulation == "16qam":
        # Exact BER of Gray-coded square 16-QAM: K. Cho and D. Yoon, "On the general
        # BER expression of one- and two-dimensional amplitude modulations", IEEE
        # Trans. Commun. 50(7), 2002, eq. (14) with M = 16:
        # Pb = 3/4 Q(a) + 1/2 Q(3a) - 1/4 Q(5a),  a = sqrt(4/5 Eb/N0).
        a = math.sqrt(0.8 * ebn0)
        return 0.75 * q_function(a) + 0.5 * q_function(3 * a) - 0.25 * q_function(5 * a)
    raise ValueError(f"unknown modulation {modulation!r}: expected one of {', '.join(MODULATIONS)}")


def majority_vote_ber(ber: float, copies: int) -> float:
    """Bit error rate after a majority vote over ``copies`` independent hard copies of a bit.

    P(at least ceil(copies/2) of the copies flipped): for an even number of
    copies a tie counts as an error (the decoder cannot tell).
    """
    if copies == 1 or ber <= 0 or ber >= 1:
        return ber
    return _majority_vote_ber(float(ber), int(copies))


@lru_cache(maxsize=4096)
def _majority_vote_ber(ber: float, copies: int) -> float:
    ok = 1.0 - ber
    return math.fsum(math.comb(copies, k) * ber**k * ok ** (copies - k) for k in range((copies + 1) // 2, copies + 1))


# ---- results -------------------------------------------------------------------------


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

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Transmission:
    received: Payload | None  # None when delivery failed
    stats: LinkStats
    # exposed segment name -> byte ranges [start, stop) lost and replaced by zeros
    erased: dict[str, list[tuple[int, int]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Channel:
    """The channel's state for one transmission."""

    ber: float  # bit error rate of digitally sent bits
    loss: float = 0.0  # probability a packet is lost
    snr_db: float = math.nan
    # modulation of soft-decision links (bits decided from the combined soft values);
    # "" for hard-decision channels (bsc) whose copies are combined by majority vote
    modulation: str = ""

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


def packet_success(bits: int, ber: float, loss: float) -> float:
    """Probability that one send of a packet of ``bits`` bits arrives, and without a bit error."""
    return (1.0 - loss) * (math.exp(bits * math.log1p(-ber)) if ber < 1 else 0.0)


def choose_repetition(ch: Channel, packet_bytes: int) -> int:
    """The "auto" repetition: the smallest number of copies in 1..MAX_REPETITION with which one
    send of a full protected packet (``packet_bytes`` + CRC) succeeds with probability >= AUTO_TARGET
    on channel ``ch``; MAX_REPETITION if none does.

    Scanned upwards, not bisected: a majority vote over an even number of copies is worse than
    over one copy fewer, so the success probability is not monotone in the copies.
    """
    bits = 8 * (packet_bytes + CRC_BYTES)
    for copies in range(1, MAX_REPETITION + 1):
        if packet_success(bits, *ch.combined(copies)) >= AUTO_TARGET:
            return copies
    return MAX_REPETITION


# ---- helpers -------------------------------------------------------------------------

# Below this BER the gaps between errors are too long for int64; place a
# binomial number of errors uniformly instead (equally exact).
_TINY_BER = 1e-9
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(data: np.ndarray) -> int:
    """Number of set bits in a uint8 array."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return int(np.bitwise_count(data).sum(dtype=np.int64))
    return int(_POPCOUNT[data].sum(dtype=np.int64))


def error_positions(nbits: int, ber: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted distinct positions of independent bit errors with probability ``ber`` among ``nbits`` bits."""
    if nbits <= 0 or ber <= 0:
        return np.empty(0, dtype=np.int64)
    if ber >= 1:
        return np.arange(nbits, dtype=np.int64)
    if ber < _TINY_BER:
        count = int(rng.binomial(nbits, ber))
        return np.sort(rng.choice(nbits, size=count, replace=False, shuffle=False).astype(np.int64))
    mean = nbits * ber
    chunk = int(mean + 6 * math.sqrt(mean) + 16)
    parts, last = [], -1
    while last < nbits:  # almost always one pass
        positions = last + np.cumsum(rng.geometric(ber, size=chunk))
        parts.append(positions)
        last = int(positions[-1])
    positions = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return positions[: np.searchsorted(positions, nbits)]


def _packet_sizes(nbytes: int, packet_bytes: int) -> tuple[int, int]:
    """(number of full packets, size of the last partial packet or 0)."""
    return nbytes // packet_bytes, nbytes % packet_bytes


def _packet_count(nbytes: int, packet_bytes: int) -> int:
    return -(-nbytes // packet_bytes)


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, stop in ranges:
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], stop)
        else:
            merged.append((start, stop))
    return merged


def _flip(data: np.ndarray, positions: np.ndarray) -> None:
    """XOR the bits at sorted distinct ``positions`` into ``data`` (uint8, in place)."""
    if positions.size == 0:
        return
    byte = positions >> 3
    masks = np.left_shift(1, (positions & 7)).astype(np.uint8)
    starts = np.flatnonzero(np.concatenate(([True], byte[1:] != byte[:-1])))
    data[byte[starts]] ^= np.bitwise_or.reduceat(masks, starts)


# ---- links -----------------------------------------------------------------------------


class Link:
    """A channel model with one device's parameters; ``transmit`` is pure given the generator."""

    model: ClassVar[str] = ""

    def __init__(self, params: LinkParams):
        self.params = params

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"

    def channel(self, rng: np.random.Generator) -> Channel:
        """The channel's state for one transmission (drawn first, from ``rng``)."""
        raise NotImplementedError

    def repetition(self, ch: Channel) -> int:
        """Copies of each protected packet per send on channel state ``ch``."""
        p = self.params
        return choose_repetition(ch, p.packet_bytes) if p.protected_repetition == AUTO else p.protected_repetition

    def transmit(self, payload: Payload, rng: np.random.Generator) -> Transmission:
        p = self.params
        ch = self.channel(rng)
        copies = self.repetition(ch)
        framing = payload.framing_nbytes
        protected_nbytes = framing + sum(s.nbytes for s in payload.segments if s.protected)
        exposed_nbytes = sum(s.nbytes for s in payload.segments if not s.protected)
        n_protected = _packet_count(protected_nbytes, p.packet_bytes)
        stats = LinkStats(
            payload_bytes=protected_nbytes + exposed_nbytes,
            overhead_bytes=CRC_BYTES * n_protected,
            coding_bytes=(copies - 1) * (protected_nbytes + CRC_BYTES * n_protected),
            packets=n_protected + _packet_count(exposed_nbytes, p.packet_bytes),
            snr_db=ch.snr_db,
            ber=ch.ber,
            protected_repetition=copies,
        )
        rounds = self._send_protected(protected_nbytes, ch, copies, rng, stats)
        stats.bytes_sent = stats.payload_bytes + stats.overhead_bytes + stats.coding_bytes + stats.resent_bytes
        stats.bits_sent = 8 * stats.bytes_sent
        stats.airtime_s = stats.bits_sent / (p.bandwidth_mbps * 1e6) + p.latency_ms * 1e-3 * (1 + rounds)
        if not stats.delivered:
            return Transmission(None, stats)
        segments, erased = self._send_exposed(payload, ch, rng, stats)
        received = payload if segments is None else payload.with_segments(segments)
        return Transmission(received, stats, erased)

    # -- protected part: ARQ --------------------------------------------------------------
    def _send_protected(self, nbytes: int, ch: Channel, copies: int, rng: np.random.Generator, stats: LinkStats) -> int:
        """Draw the sends of every protected packet (``copies`` copies each); fill the stats; return the ARQ rounds."""
        p = self.params
        ber, loss = ch.combined(copies)
        if ber <= 0 and loss <= 0:
            return 0
        full, last = _packet_sizes(nbytes, p.packet_bytes)
        groups = [(full, p.packet_bytes), (1 if last else 0, last)]
        worst, first_failed = 1, None
        index = 0
        for count, size in groups:
            if count == 0:
                continue
            success = packet_success(8 * (size + CRC_BYTES), ber, loss)
            if success >= 1.0:
                sends = np.ones(count, dtype=np.int64)
            elif success <= 0.0:
                sends = np.full(count, p.max_attempts + 1, dtype=np.int64)
            else:
                sends = np.minimum(rng.geometric(success, size=count), p.max_attempts + 1)
            failed = np.flatnonzero(sends > p.max_attempts)
            if failed.size and first_failed is None:
                first_failed = index + int(failed[0])
            sends = np.minimum(sends, p.max_attempts)
            resent = int(sends.sum()) - count
            stats.retransmissions += resent
            stats.resent_bytes += resent * copies * (size + CRC_BYTES)
            worst = max(worst, int(sends.max()))
            index += count
        if first_failed is not None:
            stats.delivered = False
            stats.failure = f"protected packet {first_failed} not delivered after {p.max_attempts} attempts"
            if copies > 1:
                stats.failure += f" of {copies} copies"
        return worst - 1

    # -- exposed part: bit errors and erasures --------------------------------------------
    def _send_exposed(self, payload: Payload, ch: Channel, rng: np.random.Generator, stats: LinkStats):
        """Damage the exposed segments; return (segments or None if untouched, erased ranges)."""
        exposed = [s for s in payload.segments if not s.protected]
        if not exposed or (ch.ber <= 0 and ch.loss <= 0):
            return None, {}
        return self._damage_digital(payload, exposed, ch, rng, stats)

    def _damage_digital(self, payload, exposed, ch, rng, stats, *, changed=None):
        """Bit errors and packet erasures over the concatenated ``exposed`` segments."""
        pb = self.params.packet_bytes
        total = sum(s.nbytes for s in exposed)
        lost = np.empty(0, dtype=np.int64)
        if ch.loss > 0:
            lost = np.flatnonzero(rng.random(_packet_count(total, pb)) < ch.loss)
        positions = error_positions(8 * total, ch.ber, rng)
        if lost.size and positions.size:  # an erased packet's bits are zeros, not errors
            keep = ~np.isin(positions // (8 * pb), lost)
            positions = positions[keep]
        stats.packets_lost += int(lost.size)
        stats.bit_errors += int(positions.size)

        changed = {} if changed is None else changed
        erased: dict[str, list[tuple[int, int]]] = {}
        offset = 0
        for seg in exposed:
            start, stop = offset, offset + seg.nbytes
            offset = stop
            if start == stop:
                continue
            lo, hi = np.searchsorted(positions, [8 * start, 8 * stop])
            first_packet, end_packet = start // pb, -(-stop // pb)
            a, b = np.searchsorted(lost, [first_packet, end_packet])
            if lo == hi and a == b:
                continue
            data = np.frombuffer(seg.data, dtype=np.uint8).copy()
            _flip(data, positions[lo:hi] - 8 * start)
            ranges = []
            for packet in lost[a:b]:
                r0, r1 = max(int(packet) * pb, start) - start, min((int(packet) + 1) * pb, stop) - start
                data[r0:r1] = 0
                ranges.append((r0, r1))
            if ranges:
                erased[seg.name] = _merge(ranges)
            changed[seg.name] = seg.replace_data(data.tobytes())
        if not changed:
            return None, erased
        return [changed.get(s.name, s) for s in payload.segments], erased


class IdealLink(Link):
    model = "ideal"

    def channel(self, rng):
        return Channel(ber=0.0)

    def transmit(self, payload, rng):
        # No errors: the payload itself is the received one, nothing is copied.
        p = self.params
        copies = self.repetition(self.channel(rng))  # "auto": 1; a fixed repetition is still sent
        protected = payload.protected_nbytes
        total = payload.nbytes
        n_protected = _packet_count(protected, p.packet_bytes)
        coding = (copies - 1) * (protected + CRC_BYTES * n_protected)
        sent = total + CRC_BYTES * n_protected + coding
        stats = LinkStats(
            payload_bytes=total,
            overhead_bytes=CRC_BYTES * n_protected,
            coding_bytes=coding,
            protected_repetition=copies,
            bytes_sent=sent,
            bits_sent=8 * sent,
            packets=n_protected + _packet_count(total - protected, p.packet_bytes),
            airtime_s=8 * sent / (p.bandwidth_mbps * 1e6) + p.latency_ms * 1e-3,
        )
        return Transmission(payload, stats)


class BSCLink(Link):
    """Binary symmetric channel: every bit flips with probability ``ber``."""

    model = "bsc"

    def channel(self, rng):
        return Channel(ber=self.params.ber)


class AWGNLink(Link):
    """Digital modulation over AWGN at Eb/N0 ``snr_db``: a BSC with the closed-form BER."""

    model = "awgn"

    def channel(self, rng):
        p = self.params
        return Channel(ber=ber_from_snr(p.snr_db, p.modulation), snr_db=p.snr_db, modulation=p.modulation)


class FadingLink(Link):
    """Block Rayleigh fading: one gain |h|^2 ~ Exp(1) per transmission, then AWGN."""

    model = "fading"

    def channel(self, rng):
        p = self.params
        gain = float(rng.exponential(1.0))
        snr_db = p.snr_db + 10.0 * math.log10(gain) if gain > 0 else -math.inf
        return Channel(ber=ber_from_snr(snr_db, p.modulation), snr_db=snr_db, modulation=p.modulation)


class ErasureLink(Link):
    """Packet erasures: exposed packets lost with probability ``loss``, protected ones resent."""

    model = "erasure"

    def channel(self, rng):
        return Channel(ber=0.0, loss=self.params.loss)


class AnalogLink(Link):
    """Analog transmission of real values: Gaussian noise at ``snr_db`` relative to the signal power.

    Exposed float segments (F32/F16) are decoded, get noise of variance
    mean(x^2) / 10^(snr/10) (power measured per segment), and are re-encoded in
    the same dtype (F16 saturates at its largest finite value). Everything
    else, exposed non-float segments and the protected part, is sent digitally
    with BPSK at Eb/N0 = ``snr_db`` (the protected packets' copies combined by MRC).
    """

    model = "analog"

    def channel(self, rng):
        p = self.params
        return Channel(ber=ber_from_snr(p.snr_db, "bpsk"), snr_db=p.snr_db, modulation="bpsk")

    def _send_exposed(self, payload, ch, rng, stats):
        exposed = [s for s in payload.segments if not s.protected]
        digital = [s for s in exposed if s.fmt not in (FORMAT_F32, FORMAT_F16)]
        changed: dict[str, Segment] = {}
        if digital and ch.ber > 0:
            segments, _ = self._damage_digital(payload, digital, ch, rng, stats, changed=changed)
        noise_ratio = 10.0 ** (-self.params.snr_db / 10.0)
        for seg in exposed:
            if seg.fmt not in (FORMAT_F32, FORMAT_F16) or seg.nbytes == 0:
                continue
            dtype = np.dtype("<f4") if seg.fmt == FORMAT_F32 else np.dtype("<f2")
            x = np.frombuffer(seg.data, dtype=dtype).astype(np.float32)
            # mean of squares in float64 without BLAS (np.dot's threads stall on a busy machine)
            power = float(np.mean(np.square(x, dtype=np.float64)))
            sigma = math.sqrt(power * noise_ratio)
            y = x + rng.standard_normal(x.size, dtype=np.float32) * np.float32(sigma)
            if seg.fmt == FORMAT_F16:
                limit = float(np.finfo(np.float16).max)
                y = np.clip(y, -limit, limit)
            out = y.astype(dtype).tobytes()
            diff = np.frombuffer(out, dtype=np.uint8) ^ np.frombuffer(seg.data, dtype=np.uint8)
            stats.bit_errors += _popcount(diff)
            changed[seg.name] = seg.replace_data(out)
        if not changed:
            return None, {}
        return [changed.get(s.name, s) for s in payload.segments], {}


_LINKS: dict[str, type[Link]] = {cls.model: cls for cls in (IdealLink, BSCLink, AWGNLink, AnalogLink, ErasureLink, FadingLink)}


def make_link(params: LinkParams) -> Link:
    """The link of one device, by ``params.model``."""
    return _LINKS[params.model](params)
