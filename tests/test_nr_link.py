"""The nr link: 5G NR code blocks at an MCS, HARQ with chase combining, Sionna's BLER tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from testbed.links import link_params, make_link
from testbed.links.fading import FadingLink
from testbed.links.modulation import ber_from_ebn0, ber_square_qam
from testbed.links.nr import TABLES, bler, choose_mcs, plan, survival
from testbed.payload import Payload, Segment, packed_format
from testbed.rng import derive_rng
from tests.test_links import build_payload, check_delivered

Z999 = 3.2905  # two-sided 99.9% normal quantile


def within_binomial(k: int, n: int, p: float) -> bool:
    return abs(k - n * p) <= Z999 * math.sqrt(n * p * (1 - p)) + 1


def payload_of(exposed: int, protected: int = 64, seed: int = 0) -> Payload:
    rng = np.random.default_rng(seed)
    return Payload(
        [
            Segment("w", rng.integers(0, 256, exposed, dtype=np.uint8).tobytes(), False, packed_format(8)),
            Segment("w/q", rng.bytes(protected), True),
        ]
    )


def nr(**values):
    return make_link(link_params("nr", **values))


# ---- modulation: the raw BER of a failed code block --------------------------------------------


@pytest.mark.parametrize("esn0_db", [-3.0, 0.0, 5.0, 10.0, 15.0])
def test_square_qam_ber_is_the_closed_forms_of_qpsk_and_16qam(esn0_db):
    esn0 = 10 ** (esn0_db / 10)
    assert ber_square_qam(esn0, 2) == pytest.approx(ber_from_ebn0(esn0 / 2, "qpsk"), rel=1e-12)
    assert ber_square_qam(esn0, 4) == pytest.approx(ber_from_ebn0(esn0 / 4, "16qam"), rel=1e-12)


@pytest.mark.parametrize("bits, esn0_db", [(6, 12.0), (6, 18.0), (8, 20.0)])
def test_square_qam_ber_matches_monte_carlo(bits, esn0_db):
    """Gray square QAM: each dimension a Gray PAM of 2^(bits/2) levels, decided by the nearest level."""
    rng = np.random.default_rng(bits)
    side, half = 1 << (bits // 2), bits // 2
    n = 200_000
    index = rng.integers(0, side, (n, 2))
    gray = index ^ (index >> 1)
    levels = 2 * index - (side - 1)
    es = 2 * (side**2 - 1) / 3  # mean energy of the two PAM dimensions
    sigma = math.sqrt(es / 10 ** (esn0_db / 10) / 2)
    decided = np.clip(np.rint((levels + sigma * rng.standard_normal(levels.shape) + side - 1) / 2), 0, side - 1).astype(np.int64)
    wrong = gray ^ (decided ^ (decided >> 1))
    errors = int(sum(((wrong >> b) & 1).sum() for b in range(half)))
    assert within_binomial(errors, n * bits, ber_square_qam(10 ** (esn0_db / 10), bits))


# ---- segmentation, link adaptation, HARQ -----------------------------------------------------------


def test_segmentation_follows_38_212():
    """CB sizes: TB + TB CRC (+ CRC-24 per CB when segmented) split evenly; coded bits fill the slot."""
    for table in ("pdsch1", "pusch1"):
        for mcs in (TABLES[table][2][0], 10, 20, 27):
            p = plan(table, mcs, 51)
            assert p.tb_bits % 8 == 0 and p.tb_crc == (24 if p.tb_bits > 3824 else 16)
            assert p.cb_crc == (24 if p.cbs > 1 else 0)
            assert p.cbs * p.cb_bits == p.tb_bits + p.tb_crc + p.cbs * p.cb_crc
            assert p.slot_bits == 51 * 12 * 13 * p.bits_per_symbol and len(p.coded) == p.cbs
            assert max(p.cb_bits - p.cb_crc, 0) <= (8448 if p.cbs > 1 else 8448 + 24)


def test_link_adaptation_picks_the_highest_mcs_meeting_the_target():
    last = None
    for snr_db in np.arange(-4.0, 26.0, 1.5):
        mcs = choose_mcs("pdsch1", 51, float(snr_db), 0.1)
        candidates = list(TABLES["pdsch1"][2])
        blers = {m: bler("pdsch1", (m,), (plan("pdsch1", m, 51).cb_bits,), (float(snr_db),))[0] for m in candidates}
        meets = [m for m in candidates if blers[m] <= 0.1]
        assert mcs == (meets[-1] if meets else candidates[0])
        assert last is None or mcs >= last  # a better channel never gets a lower MCS
        last = mcs


def test_mcs_without_a_table_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"mcs_index 2 has no BLER table in pdsch1 \(Sionna's tables cover MCS 3..28\)"):
        nr(mcs_index=2)
    with pytest.raises(ValueError, match="mcs_index"):
        link_params("nr", mcs_index=29)


def test_a_fleet_with_such_an_mcs_is_refused_before_anything_runs():
    from testbed.fleet import Device, Fleet, FleetError

    with pytest.raises(FleetError, match=r"^fleet.link: device 3: nr link: mcs_index 2 has no BLER table in pdsch1"):
        Fleet([Device(2, link_params("nr")), Device(3, link_params("nr", mcs_index=2))])


def test_harq_counts_follow_the_chase_combined_bler():
    """First sends that fail: Binomial(n, BLER(snr)); failures after two: Binomial(n, BLER(snr) BLER(2 snr))."""
    snr_db, mcs = 11.0, 20  # mid-waterfall of MCS 20 at one send, through at two
    link = nr(snr_db=snr_db, mcs_index=mcs, max_attempts=2, failed_exposed="erased")
    tb = plan("pdsch1", mcs, 51)
    left = survival("pdsch1", tb, snr_db, 2)
    assert 0.05 < left[0] < 0.95 and left[1] == pytest.approx(left[0] * bler("pdsch1", (mcs,), (tb.cb_bits,), (snr_db + 10 * math.log10(2),))[0])
    resent = lost = n = 0
    for key in range(5):
        t = link.transmit(payload_of(300_000, seed=key), derive_rng(key, "harq"))
        exposed_cbs = tb.cbs * -(-8 * 300_000 // tb.tb_bits)
        protected_cbs = t.stats.packets - exposed_cbs
        n += t.stats.packets
        resent += t.stats.retransmissions
        lost += t.stats.packets_lost
        assert protected_cbs == tb.cbs  # the framing and the 64 protected bytes: one TB
    assert within_binomial(resent, n, left[0])
    assert within_binomial(lost, n - 5 * tb.cbs, left[1])


def test_more_harq_transmissions_get_a_failing_block_through():
    """Below MCS 20's threshold one send fails; chase combining four adds 6 dB and delivers."""
    sent = payload_of(2000, protected=4000)
    one = nr(snr_db=8.0, mcs_index=20, max_attempts=1).transmit(sent, derive_rng(0, "cc"))
    four = nr(snr_db=8.0, mcs_index=20, max_attempts=4).transmit(sent, derive_rng(0, "cc"))
    assert not one.stats.delivered and one.received is None
    assert one.stats.failure.startswith("protected code block ") and "after 1 transmissions at MCS 20" in one.stats.failure
    assert four.stats.delivered and four.received.to_bytes()[:64] == sent.to_bytes()[:64]


def test_failed_exposed_blocks_carry_the_raw_ber_of_their_modulation():
    """64-QAM far below its threshold: each exposed block, sent once, fails; the protected one gets
    through by chase-combining up to 8 sends (+9 dB)."""
    snr_db, mcs = 6.0, 20
    sent = payload_of(400_000)
    t = nr(snr_db=snr_db, mcs_index=mcs, max_attempts=8, exposed_harq="once").transmit(sent, derive_rng(1, "raw"))
    expected = ber_square_qam(10 ** (snr_db / 10), 6)
    assert t.stats.delivered and t.stats.ber == pytest.approx(expected, rel=1e-6)
    assert within_binomial(t.stats.bit_errors, 8 * 400_000, expected)
    erased = nr(snr_db=snr_db, mcs_index=mcs, max_attempts=8, exposed_harq="once", failed_exposed="erased").transmit(sent, derive_rng(1, "raw"))
    assert erased.stats.bit_errors == 0 and erased.erased == {"w": [(0, 400_000)]}
    assert erased.received["w"].data == bytes(400_000)


def test_fading_draws_the_gain_of_the_fading_link():
    for key in range(5):
        a = nr(snr_db=12.0, fading="rayleigh").snr(derive_rng(key, "f"))
        b = FadingLink(link_params("fading", snr_db=12.0)).channel(derive_rng(key, "f")).snr_db
        assert a == b


def test_airtime_from_slots_numerology_and_harq_rounds():
    sent = payload_of(100_000)
    t0 = nr(snr_db=25.0, mcs_index=20, numerology=0, latency_ms=0).transmit(sent, derive_rng(0))
    t1 = nr(snr_db=25.0, mcs_index=20, numerology=1, latency_ms=0).transmit(sent, derive_rng(0))
    tb = plan("pdsch1", 20, 51)
    slots = -(-8 * sent.protected_nbytes // tb.tb_bits) + -(-8 * sent.exposed_nbytes // tb.tb_bits)
    assert t0.stats.retransmissions == 0 and t0.stats.airtime_s == pytest.approx(slots * 1e-3)
    assert t1.stats.airtime_s == pytest.approx(t0.stats.airtime_s / 2)
    wider = nr(snr_db=25.0, mcs_index=20, prbs=102, latency_ms=0).transmit(sent, derive_rng(0))
    assert wider.stats.airtime_s < 0.6 * t1.stats.airtime_s  # twice the PRBs: about half the slots


# ---- properties --------------------------------------------------------------------------------------


@st.composite
def nr_params(draw):
    table = draw(st.sampled_from(sorted(TABLES)))
    mcs = draw(st.one_of(st.just("auto"), st.sampled_from(list(TABLES[table][2]))))
    return link_params(
        "nr",
        snr_db=draw(st.floats(-6.0, 30.0)),
        fading=draw(st.sampled_from(["none", "rayleigh"])),
        mcs_table=table,
        mcs_index=mcs,
        target_bler=draw(st.sampled_from([0.01, 0.1, 0.3])),
        prbs=draw(st.integers(1, 275)),
        numerology=draw(st.integers(0, 4)),
        max_attempts=draw(st.integers(1, 6)),
        latency_ms=draw(st.floats(0.0, 20.0)),
        exposed_harq=draw(st.sampled_from(["harq", "once"])),
        failed_exposed=draw(st.sampled_from(["bit_errors", "erased"])),
    )


segment_strategy = st.tuples(st.integers(0, 3000), st.booleans(), st.sampled_from(["bytes", "packed", "f32", "f16"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=st.lists(segment_strategy, min_size=1, max_size=4), params=nr_params(), seed=st.integers(0, 2**32))
def test_nr_properties(spec, params, seed):
    payload = build_payload(spec, seed)
    link = make_link(params)
    t = link.transmit(payload, derive_rng(seed, "prop"))
    again = link.transmit(payload, derive_rng(seed, "prop"))
    assert t.stats == again.stats and t.received == again.received and t.erased == again.erased  # pure given the seed
    s = t.stats
    event(f"{'delivered' if s.delivered else 'failed'}, {'errors' if s.bit_errors else 'clean'}")
    tb = plan(params.mcs_table, s.mcs, params.prbs)
    tbs = -(-8 * payload.protected_nbytes // tb.tb_bits) + -(-8 * payload.exposed_nbytes // tb.tb_bits)
    # bytes are exact: the TBs' bits (data, padding, CRCs), then the LDPC parity filling the slots, then resends
    assert s.payload_bytes == payload.nbytes and 8 * (s.payload_bytes + s.overhead_bytes) == tbs * (tb.tb_bits + tb.tb_crc + tb.cbs * tb.cb_crc)
    assert 8 * (s.payload_bytes + s.overhead_bytes + s.coding_bytes) == tbs * tb.slot_bits
    assert s.bytes_sent == s.payload_bytes + s.overhead_bytes + s.coding_bytes + s.resent_bytes and s.bits_sent == 8 * s.bytes_sent
    assert s.packets == tbs * tb.cbs and (s.retransmissions > 0) == (s.resent_bytes > 0)
    assert s.airtime_s >= tbs / 2**params.numerology * 1e-3 + params.latency_ms * 1e-3 - 1e-12
    if params.mcs_index != "auto":
        assert s.mcs == params.mcs_index
    if not s.delivered:
        assert t.received is None and s.failure.startswith("protected code block ")
        return
    check_delivered(payload, t)
    if params.failed_exposed == "erased":
        assert s.bit_errors == 0
    else:
        assert t.erased == {} and s.packets_lost == 0
