"""Uniform asymmetric b-bit quantisation (min/max), per tensor or per row.

For each row r of a 2-D array: lo = min, scale = (max - min) / (2**b - 1),
q = round((x - lo) / scale) clipped to [0, 2**b - 1], x_hat = lo + q * scale.
A constant row has scale 0 and decodes exactly to its value. lo and scale
travel as float32 side information (8 bytes a row).
"""

from __future__ import annotations

import numpy as np

def quantise(rows: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (codes uint16 with the shape of rows, lo float32 per row, scale float32 per row).

    ``bits`` (1..16) is checked where it is configured (the strategies' and codecs' options)."""
    rows = np.asarray(rows, dtype=np.float32)
    if rows.ndim != 2:
        raise ValueError("quantise expects a 2-D array (rows x values)")
    levels = (1 << bits) - 1
    if rows.shape[1] == 0:
        zeros = np.zeros(rows.shape[0], np.float32)
        return np.zeros(rows.shape, np.uint16), zeros, zeros
    lo = rows.min(axis=1)
    hi = rows.max(axis=1)
    scale = ((hi.astype(np.float64) - lo) / levels).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1.0))
    codes = np.rint((rows - lo[:, None]) / safe[:, None])
    np.clip(codes, 0, levels, out=codes)
    return codes.astype(np.uint16), lo.astype(np.float32), scale


def dequantise(codes: np.ndarray, lo: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return (lo[:, None] + codes.astype(np.float32) * scale[:, None]).astype(np.float32)
