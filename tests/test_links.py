from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from strategies.registry import build
from testbed.links import (
    CRC_BYTES,
    MODELS,
    AnalogLink,
    AWGNLink,
    BSCLink,
    ErasureLink,
    FadingLink,
    IdealLink,
    LinkParams,
    ber_from_snr,
    error_positions,
    make_link,
)
from testbed.payload import FORMAT_BYTES, FORMAT_F16, FORMAT_F32, Payload, Segment, packed_format
from testbed.rng import derive_rng

Z999 = 3.2905  # two-sided 99.9% normal quantile


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
        (LinkParams("bsc", ber=1e-3, **ARQ), 1e-3),
        (LinkParams("bsc", ber=0.02, packet_bytes=4, max_attempts=500), 0.02),
        (LinkParams("awgn", snr_db=5.0, modulation="bpsk", **ARQ), ber_from_snr(5.0, "bpsk")),
        (LinkParams("awgn", snr_db=10.0, modulation="16qam", **ARQ), ber_from_snr(10.0, "16qam")),
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
    t = make_link(LinkParams("bsc", ber=0.01, packet_bytes=8, max_attempts=100)).transmit(payload, derive_rng(0, "spread"))
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
    link = make_link(LinkParams("analog", snr_db=snr_db, packet_bytes=1, max_attempts=5000))
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
    t = make_link(LinkParams("analog", snr_db=snr, packet_bytes=16, max_attempts=200)).transmit(payload, derive_rng(0, "f16"))
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
    t = make_link(LinkParams("erasure", loss=loss, packet_bytes=pb)).transmit(payload, derive_rng(0, "erasure"))
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
    t = make_link(LinkParams("erasure", loss=0.999999, packet_bytes=4, max_attempts=10**9)).transmit(payload, derive_rng(0))
    assert t.erased == {"a": [(0, 10)], "b": [(0, 10)]}
    assert t.stats.packets_lost == 5
    assert t.received["a"].data == bytes(10) and t.received["s"].data == b"\x01" * 5


@pytest.mark.parametrize("loss", [0.05, 0.3])
def test_retransmissions_of_lost_protected_packets(loss):
    pb = 128
    payload = Payload([Segment("side", np.random.default_rng(0).bytes(pb * 4000), True)])
    t = make_link(LinkParams("erasure", loss=loss, packet_bytes=pb, max_attempts=100)).transmit(payload, derive_rng(0, str(loss)))
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
    t = make_link(LinkParams("bsc", ber=ber, packet_bytes=pb, max_attempts=100)).transmit(payload, derive_rng(0, "arq"))
    s = (1 - ber) ** (8 * (pb + CRC_BYTES))
    n = -(-payload.nbytes // pb)
    assert abs(t.stats.retransmissions - n * (1 / s - 1)) < Z999 * math.sqrt(n * (1 - s) / s**2)
    assert t.received["side"] == payload["side"]


def test_delivery_fails_when_attempts_run_out():
    payload = packed_payload(exposed_bytes=1000, protected_bytes=5000)
    t = make_link(LinkParams("bsc", ber=0.01, packet_bytes=1024, max_attempts=2)).transmit(payload, derive_rng(0, "fail"))
    assert t.received is None and not t.stats.delivered
    assert t.stats.failure == "protected packet 0 not delivered after 2 attempts"
    s = t.stats
    assert s.retransmissions >= 1 and s.bytes_sent == s.payload_bytes + s.overhead_bytes + s.resent_bytes
    assert s.airtime_s == pytest.approx(s.bits_sent / 10e6 + 0.020 * 2)  # one resend round


# ---- accounting -------------------------------------------------------------------------


def test_ideal_link_costs_nothing_and_copies_nothing():
    payload = packed_payload(exposed_bytes=10_000, protected_bytes=3000)
    p = LinkParams("ideal", bandwidth_mbps=2.0, latency_ms=5.0, packet_bytes=1000)
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
    p = LinkParams("erasure", loss=0.5, packet_bytes=64, max_attempts=1000, bandwidth_mbps=1.0, latency_ms=10.0)
    s = make_link(p).transmit(payload, derive_rng(0, "rounds")).stats
    rounds = (s.airtime_s - s.bits_sent / 1e6) / 0.010 - 1
    assert rounds == pytest.approx(round(rounds), abs=1e-6)
    # 2000 packets each needing Geometric(1/2) sends: the worst needs about log2(2000) ~ 11
    assert 5 <= round(rounds) <= 25


def test_make_link_classes():
    classes = {"ideal": IdealLink, "bsc": BSCLink, "awgn": AWGNLink, "analog": AnalogLink, "erasure": ErasureLink, "fading": FadingLink}
    for model in MODELS:
        assert type(make_link(LinkParams(model))) is classes[model]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(model="wifi"), "link model: 'wifi' must be one of"),
        (dict(modulation="8psk"), "link modulation"),
        (dict(bandwidth_mbps=0.0), "link bandwidth_mbps: 0.0 must be > 0"),
        (dict(loss=1.0), r"link loss: 1.0 must be in \[0, 1\)"),
        (dict(ber=-0.1), "link ber"),
        (dict(packet_bytes=0), "link packet_bytes"),
        (dict(max_attempts=1.5), "link max_attempts"),
        (dict(snr_db=math.nan), "link snr_db"),
    ],
)
def test_link_params_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LinkParams(**kwargs)


# ---- fading --------------------------------------------------------------------------------


def test_fading_gain_is_exponential_and_sets_the_ber():
    link = make_link(LinkParams("fading", snr_db=10.0, modulation="qpsk"))
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
    link = make_link(LinkParams("bsc", ber=0.01, packet_bytes=8, max_attempts=100))

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
    link = make_link(LinkParams("awgn", snr_db=4.0, packet_bytes=16, max_attempts=200))
    t = link.transmit(payload, derive_rng(0, "realistic"))
    assert t.stats.delivered and t.stats.bit_errors > 0
    received = Payload.from_bytes(t.received.to_bytes())  # protected checksums still hold
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
params_strategy = st.builds(
    LinkParams,
    model=st.sampled_from(MODELS),
    snr_db=st.one_of(st.floats(-2.0, 30.0), st.floats(12.0, 30.0)),
    ber=st.sampled_from([0.0, 1e-4, 1e-2, 0.1]),
    modulation=st.sampled_from(["bpsk", "qpsk", "16qam"]),
    bandwidth_mbps=st.floats(0.1, 100.0),
    latency_ms=st.floats(0.0, 50.0),
    packet_bytes=st.integers(1, 300),
    loss=st.sampled_from([0.0, 0.1, 0.5]),
    max_attempts=st.integers(1, 30),
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
@given(spec=st.lists(segment_strategy, min_size=1, max_size=5), params=params_strategy, seed=st.integers(0, 2**32))
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
    assert flipped == s.bit_errors  # data differs exactly where errors (or erasures) landed
    if params.model in ("ideal", "erasure"):
        assert s.bit_errors == 0
    if params.model != "erasure":
        assert t.erased == {} and s.packets_lost == 0
    assert Payload.from_bytes(r.to_bytes()) == r  # the protected checksums still hold
