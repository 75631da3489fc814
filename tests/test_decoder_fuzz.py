"""Fuzzing the receiver: whatever arrives, only PayloadError escapes, and protected damage is detected.

Inputs: random bytes; valid payloads of every strategy truncated, bit-flipped,
byte-mutated or extended; payloads decoded by another strategy or against
another model's template; and payloads whose segments were replaced behind
the checksums' back (a sender writing nonsense). Sizes are bounded, so a hang
shows up as a hypothesis deadline failure.
"""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from strategies.registry import available, build
from testbed.models.symmetric import make_symmetric, strip_symmetric
from testbed.payload import Payload, PayloadError

SETTINGS = settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.too_slow])

SPECS = {
    "raw32": {"strategy": "raw"},
    "raw16": {"strategy": "raw", "dtype": "float16"},
    "q4": {"strategy": "quantise", "bits": 4},
    "q8pc-rans": {"strategy": "quantise", "bits": 8, "per_channel": True, "entropy": True},
    "q5-rans": {"strategy": "quantise", "bits": 5, "entropy": True},
    "sym-dof": {"strategy": "symmetry", "group": "central_skew", "bits": 6},
    "sym-dof-f32": {"strategy": "symmetry", "group": "central_skew"},
    "sym-full": {"strategy": "symmetry", "group": "central_skew", "mode": "full+project", "bits": 8},
    "sym-posthoc-rans": {"strategy": "symmetry", "mode": "posthoc", "bits": 8, "entropy": True},
    "prune-mask": {"strategy": "prune", "keep": 0.5, "bits": 8},
    "prune-mask-exposed": {"strategy": "prune", "keep": 0.5, "bits": 8, "positions": "exposed"},
    "prune-idx-exposed": {"strategy": "prune", "keep": 0.03, "positions": "exposed", "method": "random"},
    "prune-match-rans": {"strategy": "prune", "match": "central_skew", "bits": 8, "entropy": True},
    "lowrank": {"strategy": "lowrank", "rank": 2, "bits": 8},
    "monocnn": {"strategy": "monocnn", "seeds_per_layer": 3, "bits": 8},
}
SPECS = {key: spec for key, spec in SPECS.items() if spec["strategy"] in available()}


class Net(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 12, 5, padding=2, bias=False)
        self.conv3 = nn.Conv2d(12, 12, 3, padding=1)  # stride-1 3x3: MonoCNN replaces it
        self.fc = nn.Linear(12, 4)


@functools.cache
def model_state(kind: str, width: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(width)
    if kind == "monocnn":
        net = build(SPECS["monocnn"]).prepare_model(Net(width))
    else:  # symmetric, so that every other strategy (dof mode included) accepts it
        net = strip_symmetric(make_symmetric(Net(width), "central_skew"))
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def state(key: str, width: int = 8) -> dict[str, torch.Tensor]:
    return model_state("monocnn" if key == "monocnn" else "plain", width)


@functools.cache
def encoded(key: str) -> Payload:
    return build(SPECS[key]).encode(state(key))


def decode_or_payload_error(key: str, wire: bytes, width: int = 8) -> bool:
    """True if it decoded; False if a PayloadError said why not. Anything else fails the test."""
    try:
        payload = Payload.from_bytes(wire)
        decoded = build(SPECS[key]).decode(payload, state(key, width))
    except PayloadError as exc:
        assert str(exc).startswith("payload segment '") and "\n" not in str(exc)
        return False
    assert decoded.keys() == state(key, width).keys()
    for name, tensor in state(key, width).items():
        assert decoded[name].shape == tensor.shape and decoded[name].dtype == tensor.dtype
    return True


def protected_ranges(payload: Payload) -> list[tuple[int, int]]:
    """Byte ranges of the wire a checksum covers: header, protected data, trailer."""
    header = len(payload.header_bytes())
    ranges, pos = [(0, header)], header
    for s in payload.segments:
        if s.protected:
            ranges.append((pos, pos + s.nbytes))
        pos += s.nbytes
    ranges.append((pos, pos + 4))
    return ranges


keys = st.sampled_from(sorted(SPECS))


@SETTINGS
@given(st.binary(max_size=3000))
def test_random_bytes(data: bytes) -> None:
    for prefix in (b"", b"TBP\x01"):
        with pytest.raises(PayloadError):
            Payload.from_bytes(prefix + data)


@SETTINGS
@given(keys, st.data())
def test_truncation_is_detected(key: str, data) -> None:
    wire = encoded(key).to_bytes()
    cut = data.draw(st.integers(0, len(wire) - 1))
    with pytest.raises(PayloadError):
        Payload.from_bytes(wire[:cut])
    with pytest.raises(PayloadError):
        Payload.from_bytes(wire + data.draw(st.binary(min_size=1, max_size=8)))


@SETTINGS
@given(keys, st.data())
def test_bit_flips(key: str, data) -> None:
    payload = encoded(key)
    wire = bytearray(payload.to_bytes())
    bits = data.draw(st.lists(st.integers(0, 8 * len(wire) - 1), min_size=1, max_size=6, unique=True))
    for bit in bits:
        wire[bit // 8] ^= 1 << (bit % 8)
    hits_protected = any(lo <= bit // 8 < hi for bit in bits for lo, hi in protected_ranges(payload))
    decoded = decode_or_payload_error(key, bytes(wire))
    if hits_protected:
        assert not decoded, "damage to protected bytes went undetected"
    else:
        assert decoded, "damage to exposed values must decode"


@SETTINGS
@given(keys, st.data())
def test_byte_mutations(key: str, data) -> None:
    payload = encoded(key)
    wire = bytearray(payload.to_bytes())
    positions = data.draw(st.lists(st.integers(0, len(wire) - 1), min_size=1, max_size=5, unique=True))
    for pos in positions:
        wire[pos] = data.draw(st.integers(0, 255))
    changed = [p for p in positions if wire[p] != payload.to_bytes()[p]]
    hits_protected = any(lo <= p < hi for p in changed for lo, hi in protected_ranges(payload))
    decoded = decode_or_payload_error(key, bytes(wire))
    assert decoded != hits_protected


@pytest.mark.parametrize("sender", sorted(SPECS))
def test_payload_of_another_strategy_or_model(sender: str) -> None:
    wire = encoded(sender).to_bytes()
    for receiver in SPECS:
        same = SPECS[receiver] == SPECS[sender]
        assert decode_or_payload_error(receiver, wire) or not same
        assert not decode_or_payload_error(receiver, wire, width=6)  # another model's shapes


@SETTINGS
@given(keys, keys, st.data())
def test_segments_replaced_behind_the_checksums(key: str, receiver: str, data) -> None:
    payload = encoded(key)
    segments = list(payload.segments)
    for _ in range(data.draw(st.integers(1, 3))):
        index = data.draw(st.integers(0, len(segments) - 1))
        old = segments[index]
        how = data.draw(st.sampled_from(["random", "truncate", "extend", "flip"]))
        if how == "random":
            new = data.draw(st.binary(max_size=64))
        elif how == "truncate":
            new = old.data[: data.draw(st.integers(0, max(0, old.nbytes - 1)))]
        elif how == "extend":
            new = old.data + data.draw(st.binary(min_size=1, max_size=16))
        else:
            new = bytearray(old.data or b"\x00")
            new[data.draw(st.integers(0, len(new) - 1))] ^= 1 << data.draw(st.integers(0, 7))
        segments[index] = old.replace_data(bytes(new))
    if data.draw(st.booleans()):
        segments.pop(data.draw(st.integers(0, len(segments) - 1)))
    decode_or_payload_error(receiver, Payload(segments).to_bytes())


def test_histogram_with_overflowing_varints_is_a_payload_error() -> None:
    payload = encoded("q5-rans")
    side = payload["conv2.weight/q"]
    assert side.data[8] == 1  # conv2 went through rANS: lo, scale, flag, histogram
    damaged = side.data[:9] + bytes([1]) + b"\xff" * 9 + b"\x01" + b"\x05"
    segments = [s.replace_data(damaged) if s.name == side.name else s for s in payload.segments]
    with pytest.raises(PayloadError) as info:
        build(SPECS["q5-rans"]).decode(Payload(segments), state("q5-rans"))
    assert info.value.segment == "conv2.weight"
