"""Packets and bit damage: how many packets a part takes, where bit errors fall, and flipping or erasing them.

Bit errors are placed by drawing the gaps between them (geometric), so the cost grows with
the number of errors, not of bits; segments without damage are passed through without
copying.
"""

from __future__ import annotations

import math

import numpy as np

from testbed.payload import Segment

# Below this BER the gaps between errors are too long for int64; place a
# binomial number of errors uniformly instead (equally exact).
_TINY_BER = 1e-9
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def count(nbytes: int, packet_bytes: int) -> int:
    """Packets of ``packet_bytes`` (the last may be shorter) that ``nbytes`` take."""
    return -(-nbytes // packet_bytes)


def groups(nbytes: int, packet_bytes: int) -> list[tuple[int, int]]:
    """[(number of packets, bytes of each)]: the full packets, then the shorter last one, if any."""
    full, last = divmod(nbytes, packet_bytes)
    return [(n, size) for n, size in ((full, packet_bytes), (1 if last else 0, last)) if n]


def popcount(data: np.ndarray) -> int:
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
        n = int(rng.binomial(nbits, ber))
        return np.sort(rng.choice(nbits, size=n, replace=False, shuffle=False).astype(np.int64))
    mean = nbits * ber
    chunk = int(mean + 6 * math.sqrt(mean) + 16)
    parts, last = [], -1
    while last < nbits:  # almost always one pass
        positions = last + np.cumsum(rng.geometric(ber, size=chunk))
        parts.append(positions)
        last = int(positions[-1])
    positions = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return positions[: np.searchsorted(positions, nbits)]


def flip(data: np.ndarray, positions: np.ndarray) -> None:
    """XOR the bits at sorted distinct ``positions`` into ``data`` (uint8, in place)."""
    if positions.size == 0:
        return
    byte = positions >> 3
    masks = np.left_shift(1, (positions & 7)).astype(np.uint8)
    starts = np.flatnonzero(np.concatenate(([True], byte[1:] != byte[:-1])))
    data[byte[starts]] ^= np.bitwise_or.reduceat(masks, starts)


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, stop in ranges:
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], stop)
        else:
            merged.append((start, stop))
    return merged


def damage(exposed: list[Segment], ch, packet_bytes: int, rng: np.random.Generator, stats):
    """Packet erasures and bit errors of ``ch`` over the concatenated ``exposed`` segments.

    Returns ({name: damaged segment}, {name: erased byte ranges}); an erased packet's bytes
    arrive as zeros (its bits are not counted as errors). Fills ``bit_errors`` and
    ``packets_lost`` of ``stats``.
    """
    pb = packet_bytes
    total = sum(s.nbytes for s in exposed)
    lost = np.empty(0, dtype=np.int64)
    if ch.loss > 0:
        lost = np.flatnonzero(rng.random(count(total, pb)) < ch.loss)
    positions = ch.error_positions(8 * total, rng)
    if lost.size and positions.size:
        positions = positions[~np.isin(positions // (8 * pb), lost)]
    stats.packets_lost += int(lost.size)
    stats.bit_errors += int(positions.size)

    changed: dict[str, Segment] = {}
    erased: dict[str, list[tuple[int, int]]] = {}
    offset = 0
    for seg in exposed:
        start, stop = offset, offset + seg.nbytes
        offset = stop
        if start == stop:
            continue
        lo, hi = np.searchsorted(positions, [8 * start, 8 * stop])
        a, b = np.searchsorted(lost, [start // pb, -(-stop // pb)])
        if lo == hi and a == b:
            continue
        data = np.frombuffer(seg.data, dtype=np.uint8).copy()
        flip(data, positions[lo:hi] - 8 * start)
        ranges = []
        for packet in lost[a:b]:
            r0, r1 = max(int(packet) * pb, start) - start, min((int(packet) + 1) * pb, stop) - start
            data[r0:r1] = 0
            ranges.append((r0, r1))
        if ranges:
            erased[seg.name] = _merge(ranges)
        changed[seg.name] = seg.replace_data(data.tobytes())
    return changed, erased
