"""Analog transmission of real values: Gaussian noise at ``snr_db`` relative to the signal power.

Exposed float segments (F32/F16) are decoded, get noise of variance mean(x^2) / 10^(snr/10)
(power measured per segment), and are re-encoded in the same dtype (F16 saturates at its
largest finite value). Everything else, exposed non-float segments and the protected part,
is sent digitally with BPSK at Eb/N0 = ``snr_db`` (the protected packets' copies combined by MRC).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field

from testbed.links import packets
from testbed.links.base import Link
from testbed.links.channel import Channel
from testbed.links.modulation import SnrDb, SnrParams, ber_from_snr
from testbed.payload import FORMAT_F16, FORMAT_F32, is_float_format


class AnalogLink(Link):
    class Params(SnrParams):
        model: Literal["analog"] = "analog"
        snr_db: SnrDb = Field(10.0, description="signal-to-noise ratio of the values in dB (and Eb/N0 of the bits sent as BPSK)")

    def channel(self, rng):
        p = self.params
        return Channel(ber=ber_from_snr(p.snr_db, "bpsk"), snr_db=p.snr_db, modulation="bpsk")

    def damage_exposed(self, exposed, ch, rng, stats):
        changed = {}
        digital = [s for s in exposed if not is_float_format(s.fmt)]
        if digital and ch.ber > 0:
            changed, _ = packets.damage(digital, ch, self.params.packet_bytes, rng, stats)
        noise_ratio = 10.0 ** (-self.params.snr_db / 10.0)
        for seg in exposed:
            if not is_float_format(seg.fmt) or seg.nbytes == 0:
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
            stats.bit_errors += packets.popcount(diff)
            changed[seg.name] = seg.replace_data(out)
        return changed, {}
