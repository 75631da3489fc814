"""What crosses a link: an ordered list of named segments with an exact wire size.

Both ends know the model architecture and the strategy, so the names, formats,
protection and most lengths of the segments are not sent: they form the
payload's *schema* (:class:`PayloadSchema`), which sender and receiver derive
from the same template and options (``Strategy.payload_schema``). The wire
carries a 4-byte fingerprint of the schema and only what the schema leaves
open (lengths of entropy-coded streams, for instance).

Wire format (integers little-endian, open lengths as LEB128 varints):

    format version (2)                                          1 byte
    schema fingerprint                                          4 bytes
    per segment of the schema, in order, what it leaves open:
        optional segment: varint, 0 if absent, else 1 + its length
        open length: varint length
        open format or protection (present segments): format | 0x80 if protected   1 byte
    segment data, concatenated in schema order
    CRC-32 of the header and of the protected segments' data      4 bytes

The header and the checksum are side information: protected, and counted in
the payload's size (``framing_nbytes``). Exposed segments carry fixed-width
values; bit errors in them are channel damage that decodes to wrong values,
not an error. Damage to the header or to a protected segment fails the
checksum and is raised as :class:`PayloadError`; so is a payload for another
schema (fingerprint). Nothing here unpickles or evaluates input.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from testbed.bitpack import VarintError, read_varints, varints

VERSION = 2
FINGERPRINT_BYTES = 4
CRC_BYTES = 4
PROTECTED_BIT = 0x80  # of the form byte of a segment whose format or protection is open


class PayloadError(ValueError):
    """The one error a receiver sees for a payload it cannot decode.

    ``segment`` names the segment (or ``"header"``, ``"trailer"``) and the
    message says what was wrong with it.
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

_FLOAT_DTYPES = {FORMAT_F32: np.dtype("<f4"), FORMAT_F16: np.dtype("<f2")}
_KNOWN_FORMATS = {FORMAT_BYTES, *_FLOAT_DTYPES} | {FORMAT_PACKED + b for b in range(1, 17)}


def packed_format(bits: int) -> int:
    if not 1 <= bits <= 16:
        raise ValueError(f"bit width must be in 1..16, got {bits}")
    return FORMAT_PACKED + bits


def format_bits(fmt: int) -> int | None:
    """Bit width of a packed-integer format, or None for other formats."""
    return fmt - FORMAT_PACKED if FORMAT_PACKED < fmt <= FORMAT_PACKED + 16 else None


def is_float_format(fmt: int) -> bool:
    return fmt in _FLOAT_DTYPES


@dataclass(frozen=True)
class Segment:
    name: str
    data: bytes
    protected: bool
    fmt: int = FORMAT_BYTES

    def __post_init__(self):
        if not (isinstance(self.name, str) and self.name):
            raise ValueError(f"segment name must be a non-empty string: {self.name!r}")
        if self.fmt not in _KNOWN_FORMATS:
            raise ValueError(f"unknown segment format {self.fmt} for {self.name!r}")
        if not isinstance(self.data, bytes):
            object.__setattr__(self, "data", bytes(self.data))

    @property
    def nbytes(self) -> int:
        return len(self.data)

    def replace_data(self, data: bytes) -> "Segment":
        return Segment(self.name, data, self.protected, self.fmt)


def expect_nbytes(segment: Segment, expected: int, detail: str = "") -> None:
    """The one size check of segment data: ``segment`` must hold exactly ``expected`` bytes."""
    if segment.nbytes != expected:
        raise PayloadError(segment.name, f"holds {segment.nbytes} bytes, expected {expected}{detail}")


# ---- schema ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentSpec:
    """What both ends know of one segment; None (and ``optional``) is what the wire carries."""

    name: str
    fmt: int | None = FORMAT_BYTES
    protected: bool | None = True
    nbytes: int | None = None
    optional: bool = False  # the segment may be absent; its presence and length are sent

    def __post_init__(self):
        if not (isinstance(self.name, str) and self.name):
            raise ValueError(f"segment name must be a non-empty string: {self.name!r}")
        if self.fmt is not None and self.fmt not in _KNOWN_FORMATS:
            raise ValueError(f"unknown segment format {self.fmt} for {self.name!r}")

    @property
    def open_length(self) -> bool:
        return self.optional or self.nbytes is None

    @property
    def open_form(self) -> bool:
        return self.fmt is None or self.protected is None

    def check(self, segment: Segment) -> None:
        """Raise a PayloadError naming ``segment`` if it does not fit this spec."""
        if self.fmt is not None and segment.fmt != self.fmt:
            raise PayloadError(segment.name, f"format {segment.fmt}, expected {self.fmt}")
        if self.protected is not None and segment.protected != self.protected:
            found = "protected, expected exposed" if segment.protected else "exposed, expected protected"
            raise PayloadError(segment.name, found)
        if self.nbytes is not None:
            expect_nbytes(segment, self.nbytes)

    def line(self) -> str:
        return f"{self.name}\t{self.fmt}\t{self.protected}\t{self.nbytes}\t{self.optional}"


@dataclass(frozen=True)
class PayloadSchema:
    """The ordered segments of a payload as both ends know them, and their fingerprint.

    ``identity`` says whose schema it is (a strategy's name, options and
    template); the fingerprint hashes it with the specs, so a payload for
    another model or strategy is refused on arrival.
    """

    specs: tuple[SegmentSpec, ...]
    identity: str = ""
    fingerprint: bytes = field(init=False, repr=False)
    _index: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        specs = tuple(self.specs)
        index = {spec.name: i for i, spec in enumerate(specs)}
        if len(index) != len(specs):
            raise ValueError("segment names of a schema must be unique")
        text = "\n".join([self.identity, *(spec.line() for spec in specs)])
        object.__setattr__(self, "specs", specs)
        object.__setattr__(self, "fingerprint", hashlib.blake2b(text.encode(), digest_size=FINGERPRINT_BYTES).digest())
        object.__setattr__(self, "_index", index)

    @classmethod
    def of_segments(cls, segments: Iterable[Segment]) -> "PayloadSchema":
        """The schema of a payload built by hand: its own segments, everything fixed."""
        return cls(tuple(SegmentSpec(s.name, s.fmt, s.protected, s.nbytes) for s in segments))

    def names(self) -> list[str]:
        return [spec.name for spec in self.specs]

    def check(self, segments: list[Segment]) -> None:
        """Raise a PayloadError naming the first segment that does not follow this schema."""
        last = -1
        for segment in segments:
            index = self._index.get(segment.name)
            if index is None:
                raise PayloadError(segment.name, "surplus: not a segment of the receiver's schema")
            self.specs[index].check(segment)
            if index < last:
                raise PayloadError(segment.name, "out of the schema's order")
            last = index
        present = {s.name for s in segments}
        for spec in self.specs:
            if not spec.optional and spec.name not in present:
                raise PayloadError(spec.name, "missing from payload")


# ---- payload ---------------------------------------------------------------------------


@dataclass
class Payload:
    """Segments in schema order. Without a schema, the payload's own segments are its schema."""

    segments: list[Segment] = field(default_factory=list)
    schema: PayloadSchema | None = None

    def __post_init__(self):
        self.segments = list(self.segments)
        names = [s.name for s in self.segments]
        if len(set(names)) != len(names):
            raise ValueError("segment names must be unique")
        if self.schema is None:
            self.schema = PayloadSchema.of_segments(self.segments)
        else:
            try:
                self.schema.check(self.segments)
            except PayloadError as exc:
                raise ValueError(f"payload does not follow its schema: {exc}") from None

    # ---- sizes -------------------------------------------------------------
    def header_bytes(self) -> bytes:
        parts = [bytes([VERSION]), self.schema.fingerprint]
        present = {s.name: s for s in self.segments}
        for spec in self.schema.specs:
            segment = present.get(spec.name)
            if spec.optional:
                parts.append(varints([0 if segment is None else 1 + segment.nbytes]))
            elif spec.nbytes is None:
                parts.append(varints([segment.nbytes]))
            if segment is not None and spec.open_form:
                parts.append(bytes([segment.fmt | (PROTECTED_BIT if segment.protected else 0)]))
        return b"".join(parts)

    @property
    def framing_nbytes(self) -> int:
        """Bytes of header and checksum: protected side information."""
        return len(self.header_bytes()) + CRC_BYTES

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
        """The same payload with other segment data (e.g. damaged by a link), under the same schema."""
        return Payload(list(segments), self.schema)

    # ---- wire ------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        header = self.header_bytes()
        crc = zlib.crc32(header)
        for s in self.segments:
            if s.protected:
                crc = zlib.crc32(s.data, crc)
        return b"".join([header, *(s.data for s in self.segments), crc.to_bytes(CRC_BYTES, "little")])

    @classmethod
    def from_bytes(cls, buf: bytes, schema: PayloadSchema) -> "Payload":
        """Parse a payload of ``schema`` (the receiver's: ``Strategy.read`` passes it)."""
        buf = bytes(buf)
        fixed = 1 + FINGERPRINT_BYTES
        if len(buf) < fixed + CRC_BYTES:
            raise PayloadError("header", f"{len(buf)} bytes are too few for a payload")
        if buf[0] != VERSION:
            raise PayloadError("header", f"format version {buf[0]}, expected {VERSION}")
        if buf[1:fixed] != schema.fingerprint:
            raise PayloadError(
                "header",
                f"schema fingerprint {buf[1:fixed].hex()} is not the receiver's {schema.fingerprint.hex()} "
                "(a payload for another model or strategy, or a damaged header)",
            )
        pos = fixed
        layout = []  # (spec, length, format, protected) of the segments present
        for spec in schema.specs:
            length = spec.nbytes
            if spec.open_length:
                try:
                    (value,), pos = read_varints(buf, pos, 1)
                except VarintError as exc:
                    raise PayloadError("header", f"length of segment '{spec.name}': {exc}") from None
                if spec.optional:
                    if value == 0:
                        continue
                    value -= 1
                if spec.nbytes is not None and value != spec.nbytes:
                    raise PayloadError(spec.name, f"header gives {value} bytes, expected {spec.nbytes}")
                length = value
            fmt, protected = spec.fmt, spec.protected
            if spec.open_form:
                if pos >= len(buf):
                    raise PayloadError("header", f"truncated before the format byte of segment '{spec.name}'")
                form = buf[pos]
                pos += 1
                fmt, protected = form & ~PROTECTED_BIT, bool(form & PROTECTED_BIT)
                if fmt not in _KNOWN_FORMATS or spec.fmt not in (None, fmt) or spec.protected not in (None, protected):
                    raise PayloadError(spec.name, f"format byte {form:#04x} does not fit the schema")
            layout.append((spec, length, fmt, protected))
        header_end, end = pos, len(buf) - CRC_BYTES
        crc = zlib.crc32(buf[:header_end])
        segments = []
        for spec, length, fmt, protected in layout:
            if pos + length > end:
                raise PayloadError(spec.name, f"truncated: {max(0, end - pos)} of {length} bytes present")
            data = buf[pos : pos + length]
            pos += length
            if protected:
                crc = zlib.crc32(data, crc)
            segments.append(Segment(spec.name, data, protected, fmt))
        if pos != end:
            raise PayloadError("trailer", f"expected a {CRC_BYTES}-byte checksum, found {len(buf) - pos} bytes")
        if crc != int.from_bytes(buf[end:], "little"):
            raise PayloadError("trailer", "checksum mismatch: the header or a protected segment is damaged")
        return cls(segments, schema)

    # ---- reporting -------------------------------------------------------------
    def breakdown(self) -> list[dict]:
        rows = [{"name": "framing", "bytes": self.framing_nbytes, "protected": True}]
        rows += [{"name": s.name, "bytes": s.nbytes, "protected": s.protected} for s in self.segments]
        return rows


def float_array(segment: Segment, count: int) -> np.ndarray:
    """Read a float segment holding exactly ``count`` values, as float32."""
    if not is_float_format(segment.fmt):
        raise PayloadError(segment.name, f"expected float values, found format {segment.fmt}")
    dtype = _FLOAT_DTYPES[segment.fmt]
    expect_nbytes(segment, count * dtype.itemsize, f" for {count} values")
    return np.frombuffer(segment.data, dtype=dtype).astype(np.float32)
