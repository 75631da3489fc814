"""The IDX array format of the MNIST files, gzipped or not.

An IDX file is two zero bytes, a type code, the number of dimensions, one
big-endian uint32 per dimension, then the values, big-endian. MNIST uses
unsigned bytes (0x08); the other codes are read too, so labels of more than 256
classes or float images fit.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from testbed.data.base import DatasetError

GZIP_MAGIC = b"\x1f\x8b"
TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Decode one IDX file; gzip is recognised by its magic bytes, whatever the file's name."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc.strerror})") from None
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"{path}: not a readable gzip file ({exc})") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in TYPES:
        raise DatasetError(f"{path}: not an IDX file (it does not start with 00 00 and a known type code)")
    dtype = np.dtype(TYPES[raw[2]])
    header = 4 + 4 * raw[3]
    if len(raw) < header:
        raise DatasetError(f"{path}: the IDX header is cut short ({len(raw)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    values = (len(raw) - header) // dtype.itemsize
    if len(raw) - header != int(np.prod(dims)) * dtype.itemsize:
        raise DatasetError(f"{path}: holds {values} values, its header says {int(np.prod(dims))}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="), copy=False)
