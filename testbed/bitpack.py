"""Integer codes of the wire: bit-packed b-bit integers and LEB128 varints.

Bit-packing: n unsigned b-bit values cost exactly ceil(n*b/8) bytes. Bit
order is little-endian throughout: value i occupies bits [i*b, (i+1)*b) of
the stream, least significant bit first, and stream bit j is bit (j % 8) of
byte j // 8. Widths 8 and 16 are plain byte copies; 1, 2 and 4 pack whole
values into bytes with shifts; other widths work on groups of 8 values (exactly
b bytes), each value spread over the (at most 3) bytes it touches, so every
step is a whole-array numpy operation.

Varints (unsigned LEB128): 7 bits a byte, least significant group first, the
high bit set on every byte but the last; 0 is one byte ``00``. They carry
counts and lengths whose size is not known in advance (payload headers,
rANS histograms).
"""

from __future__ import annotations

import numpy as np


def packed_nbytes(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def pack(values: np.ndarray, bits: int) -> bytes:
    """Pack unsigned integers below 2**bits into a byte string."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bit width must be in 1..16, got {bits}")
    values = np.ascontiguousarray(values).reshape(-1)
    if bits == 16:
        return values.astype("<u2", copy=False).tobytes()
    if bits == 8:
        return values.astype(np.uint8, copy=False).tobytes()
    if bits in (1, 2, 4):
        per_byte = 8 // bits
        v = values.astype(np.uint8, copy=False)
        pad = (-len(v)) % per_byte
        if pad:
            v = np.concatenate([v, np.zeros(pad, np.uint8)])
        v = v.reshape(-1, per_byte)
        out = np.zeros(len(v), np.uint8)
        for k in range(per_byte):
            out |= v[:, k] << np.uint8(k * bits)
        return out.tobytes()
    count = len(values)
    groups = -(-count // 8)
    v = np.zeros(groups * 8, np.uint32)
    v[:count] = values
    v &= np.uint32((1 << bits) - 1)  # only the low b bits of each value, as the other paths
    v = np.ascontiguousarray(v.reshape(groups, 8).T)  # row i: value i of every group
    out = np.zeros((bits + 2, groups), np.uint32)  # row j: byte j of every group (+2 spill rows)
    for i in range(8):
        start, shift = divmod(i * bits, 8)
        word = v[i] << np.uint32(shift)
        out[start] |= word & np.uint32(0xFF)
        out[start + 1] |= (word >> np.uint32(8)) & np.uint32(0xFF)
        out[start + 2] |= word >> np.uint32(16)
    return out[:bits].T.astype(np.uint8).tobytes()[: packed_nbytes(count, bits)]


def unpack(data: bytes, count: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack`; returns ``count`` values as uint16 (uint8 for b <= 8)."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bit width must be in 1..16, got {bits}")
    if len(data) != packed_nbytes(count, bits):
        raise ValueError(f"{len(data)} bytes cannot hold exactly {count} values of {bits} bits")
    raw = np.frombuffer(data, dtype=np.uint8)
    if bits == 16:
        return np.frombuffer(data, dtype="<u2").astype(np.uint16)
    if bits == 8:
        return raw.copy()
    if bits in (1, 2, 4):
        per_byte = 8 // bits
        mask = np.uint8((1 << bits) - 1)
        out = np.empty((len(raw), per_byte), np.uint8)
        for k in range(per_byte):
            out[:, k] = (raw >> np.uint8(k * bits)) & mask
        return out.reshape(-1)[:count]
    groups = -(-count // 8)
    padded = np.zeros(groups * bits, np.uint8)
    padded[: len(raw)] = raw
    grid = np.zeros((bits + 2, groups), np.uint32)  # row j: byte j of every group
    grid[:bits] = padded.reshape(groups, bits).T
    mask = np.uint32((1 << bits) - 1)
    values = np.empty((8, groups), np.uint16)
    for i in range(8):
        start, shift = divmod(i * bits, 8)
        word = grid[start] | (grid[start + 1] << np.uint32(8)) | (grid[start + 2] << np.uint32(16))
        values[i] = (word >> np.uint32(shift)) & mask
    values = values.T.reshape(-1)[:count]
    return values.astype(np.uint8) if bits < 8 else values


# ---- varints -------------------------------------------------------------------------

MAX_VARINT_BYTES = 10  # enough for any 64-bit value


class VarintError(ValueError):
    """A varint that runs past the end of its buffer or over 64 bits."""


def varints(values) -> bytes:
    """The LEB128 varints of non-negative integers, concatenated."""
    out = bytearray()
    for n in values:
        n = int(n)
        if n < 0:
            raise ValueError(f"varints are unsigned, got {n}")
        while n >= 0x80:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)
    return bytes(out)


def read_varints(buf: bytes, pos: int, count: int) -> tuple[list[int], int]:
    """Read ``count`` varints from ``buf`` at ``pos``; return them and the position after."""
    values = []
    for _ in range(count):
        value = shift = 0
        for _ in range(MAX_VARINT_BYTES):
            if pos >= len(buf):
                raise VarintError("truncated varint")
            byte = buf[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
        else:
            raise VarintError(f"varint longer than {MAX_VARINT_BYTES} bytes")
        values.append(value)
    return values, pos


def read_varint_array(buf: bytes, pos: int, count: int) -> tuple[np.ndarray, int]:
    """:func:`read_varints` as a uint64 array, vectorised (histograms of hundreds of varints).

    Varints of up to 8 bytes (56 bits) are read with numpy; anything else (longer ones, a
    truncated buffer) goes through :func:`read_varints`, which raises the same errors as ever.
    """
    data = np.frombuffer(buf, dtype=np.uint8, count=min(len(buf) - pos, MAX_VARINT_BYTES * count), offset=pos) \
        if 0 <= pos <= len(buf) else np.zeros(0, np.uint8)
    ends = np.flatnonzero(data < 0x80)[:count]
    if len(ends) == count and count:
        starts = np.concatenate(([0], ends[:-1] + 1))
        lengths = ends - starts + 1
        if int(lengths.max()) <= 8:
            values = np.zeros(count, np.uint64)
            for k in range(int(lengths.max())):
                has = lengths > k
                values[has] |= (data[starts[has] + k] & np.uint8(0x7F)).astype(np.uint64) << np.uint64(7 * k)
            return values, pos + int(ends[-1]) + 1
    values, end = read_varints(buf, pos, count)
    return np.array(values, dtype=np.uint64) if all(v < 1 << 64 for v in values) else np.array(values, dtype=object), end
