from __future__ import annotations

import hashlib
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pydantic import ValidationError

from strategies.registry import build
from testbed.links import available, get, link_params, make_link
from testbed.links.analog import AnalogLink
from testbed.links.awgn import AWGNLink
from testbed.links.bsc import BSCLink
from testbed.links.erasure import ErasureLink
from testbed.links.fading import FadingLink
from testbed.links.ideal import IdealLink
from testbed.links.modulation import ber_from_snr
from testbed.links.packets import error_positions
from testbed.links.protection import CRC_BYTES, MAX_REPETITION, choose_repetition, majority_vote_ber
from testbed.payload import FORMAT_BYTES, FORMAT_F16, FORMAT_F32, Payload, Segment, packed_format
from testbed.rng import derive_rng

Z999 = 3.2905  # two-sided 99.9% normal quantile
# The packet links; the coded nr link (code blocks, not packets) has its own properties: tests/test_nr_link.py
MODELS = tuple(m for m in available() if m != "nr")


def uncoded(model: str, **values):
    """A link's parameters with one copy of each protected packet unless told otherwise (no coding)."""
    return link_params(model, **{"protected_repetition": 1, **values})


def own(model: str, **values):
    """The ``model`` link's parameters from ``values``, keeping only the ones that model has."""
    fields = get(model).Params.model_fields
    return link_params(model, **{k: v for k, v in values.items() if k in fields})


def within_binomial(k: int, n: int, p: float) -> bool:
    """k inside the 99.9% interval of Binomial(n, p) (normal approximation, large n p)."""
    return abs(k - n * p) <= Z999 * math.sqrt(n * p * (1 - p)) + 1


def popcount(a: bytes, b: bytes) -> int:
    return int(np.unpackbits(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())


def packed_payload(exposed_bytes: int = 1 << 20, protected_bytes: int = 64, seed: int = 0) -> Payload:
    rng = np.random.default_rng(seed)
    return Payload(
        [
            Segment("w", rng.integers(0, 256, exposed_bytes, dtype=np.uint8).tobytes(), False, packed_format(8)),
            Segment("w/q", rng.bytes(protected_bytes), True),
        ]
    )


# Small packets and many attempts: the protected part gets through at these BERs.
ARQ = dict(packet_bytes=32, max_attempts=200)


# ---- closed-form bit error rates ---------------------------------------------------


@pytest.mark.parametrize("snr_db", [0.0, 5.0, 10.0])
@pytest.mark.parametrize("modulation", ["bpsk", "qpsk"])
def test_bpsk_qpsk_ber_is_q_of_sqrt_2_ebn0(snr_db, modulation):
    ebn0 = 10 ** (snr_db / 10)
    # Q(sqrt(2 g)) = erfc(sqrt(g)) / 2
    expected = 0.5 * math.erfc(math.sqrt(ebn0))
    assert ber_from_snr(snr_db, modulation) == pytest.approx(expected, rel=1e-6)


def test_known_bpsk_values():
    assert ber_from_snr(0.0, "bpsk") == pytest.approx(0.0786496, rel=1e-5)
    assert ber_from_snr(9.6, "bpsk") == pytest.approx(1.0e-5, rel=0.05)  # the textbook 9.6 dB at 1e-5


def test_16qam_decreasing_and_worse_than_bpsk():
    snrs = np.arange(-5.0, 20.0, 0.5)
    qam = [ber_from_snr(s, "16qam") for s in snrs]
    assert all(a > b for a, b in zip(qam, qam[1:]))
    assert all(ber_from_snr(s, "16qam") > ber_from_snr(s, "bpsk") for s in snrs)
    assert ber_from_snr(-60.0, "16qam") == pytest.approx(0.5, abs=1e-3)  # no signal: a coin toss
    # high SNR: 3/4 Q(sqrt(4/5 Eb/N0)) dominates
    g = 10 ** 1.6
    assert ber_from_snr(16.0, "16qam") == pytest.approx(0.75 * 0.5 * math.erfc(math.sqrt(0.4 * g)), rel=1e-3)


def test_unknown_modulation():
    with pytest.raises(ValueError, match="unknown modulation"):
        ber_from_snr(3.0, "8psk")


# ---- error placement -----------------------------------------------------------------


@pytest.mark.parametrize("nbits, ber", [(8_000_000, 1e-3), (10**12, 1e-10), (1000, 0.5)])
def test_error_positions_count_and_shape(nbits, ber):
    pos = error_positions(nbits, ber, derive_rng(0, "pos", nbits))
    assert np.all(np.diff(pos) > 0) and (pos.size == 0 or (pos[0] >= 0 and pos[-1] < nbits))
    assert within_binomial(pos.size, nbits, ber)


def test_error_positions_uniform_over_the_stream():
    nbits = 1_000_000
    pos = error_positions(nbits, 0.01, derive_rng(0, "uniform"))
    counts = np.bincount(pos * 10 // nbits, minlength=10)
    assert all(within_binomial(int(c), pos.size, 0.1) for c in counts)


# ---- measured bit error rates --------------------------------------------------------


@pytest.mark.parametrize(
    "params, ber",
    [
        (uncoded("bsc", ber=1e-3, **ARQ), 1e-3),
        (uncoded("bsc", ber=0.02, packet_bytes=4, max_attempts=500), 0.02),
        (uncoded("awgn", snr_db=5.0, modulation="bpsk", **ARQ), ber_from_snr(5.0, "bpsk")),
        (uncoded("awgn", snr_db=10.0, modulation="16qam", **ARQ), ber_from_snr(10.0, "16qam")),
    ],
)
def test_measured_ber_matches(params, ber):
    payload = packed_payload()
    t = make_link(params).transmit(payload, derive_rng(1, "ber", params.model))
    assert t.stats.delivered
    flipped = popcount(payload["w"].data, t.received["w"].data)
    assert flipped == t.stats.bit_errors
    assert within_binomial(flipped, 8 * payload["w"].nbytes, ber)
    assert t.stats.ber == ber
    assert t.received["w/q"] == payload["w/q"]


def test_bit_errors_spread_over_all_bit_positions():
    payload = packed_payload()
    t = make_link(uncoded("bsc", ber=0.01, packet_bytes=8, max_attempts=100)).transmit(payload, derive_rng(0, "spread"))
    diff = np.frombuffer(payload["w"].data, np.uint8) ^ np.frombuffer(t.received["w"].data, np.uint8)
    per_bit = np.unpackbits(diff).reshape(-1, 8).sum(axis=0)
    assert all(within_binomial(int(c), diff.size, 0.01) for c in per_bit)


# ---- analog ------------------------------------------------------------------------------


def measured_snr_db(sent: np.ndarray, received: np.ndarray) -> float:
    noise = received.astype(np.float64) - sent.astype(np.float64)
    return 10 * math.log10(np.mean(sent.astype(np.float64) ** 2) / np.mean(noise**2))


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_analog_snr(snr_db):
    x = (np.random.default_rng(0).standard_normal(1 << 20) * 0.05 + 0.01).astype(np.float32)
    payload = Payload([Segment("x", x.astype("<f4").tobytes(), False, FORMAT_F32)])
    # 1-byte packets: the framing gets through BPSK at 0 dB too
    link = make_link(uncoded("analog", snr_db=snr_db, packet_bytes=1, max_attempts=5000))
    t = link.transmit(payload, derive_rng(0, "analog", int(snr_db)))
    y = np.frombuffer(t.received["x"].data, "<f4")
    assert abs(measured_snr_db(x, y) - snr_db) < 0.1
    assert t.stats.bit_errors == popcount(payload["x"].data, t.received["x"].data)
    assert t.stats.snr_db == snr_db


def test_analog_float16_stays_float16_and_other_segments_go_digital():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(200_000).astype(np.float16)
    packed = rng.integers(0, 256, 1 << 19, dtype=np.uint8).tobytes()
    payload = Payload(
        [
            Segment("h", x.astype("<f2").tobytes(), False, FORMAT_F16),
            Segment("p", packed, False, packed_format(8)),
            Segment("side", rng.bytes(100), True),
        ]
    )
    snr = 6.0
    t = make_link(uncoded("analog", snr_db=snr, packet_bytes=16, max_attempts=200)).transmit(payload, derive_rng(0, "f16"))
    h = t.received["h"]
    assert h.fmt == FORMAT_F16 and h.nbytes == payload["h"].nbytes
    y = np.frombuffer(h.data, "<f2")
    assert np.all(np.isfinite(y))
    assert abs(measured_snr_db(x, y) - snr) < 0.1
    # the packed segment crossed as BPSK bits at the same SNR
    assert within_binomial(popcount(packed, t.received["p"].data), 8 * len(packed), ber_from_snr(snr, "bpsk"))
    assert t.received["side"] == payload["side"]


# ---- erasures and retransmissions ------------------------------------------------------


def test_erasure_rate_and_ranges():
    payload = packed_payload(exposed_bytes=1 << 20)
    pb, loss = 256, 0.1
    t = make_link(uncoded("erasure", loss=loss, packet_bytes=pb)).transmit(payload, derive_rng(0, "erasure"))
    exposed_packets = (1 << 20) // pb
    assert within_binomial(t.stats.packets_lost, exposed_packets, loss)
    sent, got = np.frombuffer(payload["w"].data, np.uint8), np.frombuffer(t.received["w"].data, np.uint8)
    lost = np.zeros(sent.size, bool)
    for start, stop in t.erased["w"]:
        assert start < stop and np.all(got[start:stop] == 0)
        lost[start:stop] = True
    assert lost.sum() == t.stats.packets_lost * pb  # segment is packet-aligned here
    assert np.array_equal(sent[~lost], got[~lost])
    assert t.stats.bit_errors == 0


def test_erased_ranges_follow_packets_across_segment_boundaries():
    segs = [
        Segment("a", b"\xff" * 10, False),
        Segment("empty", b"", False),
        Segment("s", b"\x01" * 5, True),
        Segment("b", b"\xff" * 10, False),
    ]
    payload = Payload(segs)
    # loss just under 1: every exposed packet of 4 bytes is lost; packets span 'a' and 'b'
    t = make_link(uncoded("erasure", loss=0.999999, packet_bytes=4, max_attempts=10**9)).transmit(payload, derive_rng(0))
    assert t.erased == {"a": [(0, 10)], "b": [(0, 10)]}
    assert t.stats.packets_lost == 5
    assert t.received["a"].data == bytes(10) and t.received["s"].data == b"\x01" * 5


@pytest.mark.parametrize("loss", [0.05, 0.3])
def test_retransmissions_of_lost_protected_packets(loss):
    pb = 128
    payload = Payload([Segment("side", np.random.default_rng(0).bytes(pb * 4000), True)])
    t = make_link(uncoded("erasure", loss=loss, packet_bytes=pb, max_attempts=100)).transmit(payload, derive_rng(0, str(loss)))
    n = -(-payload.nbytes // pb)
    s = 1 - loss  # sends per packet ~ Geometric(s): mean 1/s, variance (1-s)/s^2
    mean, var = n * (1 / s - 1), n * (1 - s) / s**2
    assert abs(t.stats.retransmissions - mean) < Z999 * math.sqrt(var)
    assert t.received == payload
    assert t.stats.overhead_bytes == CRC_BYTES * n
    assert (pb + CRC_BYTES) * (t.stats.retransmissions - 1) < t.stats.resent_bytes <= (pb + CRC_BYTES) * t.stats.retransmissions


def test_bsc_retransmissions_match_packet_success_probability():
    pb, ber = 64, 2e-3
    payload = Payload([Segment("side", np.random.default_rng(0).bytes(pb * 5000), True)])
    t = make_link(uncoded("bsc", ber=ber, packet_bytes=pb, max_attempts=100)).transmit(payload, derive_rng(0, "arq"))
    s = (1 - ber) ** (8 * (pb + CRC_BYTES))
    n = -(-payload.nbytes // pb)
    assert abs(t.stats.retransmissions - n * (1 / s - 1)) < Z999 * math.sqrt(n * (1 - s) / s**2)
    assert t.received["side"] == payload["side"]


def test_delivery_fails_when_attempts_run_out():
    payload = packed_payload(exposed_bytes=1000, protected_bytes=5000)
    t = make_link(uncoded("bsc", ber=0.01, packet_bytes=1024, max_attempts=2)).transmit(payload, derive_rng(0, "fail"))
    assert t.received is None and not t.stats.delivered
    assert t.stats.failure == "protected packet 0 not delivered after 2 attempts"
    s = t.stats
    assert s.retransmissions >= 1 and s.bytes_sent == s.payload_bytes + s.overhead_bytes + s.resent_bytes
    assert s.airtime_s == pytest.approx(s.bits_sent / 10e6 + 0.020 * 2)  # one resend round


# ---- accounting -------------------------------------------------------------------------


def test_ideal_link_costs_nothing_and_copies_nothing():
    payload = packed_payload(exposed_bytes=10_000, protected_bytes=3000)
    p = uncoded("ideal", bandwidth_mbps=2.0, latency_ms=5.0, packet_bytes=1000)
    t = make_link(p).transmit(payload, derive_rng(0))
    assert t.received is payload
    n_prot = -(-payload.protected_nbytes // 1000)
    s = t.stats
    assert s.payload_bytes == payload.nbytes
    assert s.overhead_bytes == CRC_BYTES * n_prot and s.resent_bytes == 0
    assert s.bytes_sent == payload.nbytes + CRC_BYTES * n_prot and s.bits_sent == 8 * s.bytes_sent
    assert s.packets == n_prot + 10
    assert s.airtime_s == pytest.approx(s.bits_sent / 2e6 + 0.005)
    assert s.delivered and s.failure == "" and math.isnan(s.snr_db) and s.ber == 0
    assert set(s.as_dict()) >= {"payload_bytes", "bytes_sent", "bit_errors", "airtime_s", "delivered", "snr_db", "ber"}


def test_airtime_counts_one_latency_per_resend_round():
    payload = Payload([Segment("side", bytes(64 * 2000), True)])
    p = uncoded("erasure", loss=0.5, packet_bytes=64, max_attempts=1000, bandwidth_mbps=1.0, latency_ms=10.0)
    s = make_link(p).transmit(payload, derive_rng(0, "rounds")).stats
    rounds = (s.airtime_s - s.bits_sent / 1e6) / 0.010 - 1
    assert rounds == pytest.approx(round(rounds), abs=1e-6)
    # 2000 packets each needing Geometric(1/2) sends: the worst needs about log2(2000) ~ 11
    assert 5 <= round(rounds) <= 25


def test_make_link_classes():
    classes = {"ideal": IdealLink, "bsc": BSCLink, "awgn": AWGNLink, "analog": AnalogLink, "erasure": ErasureLink, "fading": FadingLink}
    for model in classes:
        assert type(make_link(link_params(model))) is classes[model]


@pytest.mark.parametrize(
    "model, values, match",
    [
        ("awgn", dict(modulation="8psk"), "modulation\n  '8psk' must be one of bpsk, qpsk, 16qam"),
        ("awgn", dict(bandwidth_mbps=0.0), "bandwidth_mbps\n  0.0 must be a number > 0"),
        ("erasure", dict(loss=1.0), r"loss\n  1.0 must be a number in \[0, 1\)"),
        ("bsc", dict(ber=-0.1), r"ber\n  -0.1 must be a number in \[0, 1\]"),
        ("bsc", dict(packet_bytes=0), "packet_bytes\n  0 must be a whole number >= 1"),
        ("bsc", dict(max_attempts=1.5), "max_attempts\n  1.5 must be a whole number >= 1"),
        ("awgn", dict(snr_db=math.nan), "snr_db\n  nan must be a finite number"),
        ("awgn", dict(ber=0.1), "ber\n  Extra inputs are not permitted"),  # ber belongs to bsc
    ],
)
def test_link_params_validation(model, values, match):
    with pytest.raises(ValidationError, match=match):
        link_params(model, **values)


def test_unknown_link_model():
    with pytest.raises(KeyError, match="unknown link model 'wifi'; registered: ideal, bsc, awgn, analog, erasure, fading, gilbert_elliott"):
        link_params("wifi")


# ---- fading --------------------------------------------------------------------------------


def test_fading_gain_is_exponential_and_sets_the_ber():
    link = make_link(uncoded("fading", snr_db=10.0, modulation="qpsk"))
    gains = []
    for i in range(4000):
        ch = link.channel(derive_rng(0, "fade", i))
        gains.append(10 ** ((ch.snr_db - 10.0) / 10))
        assert ch.ber == ber_from_snr(ch.snr_db, "qpsk")
    gains = np.array(gains)
    assert abs(gains.mean() - 1) < 4 / math.sqrt(gains.size)  # Exp(1): mean 1, std 1
    assert abs(np.mean(gains < math.log(2)) - 0.5) < 4 * 0.5 / math.sqrt(gains.size)  # median ln 2
    t = link.transmit(packed_payload(1000), derive_rng(0, "fade", 0))
    assert t.stats.snr_db == link.channel(derive_rng(0, "fade", 0)).snr_db


# ---- reproducibility and independence ---------------------------------------------------------


def test_same_keys_same_received_payload_and_independent_noise_otherwise():
    payload = packed_payload(exposed_bytes=1 << 20)
    link = make_link(uncoded("bsc", ber=0.01, packet_bytes=8, max_attempts=100))

    def noise(*keys):
        t = link.transmit(payload, derive_rng(42, "link", *keys))
        return t, np.frombuffer(payload["w"].data, np.uint8) ^ np.frombuffer(t.received["w"].data, np.uint8)

    a, mask_a = noise(3, 7, "down")
    b, mask_b = noise(3, 7, "down")
    assert a.received == b.received and a.stats == b.stats
    nbits = 8 * mask_a.size
    for keys in [(3, 8, "down"), (3, 7, "up"), (4, 7, "down")]:
        other, mask = noise(*keys)
        assert other.received != a.received
        # independent errors coincide on about nbits * p^2 bits
        both = int(np.unpackbits(mask & mask_a).sum())
        assert within_binomial(both, nbits, 0.01**2)


def test_realistic_quantised_model_over_a_noisy_link():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3), torch.nn.Flatten(), torch.nn.Linear(16 * 26 * 26, 10))
    state = model.state_dict()
    strategy = build({"strategy": "quantise", "bits": 8})
    payload = strategy.encode(state)
    link = make_link(uncoded("awgn", snr_db=4.0, packet_bytes=16, max_attempts=200))
    t = link.transmit(payload, derive_rng(0, "realistic"))
    assert t.stats.delivered and t.stats.bit_errors > 0
    received = strategy.read(t.received.to_bytes(), state)  # protected checksums still hold
    decoded = strategy.decode(received, state)
    clean = strategy.decode(payload, state)
    err = (decoded["2.weight"] - clean["2.weight"]).abs()
    assert 0 < (err > 0).float().mean() < 0.2  # some values hit, most not
    for seg in payload.segments:
        if seg.protected:
            assert t.received[seg.name] == seg


# ---- properties ----------------------------------------------------------------------------------

segment_strategy = st.tuples(
    st.integers(0, 600),  # bytes
    st.booleans(),  # protected
    st.sampled_from(["bytes", "packed", "f32", "f16"]),
)
OWN_VALUES = dict(  # each model draws the ones it has
    snr_db=st.one_of(st.floats(-2.0, 30.0), st.floats(12.0, 30.0)),
    ber=st.sampled_from([0.0, 1e-4, 1e-2, 0.1]),
    modulation=st.sampled_from(["bpsk", "qpsk", "16qam"]),
    loss=st.sampled_from([0.0, 0.1, 0.5]),
    ber_good=st.sampled_from([0.0, 1e-5, 1e-3]),
    ber_bad=st.sampled_from([0.0, 0.05, 0.5, 1.0]),
    p_good_to_bad=st.sampled_from([0.0, 1e-4, 0.01, 0.3]),
    p_bad_to_good=st.sampled_from([0.01, 0.2, 1.0]),
)


@st.composite
def params_strategy(draw):
    """Uncoded parameters of any model (repetition 1: the tests of coding set their own)."""
    model = draw(st.sampled_from(MODELS))
    fields = get(model).Params.model_fields
    values = {name: draw(values) for name, values in OWN_VALUES.items() if name in fields}
    return uncoded(
        model,
        bandwidth_mbps=draw(st.floats(0.1, 100.0)),
        latency_ms=draw(st.floats(0.0, 50.0)),
        packet_bytes=draw(st.integers(1, 300)),
        max_attempts=draw(st.integers(1, 30)),
        **values,
    )


def build_payload(spec, seed) -> Payload:
    rng = np.random.default_rng(seed)
    segments = []
    for i, (size, protected, kind) in enumerate(spec):
        if kind == "f32":
            data, fmt = rng.standard_normal(size // 4).astype("<f4").tobytes(), FORMAT_F32
        elif kind == "f16":
            data, fmt = rng.standard_normal(size // 2).astype("<f2").tobytes(), FORMAT_F16
        else:
            data, fmt = rng.bytes(size), (packed_format(4) if kind == "packed" else FORMAT_BYTES)
        segments.append(Segment(f"s{i}", data, protected, fmt))
    return Payload(segments)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=st.lists(segment_strategy, min_size=1, max_size=5), params=params_strategy(), seed=st.integers(0, 2**32))
def test_link_properties(spec, params, seed):
    payload = build_payload(spec, seed)
    t = make_link(params).transmit(payload, derive_rng(seed, "prop"))
    s = t.stats
    event(f"{params.model} {'delivered' if s.delivered else 'failed'}")
    assert s.payload_bytes == payload.nbytes
    assert s.bytes_sent == s.payload_bytes + s.overhead_bytes + s.resent_bytes and s.bits_sent == 8 * s.bytes_sent
    assert s.overhead_bytes == CRC_BYTES * -(-payload.protected_nbytes // params.packet_bytes)
    assert s.airtime_s >= s.bits_sent / (params.bandwidth_mbps * 1e6) + params.latency_ms * 1e-3 - 1e-12
    if not s.delivered:
        assert t.received is None and s.failure.startswith("protected packet ")
        return
    check_delivered(payload, t)
    if params.model in ("ideal", "erasure"):
        assert s.bit_errors == 0
    if params.model != "erasure":
        assert t.erased == {} and s.packets_lost == 0


def check_delivered(payload: Payload, t) -> None:
    """What a delivered transmission must be: the same segments, the protected ones intact, erased ranges
    zeroed, bit errors exactly where the stats count them, the checksums still holding."""
    r = t.received
    assert r.names() == payload.names() and r.nbytes == payload.nbytes
    flipped = 0
    for sent, got in zip(payload.segments, r.segments):
        assert (got.nbytes, got.fmt, got.protected) == (sent.nbytes, sent.fmt, sent.protected)
        if sent.protected:
            assert got.data == sent.data
            continue
        a, b = np.frombuffer(sent.data, np.uint8), np.frombuffer(got.data, np.uint8).copy()
        for start, stop in t.erased.get(sent.name, []):
            assert 0 <= start < stop <= sent.nbytes and np.all(b[start:stop] == 0)
            b[start:stop] = a[start:stop]  # compare the rest
        flipped += int(np.unpackbits(a ^ b).sum())
    assert flipped == t.stats.bit_errors  # data differs exactly where errors (or erasures) landed
    assert Payload.from_bytes(r.to_bytes(), r.schema) == r  # the protected checksums still hold


# ---- repetition coding of protected packets ------------------------------------------------


def soft_channel(modulation: str, snr_db: float):
    return make_link(uncoded("awgn", snr_db=snr_db, modulation=modulation)).channel(derive_rng(0))


def bpsk_combined_errors(nbits: int, snr_db: float, copies: int, rng: np.random.Generator) -> int:
    """Bit errors of BPSK (Eb = 1) sent ``copies`` times over AWGN, received values summed (MRC) and sliced."""
    bits = rng.integers(0, 2, nbits)
    symbols = 2.0 * bits - 1.0
    sigma = math.sqrt(1 / (2 * 10 ** (snr_db / 10)))  # N0 / 2 per dimension
    combined = np.zeros(nbits)
    for _ in range(copies):
        combined += symbols + sigma * rng.standard_normal(nbits)
    return int(np.sum((combined > 0) != (bits == 1)))


def qam16_combined_errors(nsymbols: int, snr_db: float, copies: int, rng: np.random.Generator) -> int:
    """Bit errors of Gray 16-QAM sent ``copies`` times over AWGN, combined and decided per dimension."""
    # per dimension Gray 4-PAM: bits (b0, b1) 00 -> -3, 01 -> -1, 11 -> +1, 10 -> +3
    bits = rng.integers(0, 2, (nsymbols, 2, 2))
    level = np.where(bits[..., 0] == 1, 1.0, -1.0) * np.where(bits[..., 1] == 1, 1.0, 3.0)
    eb = 10 / 4  # mean symbol energy 10 over 4 bits
    sigma = math.sqrt(eb / 10 ** (snr_db / 10) / 2)
    combined = np.zeros(level.shape)
    for _ in range(copies):
        combined += level + sigma * rng.standard_normal(level.shape)
    x = combined / copies
    decided = np.stack([x > 0, np.abs(x) < 2], axis=-1)
    return int(np.sum(decided != (bits == 1)))


@pytest.mark.parametrize("snr_db, copies", [(0.0, 1), (0.0, 3), (0.0, 5), (-3.0, 2), (-3.0, 9), (2.0, 4)])
def test_bpsk_combining_matches_monte_carlo(snr_db, copies):
    nbits = 400_000
    errors = bpsk_combined_errors(nbits, snr_db, copies, derive_rng(0, "mrc", str(snr_db), copies))
    ber, loss = soft_channel("bpsk", snr_db).combined(copies)
    assert ber == pytest.approx(0.5 * math.erfc(math.sqrt(copies * 10 ** (snr_db / 10))), rel=1e-9) and loss == 0
    assert within_binomial(errors, nbits, ber), (errors / nbits, ber)
    assert soft_channel("qpsk", snr_db).combined(copies) == (ber, 0.0)  # Gray QPSK: two BPSK streams


@pytest.mark.parametrize("snr_db, copies", [(5.0, 1), (5.0, 2), (5.0, 4), (0.0, 6)])
def test_16qam_combining_matches_monte_carlo(snr_db, copies):
    nsymbols = 200_000
    errors = qam16_combined_errors(nsymbols, snr_db, copies, derive_rng(0, "qam", str(snr_db), copies))
    ber, _ = soft_channel("16qam", snr_db).combined(copies)
    assert ber == pytest.approx(ber_from_snr(snr_db + 10 * math.log10(copies), "16qam"), rel=1e-9)
    assert within_binomial(errors, 4 * nsymbols, ber), (errors / (4 * nsymbols), ber)


@pytest.mark.parametrize("ber, copies", [(0.01, 1), (0.01, 2), (0.05, 3), (0.1, 5), (0.2, 9), (0.3, 4), (0.3, 15)])
def test_majority_vote_matches_monte_carlo(ber, copies):
    nbits = 400_000
    flips = derive_rng(0, "vote", str(ber), copies).random((nbits, copies)) < ber
    errors = int(np.sum(flips.sum(axis=1) >= (copies + 1) // 2))  # majority wrong, or a tie
    coded, loss = make_link(uncoded("bsc", ber=ber)).channel(derive_rng(0)).combined(copies)
    assert coded == majority_vote_ber(ber, copies) and loss == 0
    assert within_binomial(errors, nbits, coded), (errors / nbits, coded)


@settings(max_examples=200, deadline=None)
@given(ber=st.floats(0.0, 1.0), copies=st.integers(1, 64))
def test_majority_vote_is_the_binomial_tail(ber, copies):
    exact = sum(
        Fraction(math.comb(copies, k)) * Fraction(ber) ** k * (1 - Fraction(ber)) ** (copies - k)
        for k in range(-(-copies // 2), copies + 1)
    )
    assert majority_vote_ber(ber, copies) == pytest.approx(float(exact), rel=1e-9, abs=1e-300)
    if copies % 2 == 1 and copies > 1 and 0 < ber < 0.5:
        fewer = majority_vote_ber(ber, copies - 2)
        assert majority_vote_ber(ber, copies) < fewer or fewer == 0.0  # more votes help (until underflow)


def test_erasure_copies_are_lost_together_only():
    pb, loss, copies = 100, 0.5, 3
    payload = Payload([Segment("side", np.random.default_rng(0).bytes(pb * 3000), True)])
    link = make_link(uncoded("erasure", loss=loss, packet_bytes=pb, max_attempts=100, protected_repetition=copies))
    assert link.channel(derive_rng(0)).combined(copies) == (0.0, loss**copies)
    t = link.transmit(payload, derive_rng(0, "erasure copies"))
    n = -(-payload.nbytes // pb)
    s = 1 - loss**copies
    assert abs(t.stats.retransmissions - n * (1 / s - 1)) < Z999 * math.sqrt(n * (1 - s) / s**2) + 1
    assert t.received == payload


def test_coded_arq_uses_the_combined_error_rate():
    pb, ber, copies = 64, 0.02, 3
    framing = Payload([Segment("side", bytes(pb * 4000), True)]).nbytes - pb * 4000
    payload = Payload([Segment("side", np.random.default_rng(1).bytes(pb * 4000 - framing), True)])  # whole packets
    assert payload.nbytes % pb == 0
    t = make_link(uncoded("bsc", ber=ber, packet_bytes=pb, max_attempts=100, protected_repetition=copies)).transmit(
        payload, derive_rng(0, "coded arq")
    )
    s = (1 - majority_vote_ber(ber, copies)) ** (8 * (pb + CRC_BYTES))
    n = payload.nbytes // pb
    assert abs(t.stats.retransmissions - n * (1 / s - 1)) < Z999 * math.sqrt(n * (1 - s) / s**2) + 1
    st_ = t.stats
    assert st_.resent_bytes == copies * (pb + CRC_BYTES) * st_.retransmissions
    assert st_.coding_bytes == (copies - 1) * (payload.nbytes + CRC_BYTES * n)
    assert st_.bytes_sent == copies * (payload.nbytes + CRC_BYTES * n) + st_.resent_bytes
    assert st_.protected_repetition == copies and t.received == payload


def independent_success(ch, modulation: str | None, copies: int, packet_bytes: int) -> float:
    """One send's success probability with ``copies`` copies, from the formulas, not the link's code."""
    if modulation:
        ber = ber_from_snr(ch.snr_db + 10 * math.log10(copies), modulation) if ch.ber > 0 else 0.0
    else:
        t = (copies + 1) // 2
        ber = sum(math.comb(copies, k) * ch.ber**k * (1 - ch.ber) ** (copies - k) for k in range(t, copies + 1))
    return (1 - ch.loss**copies) * (1 - ber) ** (8 * (packet_bytes + CRC_BYTES))


@settings(max_examples=150, deadline=None)
@given(
    model=st.sampled_from(["bsc", "awgn", "fading", "analog", "erasure"]),
    snr_db=st.floats(-10.0, 15.0),
    ber=st.floats(0.0, 0.4),
    loss=st.floats(0.0, 0.95),
    modulation=st.sampled_from(["bpsk", "qpsk", "16qam"]),
    packet_bytes=st.integers(1, 2000),
    seed=st.integers(0, 1000),
)
def test_auto_picks_the_smallest_repetition_meeting_the_target(model, snr_db, ber, loss, modulation, packet_bytes, seed):
    params = own(model, snr_db=snr_db, ber=ber, loss=loss, modulation=modulation, packet_bytes=packet_bytes, protected_repetition="auto")
    link = make_link(params)
    ch = link.channel(derive_rng(seed, "auto"))  # for fading: the drawn state, known to the sender
    copies = link.protection.copies(ch)
    mod = {"awgn": modulation, "fading": modulation, "analog": "bpsk"}.get(model)
    success = [independent_success(ch, mod, m, packet_bytes) for m in range(1, MAX_REPETITION + 1)]
    event(f"{model}: {'1' if copies == 1 else '2-63' if copies < MAX_REPETITION else '64'} copies")
    if any(s >= 0.9 * (1 + 1e-9) for s in success):
        assert success[copies - 1] >= 0.9 * (1 - 1e-9)
    else:
        assert copies == MAX_REPETITION
    assert all(s < 0.9 * (1 + 1e-9) for s in success[: copies - 1])  # every smaller repetition misses it
    assert copies == choose_repetition(ch, packet_bytes)
    t = link.transmit(build_payload([(50, True, "bytes"), (40, False, "bytes")], seed), derive_rng(seed, "auto"))
    assert t.stats.protected_repetition == copies  # the same state, drawn first from the same generator


@pytest.mark.parametrize("model", ["awgn", "analog"])
def test_auto_delivers_at_0_db_where_uncoded_bpsk_fails(model):
    rng = np.random.default_rng(7)
    payload = Payload(
        [
            Segment("w", rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes(), False, packed_format(8)),
            Segment("w/q", rng.bytes(3000), True),
        ]
    )
    runs = {}
    for repetition in ("auto", 1):
        link = make_link(link_params(model, snr_db=0.0, protected_repetition=repetition))  # 1 KB packets, 8 attempts
        runs[repetition] = [link.transmit(payload, derive_rng(i, "zero dB")) for i in range(200)]
    coded = runs["auto"]
    assert sum(t.stats.delivered for t in coded) >= 199
    n_prot = -(-payload.protected_nbytes // 1024)
    for t in coded:
        s = t.stats
        assert s.protected_repetition == 9  # Q(sqrt(2 * 9)) = 1.1e-5: 0.91 of full packets through
        assert s.coding_bytes == 8 * (payload.protected_nbytes + CRC_BYTES * n_prot)
        if s.delivered:
            assert t.received["w/q"] == payload["w/q"] and t.received.framing_nbytes == payload.framing_nbytes
            assert s.bit_errors > 0  # the exposed data stays uncoded: BER 0.079
    assert not any(t.stats.delivered for t in runs[1])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=st.lists(segment_strategy, min_size=1, max_size=4),
    params=params_strategy(),
    repetition=st.one_of(st.just("auto"), st.integers(1, 6)),
    seed=st.integers(0, 2**32),
)
def test_coded_accounting(spec, params, repetition, seed):
    params = link_params(**{**params.model_dump(), "protected_repetition": repetition})
    payload = build_payload(spec, seed)
    t = make_link(params).transmit(payload, derive_rng(seed, "coded"))
    s = t.stats
    r = s.protected_repetition
    assert r == repetition or (repetition == "auto" and 1 <= r <= MAX_REPETITION)
    n_prot = -(-payload.protected_nbytes // params.packet_bytes)
    assert s.overhead_bytes == CRC_BYTES * n_prot
    assert s.coding_bytes == (r - 1) * (payload.protected_nbytes + CRC_BYTES * n_prot)
    assert s.bytes_sent == s.payload_bytes + s.overhead_bytes + s.coding_bytes + s.resent_bytes
    assert s.bits_sent == 8 * s.bytes_sent and s.resent_bytes % r == 0
    assert r * s.retransmissions <= s.resent_bytes <= r * (params.packet_bytes + CRC_BYTES) * s.retransmissions
    assert s.airtime_s >= s.bits_sent / (params.bandwidth_mbps * 1e6) + params.latency_ms * 1e-3 - 1e-12
    if s.delivered:
        for sent, got in zip(payload.segments, t.received.segments):
            assert not sent.protected or got == sent
    else:
        assert t.received is None and s.failure.startswith("protected packet ")


# Statistics of the code before repetition coding existed (bytes_sent, resent_bytes,
# retransmissions, bit_errors, packets_lost, delivered, airtime_s, received digest):
# repetition 1 must draw and count exactly as it did. Recomputed for the compact payload
# header (9 framing bytes instead of 34: 25 protected bytes fewer, new digests).
GOLDEN_PARAMS = {
    "bsc": uncoded("bsc", ber=2e-4, packet_bytes=256, max_attempts=4),
    "awgn": uncoded("awgn", snr_db=6.0, modulation="qpsk", packet_bytes=128, max_attempts=8),
    "awgn16": uncoded("awgn", snr_db=9.0, modulation="16qam", packet_bytes=64, max_attempts=8),
    "erasure": uncoded("erasure", loss=0.2, packet_bytes=100, max_attempts=5),
    "fading": uncoded("fading", snr_db=12.0, packet_bytes=200, max_attempts=6),
    "analog": uncoded("analog", snr_db=7.0, packet_bytes=100, max_attempts=10),
    "ideal": uncoded("ideal", packet_bytes=700),
}
GOLDEN = {
    "bsc/0": (26097, 1040, 4, 40, 0, True, 0.0808776, "7d33c9a269f0988d"),
    "bsc/1": (26294, 1237, 5, 27, 0, True, 0.0610352, "601740f42474a0b2"),
    "awgn/0": (40945, 15840, 120, 0, 0, False, 0.192756, None),
    "awgn/1": (43666, 18561, 143, 0, 0, False, 0.19493280000000002, None),
    "awgn16/0": (42337, 17136, 252, 0, 0, False, 0.1938696, None),
    "awgn16/1": (40705, 15504, 228, 0, 0, False, 0.192564, None),
    "erasure/0": (25965, 832, 8, 0, 45, True, 0.080772, "ed30f2c0121c84f5"),
    "erasure/1": (26277, 1144, 11, 0, 46, True, 0.1010216, "c8093c2e834cd140"),
    "fading/0": (25073, 0, 0, 0, 0, True, 0.0400584, "2185d7e22a99696c"),
    "fading/1": (40438, 15365, 80, 0, 0, False, 0.1523504, None),
    "analog/0": (27005, 1872, 18, 6524, 0, True, 0.101604, "a9b13eb3404a52de"),
    "analog/1": (28045, 2912, 28, 6512, 0, True, 0.142436, "06d218611d2564ac"),
    "ideal/0": (25029, 0, 0, 0, 0, True, 0.0400232, "2185d7e22a99696c"),
}


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_repetition_1_reproduces_the_uncoded_link(case):
    rng = np.random.default_rng(5)
    payload = Payload(
        [
            Segment("w", rng.integers(0, 256, 20000, dtype=np.uint8).tobytes(), False, packed_format(8)),
            Segment("f", rng.standard_normal(500).astype("<f4").tobytes(), False, FORMAT_F32),
            Segment("w/q", rng.bytes(3000), True),
        ]
    )
    name, seed = case.split("/")
    params = GOLDEN_PARAMS[name]
    t = make_link(params).transmit(payload, derive_rng(int(seed), "golden", name))
    s = t.stats
    digest = hashlib.sha256(t.received.to_bytes()).hexdigest()[:16] if t.received is not None else None
    got = (s.bytes_sent, s.resent_bytes, s.retransmissions, s.bit_errors, s.packets_lost, s.delivered, s.airtime_s, digest)
    assert got == GOLDEN[case]
    assert s.coding_bytes == 0 and s.protected_repetition == 1


def test_auto_choosing_one_copy_is_the_uncoded_link():
    payload = packed_payload(exposed_bytes=50_000, protected_bytes=5000)
    for params in (uncoded("awgn", snr_db=12.0), uncoded("bsc", ber=1e-7), uncoded("fading", snr_db=30.0)):
        auto = link_params(**{**params.model_dump(), "protected_repetition": "auto"})
        for seed in range(3):
            a = make_link(auto).transmit(payload, derive_rng(seed, "one copy"))
            b = make_link(params).transmit(payload, derive_rng(seed, "one copy"))
            assert a.stats.protected_repetition == 1 and a.stats == b.stats and a.received == b.received


def test_ideal_link_counts_a_fixed_repetition():
    payload = packed_payload(exposed_bytes=10_000, protected_bytes=3000)
    n_prot = -(-payload.protected_nbytes // 1000)
    auto = make_link(uncoded("ideal", packet_bytes=1000, protected_repetition="auto")).transmit(payload, derive_rng(0)).stats
    assert auto.protected_repetition == 1 and auto.coding_bytes == 0
    s = make_link(uncoded("ideal", packet_bytes=1000, protected_repetition=3)).transmit(payload, derive_rng(0)).stats
    assert s.protected_repetition == 3 and s.coding_bytes == 2 * (payload.protected_nbytes + CRC_BYTES * n_prot)
    assert s.bytes_sent == auto.bytes_sent + s.coding_bytes and s.bits_sent == 8 * s.bytes_sent


def test_failure_names_the_copies():
    payload = packed_payload(exposed_bytes=100, protected_bytes=5000)
    t = make_link(uncoded("bsc", ber=0.2, packet_bytes=1024, max_attempts=2, protected_repetition=5)).transmit(payload, derive_rng(0))
    assert t.stats.failure == "protected packet 0 not delivered after 2 attempts of 5 copies"


@pytest.mark.parametrize("value", [0, 1.5, "x", True, -3])
def test_repetition_validation(value):
    with pytest.raises(ValidationError, match=r"protected_repetition\n  .* must be 'auto' or a whole number >= 1"):
        link_params("awgn", protected_repetition=value)
    assert link_params("awgn", protected_repetition=4.0).protected_repetition == 4
    assert link_params("awgn").protected_repetition == "auto"  # the one default, as in the config
