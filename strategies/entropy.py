"""rANS entropy coding of quantised symbols (constriction), histogram as side information.

The histogram travels sparse: the number of distinct symbols, then for each
symbol present the gap from the previous one and its count, all as varints.
Only symbols present get a slot in the coder's alphabet, so a 16-bit code
costs no more side information than the values it actually uses. Encoder and
decoder build the same model from the same counts (``perfect=False`` on both
sides), which is what makes the stream decodable.
"""

from __future__ import annotations

import constriction
import numpy as np


class EntropyDecodeError(ValueError):
    pass


def _varints(values: np.ndarray) -> bytes:
    out = bytearray()
    for n in values.tolist():
        while n >= 0x80:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)
    return bytes(out)


def _read_varints(buf: bytes, pos: int, count: int) -> tuple[list[int], int]:
    values = []
    for _ in range(count):
        value = shift = 0
        while True:
            if pos >= len(buf):
                raise EntropyDecodeError("histogram truncated")
            byte = buf[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 63:
                raise EntropyDecodeError("histogram varint too long")
        values.append(value)
    return values, pos


def _model(counts: np.ndarray):
    return constriction.stream.model.Categorical(counts.astype(np.float64), perfect=False)


def encode_histogram(symbols_present: np.ndarray, counts: np.ndarray) -> bytes:
    gaps = np.diff(symbols_present, prepend=0)
    interleaved = np.empty(2 * len(counts), dtype=np.int64)
    interleaved[0::2] = gaps
    interleaved[1::2] = counts
    return _varints(np.array([len(counts)])) + _varints(interleaved)


def decode_histogram(buf: bytes, alphabet: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Return (symbols present, their counts, bytes read)."""
    (distinct,), pos = _read_varints(buf, 0, 1)
    if distinct > alphabet:
        raise EntropyDecodeError(f"histogram lists {distinct} symbols, alphabet has {alphabet}")
    pairs, pos = _read_varints(buf, pos, 2 * distinct)
    # Bound the values before they become int64: a damaged varint can exceed it (OverflowError).
    if any(gap >= alphabet for gap in pairs[0::2]) or any(c >= 1 << 40 for c in pairs[1::2]):
        raise EntropyDecodeError("histogram gap or count out of range")
    symbols = np.cumsum(np.array(pairs[0::2], dtype=np.int64))
    counts = np.array(pairs[1::2], dtype=np.int64)
    if distinct and (symbols[-1] >= alphabet or np.any(np.diff(symbols) <= 0) or np.any(counts == 0)):
        raise EntropyDecodeError("histogram symbols out of range, repeated or with zero count")
    return symbols, counts, pos


def encode(symbols: np.ndarray) -> tuple[bytes, bytes]:
    """rANS-code non-negative integer symbols; return (histogram side information, stream)."""
    symbols = np.asarray(symbols).reshape(-1).astype(np.int64, copy=False)
    full_counts = np.bincount(symbols) if len(symbols) else np.zeros(0, np.int64)
    present = np.flatnonzero(full_counts)
    counts = full_counts[present]
    dense_of = np.zeros(len(full_counts), np.int32)
    dense_of[present] = np.arange(len(present), dtype=np.int32)
    dense = dense_of[symbols]
    histogram = encode_histogram(present.astype(np.int64), counts)
    if len(present) <= 1:  # a constant array is fully described by its histogram
        return histogram, b""
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(dense.astype(np.int32), _model(counts))
    return histogram, coder.get_compressed().astype("<u4").tobytes()


def decode(histogram: bytes, stream: bytes, count: int, alphabet: int) -> np.ndarray:
    """Inverse of :func:`encode` for ``count`` symbols below ``alphabet``."""
    present, counts, used = decode_histogram(histogram, alphabet)
    if used != len(histogram):
        raise EntropyDecodeError("trailing bytes after the histogram")
    if int(counts.sum()) != count:
        raise EntropyDecodeError(f"histogram counts {int(counts.sum())} symbols, expected {count}")
    if len(present) <= 1:
        if stream:
            raise EntropyDecodeError("stream present for a constant array")
        return np.full(count, present[0] if len(present) else 0, dtype=np.int64)
    if len(stream) % 4:
        raise EntropyDecodeError("stream length is not a whole number of 32-bit words")
    coder = constriction.stream.stack.AnsCoder(np.frombuffer(stream, dtype="<u4").astype(np.uint32))
    try:
        dense = coder.decode(_model(counts), count)
    except Exception as exc:  # constriction raises its own types on garbage
        raise EntropyDecodeError(f"stream does not decode: {exc}") from None
    if not coder.is_empty():
        raise EntropyDecodeError("stream has data left after the last symbol")
    return present[dense]


def entropy_bits(symbols: np.ndarray) -> float:
    """Empirical entropy of the symbols, in bits in total."""
    counts = np.bincount(np.asarray(symbols).reshape(-1).astype(np.int64))
    counts = counts[counts > 0]
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum())
