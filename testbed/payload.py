"""What crosses a link: an ordered list of named segments with an exact wire size.

Wire format (all integers little-endian, lengths as LEB128 varints):

    magic  b"TBP" + version byte                      4 bytes
    number of segments                                varint
    per segment: name length (u8), name (utf-8),
                 format byte, protected byte, data length (varint)
    header CRC-32 over everything above               4 bytes
    segment data, concatenated in order
    CRC-32 over the protected segments' data          4 bytes

The header and both checksums are side information: they are protected and
counted in the payload's size. Exposed segments carry fixed-width values; bit
errors in them are channel damage that decodes to wrong values, not an error.
Damage to the header or to a protected segment is detected by the checksums
and raised as :class:`PayloadError`. Nothing here unpickles or evaluates input.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

MAGIC = b"TBP\x01"
MAX_SEGMENTS = 1 << 16
MAX_NAME = 255


class PayloadError(ValueError):
    """The one error a receiver sees for a payload it cannot decode.

    ``segment`` names the segment (or ``"header"``) and the message says what
    was wrong with it.
    """

    def __init__(self, segment: str, problem: str):
        self.segment = segment
        self.problem = problem
        super().__init__(f"payload segment '{segment}': {problem}")


# Format byte: what the data of a segment holds. Links use it to know which
# segments hold real values (the analog link noises those) and decoders use it
# to check they read what they expect.
FORMAT_BYTES = 0  # opaque bytes (side information, entropy-coded streams)
FORMAT_F32 = 1  # little-endian float32 array
FORMAT_F16 = 2  # little-endian float16 array
FORMAT_PACKED = 16  # + b: unsigned b-bit integers, bit-packed (b in 1..16)


def packed_format(bits: int) -> int:
    if not 1 <= bits <= 16:
        raise ValueError(f"bit width must be in 1..16, got {bits}")
    return FORMAT_PACKED + bits


def format_bits(fmt: int) -> int | None:
    """Bit width of a packed-integer format, or None for other formats."""
    return fmt - FORMAT_PACKED if FORMAT_PACKED < fmt <= FORMAT_PACKED + 16 else None


def is_float_format(fmt: int) -> bool:
    return fmt in (FORMAT_F32, FORMAT_F16)


_KNOWN_FORMATS = {FORMAT_BYTES, FORMAT_F32, FORMAT_F16} | {FORMAT_PACKED + b for b in range(1, 17)}


@dataclass(frozen=True)
class Segment:
    name: str
    data: bytes
    protected: bool
    fmt: int = FORMAT_BYTES

    def __post_init__(self):
        encoded = self.name.encode("utf-8")
        if not 0 < len(encoded) <= MAX_NAME:
            raise ValueError(f"segment name must be 1..{MAX_NAME} utf-8 bytes: {self.name!r}")
        if self.fmt not in _KNOWN_FORMATS:
            raise ValueError(f"unknown segment format {self.fmt} for {self.name!r}")
        if not isinstance(self.data, bytes):
            object.__setattr__(self, "data", bytes(self.data))

    @property
    def nbytes(self) -> int:
        return len(self.data)

    def replace_data(self, data: bytes) -> "Segment":
        return Segment(self.name, data, self.protected, self.fmt)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    value = shift = 0
    for _ in range(10):
        if pos >= len(buf):
            raise PayloadError("header", f"truncated while reading {what}")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise PayloadError("header", f"varint for {what} is too long")


@dataclass
class Payload:
    segments: list[Segment] = field(default_factory=list)

    def __post_init__(self):
        names = [s.name for s in self.segments]
        if len(set(names)) != len(names):
            raise ValueError("segment names must be unique")
        if len(self.segments) > MAX_SEGMENTS:
            raise ValueError(f"at most {MAX_SEGMENTS} segments")

    # ---- sizes -------------------------------------------------------------
    def header_bytes(self) -> bytes:
        parts = [MAGIC, _varint(len(self.segments))]
        for s in self.segments:
            name = s.name.encode("utf-8")
            parts += [bytes([len(name)]), name, bytes([s.fmt, int(s.protected)]), _varint(s.nbytes)]
        body = b"".join(parts)
        return body + zlib.crc32(body).to_bytes(4, "little")

    @property
    def framing_nbytes(self) -> int:
        """Bytes of header and checksums: protected side information."""
        return len(self.header_bytes()) + 4

    @property
    def nbytes(self) -> int:
        """Exact size on the wire."""
        return self.framing_nbytes + sum(s.nbytes for s in self.segments)

    @property
    def protected_nbytes(self) -> int:
        return self.framing_nbytes + sum(s.nbytes for s in self.segments if s.protected)

    @property
    def exposed_nbytes(self) -> int:
        return self.nbytes - self.protected_nbytes

    # ---- access --------------------------------------------------------------
    def __getitem__(self, name: str) -> Segment:
        for s in self.segments:
            if s.name == name:
                return s
        raise PayloadError(name, "missing from payload")

    def get(self, name: str) -> Segment | None:
        for s in self.segments:
            if s.name == name:
                return s
        return None

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None

    def names(self) -> list[str]:
        return [s.name for s in self.segments]

    def with_segments(self, segments: list[Segment]) -> "Payload":
        return Payload(list(segments))

    # ---- wire ------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        protected_crc = 0
        for s in self.segments:
            if s.protected:
                protected_crc = zlib.crc32(s.data, protected_crc)
        return b"".join(
            [self.header_bytes(), *(s.data for s in self.segments), protected_crc.to_bytes(4, "little")]
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> "Payload":
        buf = bytes(buf)
        if len(buf) < len(MAGIC) or buf[: len(MAGIC)] != MAGIC:
            raise PayloadError("header", "not a testbed payload (bad magic or version)")
        pos = len(MAGIC)
        count, pos = _read_varint(buf, pos, "segment count")
        if count > MAX_SEGMENTS:
            raise PayloadError("header", f"segment count {count} exceeds {MAX_SEGMENTS}")
        table = []
        for index in range(count):
            if pos >= len(buf):
                raise PayloadError("header", f"truncated in the entry of segment {index}")
            name_len = buf[pos]
            pos += 1
            raw_name = buf[pos : pos + name_len]
            if len(raw_name) != name_len or name_len == 0:
                raise PayloadError("header", f"truncated or empty name of segment {index}")
            pos += name_len
            if pos + 2 > len(buf):
                raise PayloadError("header", f"truncated in the entry of segment {index}")
            fmt, protected = buf[pos], buf[pos + 1]
            pos += 2
            length, pos = _read_varint(buf, pos, f"length of segment {index}")
            table.append((raw_name, fmt, protected, length))
        if pos + 4 > len(buf):
            raise PayloadError("header", "truncated before the header checksum")
        if zlib.crc32(buf[:pos]) != int.from_bytes(buf[pos : pos + 4], "little"):
            raise PayloadError("header", "header checksum mismatch (corrupted segment table)")
        pos += 4
        # The checksum passed, so the table is what the sender wrote; the rest
        # of the checks guard against a sender that wrote nonsense.
        segments = []
        protected_crc = 0
        for raw_name, fmt, protected, length in table:
            try:
                name = raw_name.decode("utf-8")
            except UnicodeDecodeError:
                raise PayloadError("header", "segment name is not utf-8") from None
            if fmt not in _KNOWN_FORMATS or protected not in (0, 1):
                raise PayloadError(name, f"unknown format {fmt} or protection flag {protected}")
            data = buf[pos : pos + length]
            if len(data) != length:
                raise PayloadError(name, f"truncated: {len(data)} of {length} bytes present")
            pos += length
            if protected:
                protected_crc = zlib.crc32(data, protected_crc)
            segments.append(Segment(name, data, bool(protected), fmt))
        if len(buf) - pos != 4:
            raise PayloadError("trailer", f"expected a 4-byte checksum, found {len(buf) - pos} bytes")
        if protected_crc != int.from_bytes(buf[pos:], "little"):
            raise PayloadError("trailer", "checksum of protected segments mismatch (side information corrupted)")
        try:
            return cls(segments)
        except ValueError as exc:
            raise PayloadError("header", str(exc)) from None

    # ---- reporting -------------------------------------------------------------
    def breakdown(self) -> list[dict]:
        rows = [{"name": "framing", "bytes": self.framing_nbytes, "protected": True}]
        rows += [{"name": s.name, "bytes": s.nbytes, "protected": s.protected} for s in self.segments]
        return rows


def float_array(segment: Segment, count: int) -> np.ndarray:
    """Read a float segment holding exactly ``count`` values, as float32."""
    dtype = {FORMAT_F32: "<f4", FORMAT_F16: "<f2"}.get(segment.fmt)
    if dtype is None:
        raise PayloadError(segment.name, f"expected float values, found format {segment.fmt}")
    expected = count * np.dtype(dtype).itemsize
    if segment.nbytes != expected:
        raise PayloadError(segment.name, f"holds {segment.nbytes} bytes, expected {expected} for {count} values")
    return np.frombuffer(segment.data, dtype=dtype).astype(np.float32)
