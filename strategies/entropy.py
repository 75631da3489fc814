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

from testbed.bitpack import VarintError, read_varint_array, read_varints, varints


class EntropyDecodeError(ValueError):
    pass


def _model(counts: np.ndarray):
    return constriction.stream.model.Categorical(counts.astype(np.float64), perfect=False)


def encode_histogram(symbols_present: np.ndarray, counts: np.ndarray) -> bytes:
    gaps = np.diff(symbols_present, prepend=0)
    interleaved = np.empty(2 * len(counts), dtype=np.int64)
    interleaved[0::2] = gaps
    interleaved[1::2] = counts
    return varints([len(counts)]) + varints(interleaved.tolist())


def decode_histogram(buf: bytes, alphabet: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Return (symbols present, their counts, bytes read)."""
    try:
        (distinct,), pos = read_varints(buf, 0, 1)
        if distinct > alphabet:
            raise EntropyDecodeError(f"histogram lists {distinct} symbols, alphabet has {alphabet}")
        pairs, pos = read_varint_array(buf, pos, 2 * distinct)
    except VarintError as exc:
        raise EntropyDecodeError(f"histogram: {exc}") from None
    # Bound the values before they become int64: a damaged varint can exceed it (OverflowError).
    if np.any(pairs[0::2] >= alphabet) or np.any(pairs[1::2] >= 1 << 40):
        raise EntropyDecodeError("histogram gap or count out of range")
    symbols = np.cumsum(pairs[0::2].astype(np.int64))
    counts = pairs[1::2].astype(np.int64)
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
    present, dense = decode_indices(histogram, stream, count, alphabet)
    return present[dense]


def decode_indices(histogram: bytes, stream: bytes, count: int, alphabet: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`decode` as (symbols present, index of each decoded symbol among them): a caller that
    maps symbols to values maps the few present ones and gathers once."""
    present, counts, used = decode_histogram(histogram, alphabet)
    if used != len(histogram):
        raise EntropyDecodeError("trailing bytes after the histogram")
    if int(counts.sum()) != count:
        raise EntropyDecodeError(f"histogram counts {int(counts.sum())} symbols, expected {count}")
    if len(present) <= 1:
        if stream:
            raise EntropyDecodeError("stream present for a constant array")
        return (present if len(present) else np.zeros(1, np.int64)), np.zeros(count, np.int32)
    if not stream:
        raise EntropyDecodeError(f"empty stream for {len(present)} distinct symbols")
    if len(stream) % 4:
        raise EntropyDecodeError("stream length is not a whole number of 32-bit words")
    try:  # constriction raises its own errors on garbage, from the constructor on
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(stream, dtype="<u4").astype(np.uint32))
        dense = coder.decode(_model(counts), count)
        left_over = not coder.is_empty()
    except Exception as exc:
        raise EntropyDecodeError(f"stream does not decode: {exc}") from None
    if left_over:
        raise EntropyDecodeError("stream has data left after the last symbol")
    # The histogram holds the exact counts of the symbols coded: a stream that decodes to
    # other counts was not made from it (a sender that wrote nonsense).
    if not np.array_equal(np.bincount(dense, minlength=len(counts)), counts):
        raise EntropyDecodeError("decoded symbols do not match the histogram's counts")
    return present, dense


def entropy_bits(symbols: np.ndarray) -> float:
    """Empirical entropy of the symbols, in bits in total."""
    counts = np.bincount(np.asarray(symbols).reshape(-1).astype(np.int64))
    counts = counts[counts > 0]
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum())
