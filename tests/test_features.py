"""Feature codecs: bit-exact round trips at the quantised level, exact bytes, fuzzed decoders, the rANS pipeline.

Features are ReLU-like (about half zeros) random tensors and real MNIST-sample
images; sizes stay small so hypothesis can try many shapes.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strategies.entropy import entropy_bits
from testbed import bitpack
from testbed.features import FEATURE_CODECS, FeatureCodecSpecError, build_codec
from testbed.features.quantise import dequantise, quantise
from testbed.features.rans import WIDTHS, occupancy, occupancy_torch, predict
from testbed.payload import CRC_BYTES, FINGERPRINT_BYTES, Payload, PayloadError, Segment

SETTINGS = settings(max_examples=40, deadline=3000, suppress_health_check=[HealthCheck.too_slow])

FEATURE_SPECS = {
    "fp32": {"codec": "float"},
    "fp16": {"codec": "float", "dtype": "float16"},
    "q3": {"codec": "quantised", "bits": 3},
    "q8": {"codec": "quantised", "bits": 8},
    "zlib4": {"codec": "zlib", "bits": 4},
    "zstd6": {"codec": "zstd", "bits": 6},
    "zstd12": {"codec": "zstd", "bits": 12},
    "rans2": {"codec": "rans-features", "bits": 2},
    "rans8": {"codec": "rans-features", "bits": 8},
    "rans5-w1": {"codec": "rans-features", "bits": 5, "width": 1},
    "rans4-w4-size": {"codec": "rans-features", "bits": 4, "symbol_cost_bits": 0},
}
QUANTISED = [k for k, s in FEATURE_SPECS.items() if s["codec"] != "float"]
IMAGE_SPECS = {"png": {"codec": "png"}, "jpeg90": {"codec": "jpeg", "quality": 90}}


def relu_like(shape, seed: int, zeros: float = 0.5, scale: float = 1.0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    x = np.abs(rng.standard_normal(shape)).astype(np.float32) * scale
    x[rng.random(shape) < zeros] = 0.0
    return torch.from_numpy(x)


shapes = st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 7), st.integers(1, 7))


@functools.cache
def mnist_images(n: int = 6) -> torch.Tensor:
    from testbed.config import DataConfig
    from testbed.data import load_data

    return load_data(DataConfig(dataset="mnist-sample"), ".").test_x[:n].clone()


def expected_codes(codec, x):
    q = quantise(x, codec.bits)
    return q.numpy(), q.scale, q.zero


# ---- the quantiser ------------------------------------------------------------------------


@SETTINGS
@given(shapes, st.integers(0, 2**16), st.integers(2, 16), st.floats(0.0, 1.0), st.sampled_from([1e-3, 1.0, 1e3]))
def test_the_quantiser_keeps_zero_exact_and_errs_at_most_half_a_step(shape, seed, bits, zeros, scale):
    x = relu_like(shape, seed, zeros, scale) - (0.3 * scale if seed % 3 == 0 else 0.0)  # some with negatives
    q = quantise(x, bits)
    codes = q.numpy()
    assert codes.max(initial=0) < 1 << bits and 0 <= q.zero < 1 << bits
    back = dequantise(codes, q.scale, q.zero)
    flat = x.numpy().reshape(-1)
    assert np.all(back[flat == 0] == 0)  # zeros stay zeros: the sparse step relies on it
    assert np.abs(back - flat).max(initial=0) <= 0.5 * q.scale * (1 + 1e-3) + 1e-6 * scale


def test_the_quantiser_refuses_non_finite_features():
    with pytest.raises(ValueError, match="non-finite"):
        build_codec({"codec": "rans-features"}).encode(torch.tensor([1.0, float("nan")]))


# ---- round trips and bytes -------------------------------------------------------------------


@pytest.mark.parametrize("key", list(FEATURE_SPECS))
@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**16), zeros=st.sampled_from([0.0, 0.5, 0.95, 1.0]))
def test_round_trips_are_exact_at_the_quantised_level_and_bytes_are_the_wire(key, shape, seed, zeros):
    codec = build_codec(FEATURE_SPECS[key])
    x = relu_like(shape, seed, zeros)
    payload = codec.encode(x)
    wire = payload.to_bytes()
    assert payload.nbytes == len(wire)
    # closed form of the framing: version, fingerprint, a varint per open length, CRC
    open_lengths = [s.nbytes for s, spec in zip(payload.segments, codec.schema(x.shape).specs) if spec.nbytes is None]
    framing = 1 + FINGERPRINT_BYTES + len(bitpack.varints(open_lengths)) + CRC_BYTES
    assert payload.nbytes == framing + sum(s.nbytes for s in payload.segments)
    decoded = codec.decode(codec.read(wire, x.shape), x.shape)
    assert decoded.shape == x.shape and decoded.dtype == torch.float32
    if codec.bits is None:
        expected = x.numpy().astype(np.float16 if codec.options.dtype == "float16" else np.float32)
        assert np.array_equal(decoded.numpy(), expected.astype(np.float32))
    else:
        codes, scale, zero = expected_codes(codec, x)
        assert np.array_equal(decoded.numpy().reshape(-1), dequantise(codes, scale, zero))


@pytest.mark.parametrize("bits", [2, 5, 8])
def test_uncoded_sizes_are_their_closed_forms(bits):
    x = relu_like((2, 3, 5, 7), 1)
    t = x.numel()
    assert build_codec({"codec": "float"}).encode(x).nbytes == 9 + 4 * t
    assert build_codec({"codec": "float", "dtype": "float16"}).encode(x).nbytes == 9 + 2 * t
    # packed codes, then scale (float32) and zero point (uint16)
    assert build_codec({"codec": "quantised", "bits": bits}).encode(x).nbytes == 9 + -(-t * bits // 8) + 6


def test_rans_features_come_within_one_percent_of_the_entropy_plus_side_information():
    x = relu_like((2, 64, 28, 28), 3)
    for bits in (2, 4, 8):
        codec = build_codec({"codec": "rans-features", "bits": bits})
        payload = codec.encode(x)
        streams = payload["features/mask"].nbytes + payload["features/values"].nbytes
        side = payload.nbytes - streams
        reference = entropy_bits(codec.codes(x)) + 8 * side
        assert 8 * payload.nbytes <= 1.01 * reference, bits
        # and the streams themselves within 1% of the codes' entropy
        assert 8 * streams <= 1.01 * entropy_bits(codec.codes(x)) + 64


@SETTINGS
@given(shapes, st.integers(0, 2**16), st.integers(2, 16))
def test_the_torch_sparse_step_for_gpus_gives_the_numpy_bytes(shape, seed, bits):
    q = quantise(relu_like(shape, seed), bits)
    (a_packed, a_values), (b_packed, b_values) = occupancy(q), occupancy_torch(q)
    assert np.array_equal(a_packed, b_packed) and np.array_equal(a_values, b_values)


def test_the_cost_model_predicts_the_coded_size_of_every_width():
    x = relu_like((4, 32, 14, 14), 5)
    for bits in (3, 8):
        q = quantise(x, bits)
        packed, values = occupancy(q)
        predicted = predict(packed, values, bits)
        for width in WIDTHS:
            payload = build_codec({"codec": "rans-features", "bits": bits, "width": width}).encode(x)
            measured = payload.nbytes - payload.framing_nbytes
            assert abs(measured - predicted[width]["bytes"]) <= 8, (bits, width)  # two streams' last words


def test_clustered_zeros_make_wider_patterns_pay():
    # whole runs of 8 zeros (the rest well above one quantiser step): an 8-wide pattern sees them,
    # independent bits do not
    rng = np.random.default_rng(0)
    runs = rng.random(4096) < 0.5
    x = torch.from_numpy(np.repeat(runs, 8) * (1 + np.abs(rng.standard_normal(8 * 4096))).astype(np.float32))
    payloads = {w: build_codec({"codec": "rans-features", "bits": 4, "width": w}).encode(x) for w in WIDTHS}
    sizes = {w: p.nbytes for w, p in payloads.items()}
    chosen = build_codec({"codec": "rans-features", "bits": 4, "symbol_cost_bits": 0}).encode(x)
    # the mask: 1 bit per position at width 1, 1 bit per run of 8 at width 8
    assert payloads[8]["features/mask"].nbytes < payloads[1]["features/mask"].nbytes / 6
    assert chosen.nbytes == min(sizes.values())


@pytest.mark.parametrize("key", list(IMAGE_SPECS))
def test_input_images_round_trip_png_losslessly_and_jpeg_closely(key):
    codec = build_codec(IMAGE_SPECS[key])
    x = mnist_images()
    payload = codec.encode(x)
    decoded = codec.decode(codec.read(payload.to_bytes(), x.shape), x.shape)
    step = float(x.max() - x.min()) / 255
    error = float((decoded - x).abs().max())
    if key == "png":
        assert error < 1e-3 * step  # the 8-bit pixels come back
    else:
        assert error < 40 * step and float((decoded - x).abs().mean()) < 2 * step
    assert payload.nbytes < 9 + 4 * x.numel() / 4  # far below float32


def test_image_codecs_refuse_features_that_are_not_images():
    with pytest.raises(ValueError, match="split point 'input'"):
        build_codec({"codec": "png"}).encode(torch.zeros(2, 8, 4, 4))


# ---- the receiver under attack ----------------------------------------------------------------


ALL_SPECS = {**FEATURE_SPECS, **IMAGE_SPECS}


def _example(key):
    codec = build_codec(ALL_SPECS[key])
    x = mnist_images(2) if key in IMAGE_SPECS else relu_like((2, 3, 6, 5), 11)
    return codec, x, codec.encode(x)


@pytest.mark.parametrize("key", list(ALL_SPECS))
@SETTINGS
@given(data=st.data())
def test_only_payload_error_escapes_the_decoder(key, data):
    codec, x, payload = _example(key)
    wire = bytearray(payload.to_bytes())
    kind = data.draw(st.sampled_from(["random", "truncate", "flip", "lie"]))
    if kind == "random":
        raw = data.draw(st.binary(max_size=600))
    elif kind == "truncate":
        raw = bytes(wire[: data.draw(st.integers(0, len(wire) - 1))])
    elif kind == "flip":
        for pos in data.draw(st.lists(st.integers(0, 8 * len(wire) - 1), min_size=1, max_size=8)):
            wire[pos // 8] ^= 1 << (pos % 8)
        raw = bytes(wire)
    else:  # a sender that lies: a segment's data replaced, framing and checksum made to fit
        index = data.draw(st.integers(0, len(payload.segments) - 1))
        spec = codec.schema(x.shape).specs[index]
        size = spec.nbytes if spec.nbytes is not None else data.draw(st.integers(0, 64))
        junk = data.draw(st.binary(min_size=size, max_size=size))
        segments = [s if i != index else Segment(s.name, junk, s.protected, s.fmt) for i, s in enumerate(payload.segments)]
        raw = Payload(segments, payload.schema).to_bytes()
    try:
        decoded = codec.decode(codec.read(raw, x.shape), x.shape)
    except PayloadError:
        return
    assert decoded.shape == x.shape


@pytest.mark.parametrize("key", ["fp16", "q3"])
def test_exposed_features_decode_whatever_bit_errors_they_carry(key):
    codec, x, payload = _example(key)
    data = bytearray(payload["features"].data)
    for i in range(0, len(data), 3):
        data[i] ^= 0x5A
    damaged = payload.with_segments([payload["features"].replace_data(bytes(data)), *payload.segments[1:]])
    decoded = codec.decode(codec.read(damaged.to_bytes(), x.shape), x.shape)  # the checksum covers no exposed data
    assert decoded.shape == x.shape


def test_a_payload_for_another_shape_or_codec_is_refused_by_its_fingerprint():
    codec, x, payload = _example("rans8")
    with pytest.raises(PayloadError, match="fingerprint"):
        codec.read(payload.to_bytes(), (3, 3, 6, 5))
    with pytest.raises(PayloadError, match="fingerprint"):
        build_codec({"codec": "rans-features", "bits": 7}).read(payload.to_bytes(), x.shape)


# ---- the registry -----------------------------------------------------------------------------


def test_the_codecs_are_registered_and_a_bad_spec_is_one_line():
    assert {"float", "quantised", "zlib", "zstd", "rans-features", "png", "jpeg"} <= set(FEATURE_CODECS.names())
    for spec, expected in (({"bits": 4}, "codec: missing"), ({"codec": "nosuch"}, "unknown feature codec 'nosuch'"),
                           ({"codec": "rans-features", "bits": 1}, "rans-features.bits"),
                           ({"codec": "zlib", "level": 12}, "zlib.level"),
                           ({"codec": "float", "bits": 4}, "float.bits")):
        with pytest.raises(FeatureCodecSpecError) as info:
            build_codec(spec)
        assert expected in str(info.value) and "\n" not in str(info.value)
