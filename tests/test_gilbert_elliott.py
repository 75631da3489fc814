"""The Gilbert-Elliott burst channel: its runs, its mean BER and burst length, and its protected packets."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.links import get, link_params, make_link
from testbed.links.gilbert_elliott import BurstChannel, GilbertElliottLink
from testbed.links.protection import CRC_BYTES, MAX_REPETITION, choose_repetition
from testbed.payload import Payload, Segment, packed_format
from testbed.rng import derive_rng

Z = 4.5  # a wide normal quantile: these checks draw many samples


def channel(p=1e-3, r=0.05, ber_good=1e-4, ber_bad=0.2) -> BurstChannel:
    link = make_link(link_params("gilbert_elliott", p_good_to_bad=p, p_bad_to_good=r, ber_good=ber_good, ber_bad=ber_bad))
    return link.channel(derive_rng(0))


def test_registered_as_one_class():
    assert get("gilbert_elliott") is GilbertElliottLink and GilbertElliottLink.model == "gilbert_elliott"


@pytest.mark.parametrize("p, r, ber_good, ber_bad", [(1e-3, 0.05, 1e-4, 0.2), (0.02, 0.3, 0.0, 0.5), (1e-4, 0.01, 1e-5, 0.05)])
def test_mean_ber_is_the_stationary_mix(p, r, ber_good, ber_bad):
    ch = channel(p, r, ber_good, ber_bad)
    pi_bad = p / (p + r)
    mean = (1 - pi_bad) * ber_good + pi_bad * ber_bad
    assert ch.ber == pytest.approx(mean, rel=1e-12) and ch.pi_bad == pytest.approx(pi_bad)
    # independent streams (each starts from the stationary state): the sample mean of their BERs
    streams, nbits = 60, 1_000_000
    rates = np.array([ch.error_positions(nbits, derive_rng(1, "ge mean", str(p), i)).size / nbits for i in range(streams)])
    assert abs(rates.mean() - mean) < Z * rates.std(ddof=1) / math.sqrt(streams)
    assert abs(rates.mean() - mean) < 0.1 * mean  # and close in absolute terms


@pytest.mark.parametrize("p, r", [(1e-3, 0.1), (0.01, 0.02), (0.2, 0.5)])
def test_bursts_last_one_over_r_bits_and_gaps_one_over_p(p, r):
    ch = channel(p, r, ber_good=0.0, ber_bad=1.0)  # every bad bit is an error: the errors are the bursts
    errors = ch.error_positions(20_000_000 if p < 0.01 else 2_000_000, derive_rng(2, "ge bursts", str(p)))
    breaks = np.flatnonzero(np.diff(errors) > 1)
    starts = np.concatenate(([errors[0]], errors[breaks + 1]))
    ends = np.concatenate((errors[breaks], [errors[-1]])) + 1
    bursts, gaps = (ends - starts)[1:-1], (starts[1:] - ends[:-1])  # whole bursts (not cut by the stream's ends)
    for lengths, q in ((bursts, r), (gaps, p)):  # Geometric(q): mean 1/q, variance (1 - q)/q^2
        assert lengths.size > 300
        assert abs(lengths.mean() - 1 / q) < Z * math.sqrt((1 - q) / q**2 / lengths.size)


def test_streams_start_in_the_stationary_state():
    ch = channel(p=0.01, r=0.04, ber_good=0.0, ber_bad=1.0)  # pi_bad = 0.2
    n = 10_000
    first_bad = sum(ch.error_positions(1, derive_rng(3, "ge start", i)).size for i in range(n))
    assert abs(first_bad - n * 0.2) < Z * math.sqrt(n * 0.2 * 0.8)


chains = st.tuples(
    st.floats(0.0, 1.0),  # p
    st.floats(1e-3, 1.0),  # r
    st.sampled_from([0.0, 1e-3, 0.05, 0.5, 1.0]),  # ber_good
    st.sampled_from([0.0, 0.1, 0.5, 1.0]),  # ber_bad
)


@settings(max_examples=200, deadline=None)
@given(chain=chains, nbits=st.integers(0, 50_000), seed=st.integers(0, 2**32))
def test_runs_tile_the_stream_and_errors_fall_inside(chain, nbits, seed):
    ch = BurstChannel(ber=0.0, p=chain[0], r=chain[1], ber_good=chain[2], ber_bad=chain[3])
    starts, lengths, bad = ch.runs(nbits, derive_rng(seed, "stream"))
    assert int(lengths.sum()) == nbits and np.all(lengths >= 1)
    assert np.array_equal(starts, np.cumsum(lengths) - lengths)
    assert np.all(bad[1:] != bad[:-1])  # the states alternate
    errors = ch.error_positions(nbits, derive_rng(seed, "stream"))  # the same runs, drawn first
    assert np.all(np.diff(errors) > 0) and (errors.size == 0 or (errors[0] >= 0 and errors[-1] < nbits))
    in_bad = bad[np.searchsorted(starts + lengths, errors, side="right")]
    assert (ch.ber_bad > 0 or not in_bad.any()) and (ch.ber_good > 0 or in_bad.all())
    if ch.ber_bad == 1.0:  # every bad bit flips
        assert int(lengths[bad].sum()) == int(in_bad.sum())


def brute_force_success(ch: BurstChannel, bits: int, copies: int) -> float:
    """P(some copy clean), summing over every state sequence of the ``bits * copies`` bits."""
    chain = [[1 - ch.p, ch.p], [ch.r, 1 - ch.r]]
    clean = [1 - ch.ber_good, 1 - ch.ber_bad]
    total = 0.0
    for states in itertools.product((0, 1), repeat=bits * copies):
        prob = (1 - ch.pi_bad, ch.pi_bad)[states[0]]
        for a, b in zip(states, states[1:]):
            prob *= chain[a][b]
        all_hit = 1.0
        for c in range(copies):
            all_hit *= 1 - math.prod(clean[s] for s in states[c * bits : (c + 1) * bits])
        total += prob * (1 - all_hit)
    return total


@settings(max_examples=60, deadline=None)
@given(chain=chains, bits=st.integers(1, 6), copies=st.integers(1, 2))
def test_send_success_is_exact(chain, bits, copies):
    ch = BurstChannel(ber=0.0, p=chain[0], r=chain[1], ber_good=chain[2], ber_bad=chain[3])
    assert ch.send_success(bits, copies) == pytest.approx(brute_force_success(ch, bits, copies), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(chain=chains, bits=st.integers(1, 9000), copies=st.integers(1, 5))
def test_without_memory_in_the_ber_copies_are_independent(chain, bits, copies):
    ber = chain[2]
    ch = BurstChannel(ber=ber, p=chain[0], r=chain[1], ber_good=ber, ber_bad=ber)
    one = (1 - ber) ** bits
    assert ch.send_success(bits, copies) == pytest.approx(1 - (1 - one) ** copies, abs=1e-9)


@pytest.mark.parametrize("copies", [1, 3])
def test_simulated_sends_match_the_exact_success_probability(copies):
    ch = channel(p=2e-3, r=0.02, ber_good=1e-5, ber_bad=0.05)
    bits = 8 * (64 + CRC_BYTES)
    success = ch.send_success(bits, copies)
    assert 0.3 < success < 0.97
    n = 4000  # one packet per transmission: independent samples
    sends = np.array([ch.draw_sends([(1, bits)], copies, 1000, derive_rng(4, "ge sends", copies, i))[0][0] for i in range(n)])
    first = int(np.sum(sends == 1))
    assert abs(first - n * success) < Z * math.sqrt(n * success * (1 - success))
    # rounds are independent streams: a packet's sends are Geometric(success)
    assert abs(sends.mean() - 1 / success) < Z * math.sqrt((1 - success) / success**2 / n)


def test_auto_picks_the_fewest_copies_meeting_the_target():
    for p, r, ber_bad in [(1e-4, 0.1, 0.1), (1e-3, 0.01, 0.3), (0.01, 0.1, 0.5)]:
        link = make_link(link_params("gilbert_elliott", p_good_to_bad=p, p_bad_to_good=r, ber_bad=ber_bad, packet_bytes=256))
        ch = link.channel(derive_rng(0))
        copies = link.protection.copies(ch)
        bits = 8 * (256 + CRC_BYTES)
        assert copies == choose_repetition(ch, 256)
        assert copies == MAX_REPETITION or ch.send_success(bits, copies) >= 0.9
        assert all(ch.send_success(bits, c) < 0.9 for c in range(1, copies))


def test_a_transmission_over_bursts():
    rng = np.random.default_rng(0)
    payload = Payload([Segment("w", rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes(), False, packed_format(8)),
                       Segment("w/q", rng.bytes(4000), True)])
    link = make_link(link_params("gilbert_elliott", p_good_to_bad=1e-3, p_bad_to_good=0.02, ber_good=0.0, ber_bad=0.5,
                                 packet_bytes=128, max_attempts=30))
    t = link.transmit(payload, derive_rng(5, "ge transmit"))
    assert t.stats.delivered and t.received["w/q"] == payload["w/q"] and t.stats.retransmissions > 0
    diff = np.unpackbits(np.frombuffer(payload["w"].data, np.uint8) ^ np.frombuffer(t.received["w"].data, np.uint8))
    assert int(diff.sum()) == t.stats.bit_errors > 0
    assert t.stats.ber == pytest.approx(1e-3 / 0.021 * 0.5) and math.isnan(t.stats.snr_db)
    # the errors come in bursts: far more neighbouring errors than independent errors at that rate would give
    errors = np.flatnonzero(diff)
    close = np.mean(np.diff(errors) <= 8)
    assert close > 3 * (1 - (1 - t.stats.ber) ** 8)
