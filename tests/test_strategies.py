"""Round trips and exact byte counts of the compression strategies on a small conv net."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from strategies import registry
from strategies.base import is_batch_counter, is_conv_kernel
from strategies.prune import BITMASK, INDICES, index_bits, pack_indices, unpack_indices, positions_nbytes
from strategies.registry import StrategySpecError, build
from testbed.models.monoconv import is_fgf_buffer
from testbed.models.symmetric import make_symmetric, strip_symmetric
from testbed import bitpack
from testbed.payload import Payload, PayloadError
from testbed.symmetry import GROUPS, symmetry_group


class TinyNet(nn.Module):
    """conv-BN-ReLU twice (3x3 and 5x5), a 1x1 conv, a linear layer."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 5, padding=2, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.point = nn.Conv2d(16, 8, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(self.point(x).mean(dim=(2, 3)))


def tiny_state(seed: int = 0, symmetric: str | None = None) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = TinyNet()
    if symmetric:
        strip_symmetric(make_symmetric(net, symmetric))
    net.train()
    net(torch.randn(4, 3, 8, 8))  # non-trivial BatchNorm statistics and an int64 counter
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def varint_len(n: int) -> int:
    return max(1, math.ceil(n.bit_length() / 7))


# Framing as docs/STRATEGIES.md documents it: version byte, 4-byte schema fingerprint, 4-byte CRC.
FIXED_FRAMING = 1 + 4 + 4


def framing(payload: Payload) -> int:
    """Header and checksum as the wire format documents them, computed independently."""
    present = {s.name: s for s in payload.segments}
    open_fields = 0
    for spec in payload.schema.specs:
        segment = present.get(spec.name)
        if spec.optional:
            open_fields += varint_len(0 if segment is None else 1 + segment.nbytes)
        elif spec.nbytes is None:
            open_fields += varint_len(segment.nbytes)
        if segment is not None and (spec.fmt is None or spec.protected is None):
            open_fields += 1  # the form byte
    return FIXED_FRAMING + open_fields


def round_trip(spec: dict, state: dict[str, torch.Tensor]) -> tuple[Payload, dict[str, torch.Tensor]]:
    strategy = build(spec)
    payload = strategy.encode(state)
    wire = payload.to_bytes()
    assert payload.nbytes == len(wire)
    assert payload.framing_nbytes == framing(payload)
    assert not any(is_batch_counter(s.name) for s in payload.segments)  # the receiver fills those
    decoded = strategy.decode(strategy.read(wire, state), state)
    assert decoded.keys() == state.keys()
    for name, tensor in state.items():
        assert decoded[name].shape == tensor.shape and decoded[name].dtype == tensor.dtype, name
        if is_batch_counter(name):
            assert int(decoded[name]) == 0, name
        elif not tensor.dtype.is_floating_point:
            assert torch.equal(decoded[name], tensor), name
    return payload, decoded


CONV = ("conv1.weight", "conv2.weight")


def test_registry_lists_the_strategies_with_names_and_descriptions() -> None:
    found = registry.available()
    assert {"raw", "quantise", "symmetry", "prune"} <= set(found)
    for name, cls in found.items():
        assert cls.name == name and cls.description and "\n" not in cls.description


def test_bad_specs_are_one_line_errors() -> None:
    for spec in (
        {"strategy": "symmetry", "group": "spiral"},
        {"strategy": "symmetry", "mode": "half"},
        {"strategy": "symmetry", "unknown": 1},
        {"strategy": "prune"},
        {"strategy": "prune", "keep": 0.5, "match": "central"},
        {"strategy": "prune", "keep": 1.5},
        {"strategy": "prune", "keep": 0.5, "method": "best"},
    ):
        with pytest.raises(StrategySpecError) as info:
            build(spec)
        assert "\n" not in str(info.value) and str(info.value).startswith(spec["strategy"])


# ---- raw and quantise ----------------------------------------------------------------


def test_raw_float32_is_exact() -> None:
    state = tiny_state()
    payload, decoded = round_trip({"strategy": "raw"}, state)
    for name in state:
        if not is_batch_counter(name):
            assert torch.equal(decoded[name], state[name])
    float_bytes = sum(4 * t.numel() for t in state.values() if t.dtype.is_floating_point)
    assert payload.nbytes == FIXED_FRAMING + float_bytes


def test_raw_float16_is_fp16_exact() -> None:
    state = tiny_state()
    payload, decoded = round_trip({"strategy": "raw", "dtype": "float16"}, state)
    for name, t in state.items():
        if t.dtype.is_floating_point:
            assert torch.equal(decoded[name], t.half().float()), name
    assert payload.exposed_nbytes == sum(2 * t.numel() for t in state.values() if t.dtype.is_floating_point)


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("bits", [2, 3, 4, 8, 12, 16])
def test_quantise_error_at_most_half_a_step_and_exact_bytes(bits: int, per_channel: bool) -> None:
    state = tiny_state()
    payload, decoded = round_trip({"strategy": "quantise", "bits": bits, "per_channel": per_channel}, state)
    expected = FIXED_FRAMING
    for name, t in state.items():
        if not t.dtype.is_floating_point:
            continue
        rows = t.reshape(t.shape[0] if (per_channel and t.dim() >= 2) else 1, -1).double()
        step = (rows.max(dim=1).values - rows.min(dim=1).values) / (2**bits - 1)
        error = (decoded[name].reshape(rows.shape).double() - rows).abs()
        assert torch.all(error <= step[:, None] / 2 + 1e-6), name
        expected += math.ceil(t.numel() * bits / 8) + 8 * rows.shape[0]
    assert payload.nbytes == expected


@pytest.mark.parametrize("per_channel", [False, True])
def test_entropy_coding_changes_bytes_not_values(per_channel: bool) -> None:
    state = tiny_state()
    # peaked like trained weights (the uniform init leaves rANS nothing to gain)
    state["conv2.weight"] = torch.randn(state["conv2.weight"].shape, generator=torch.Generator().manual_seed(0)) ** 3
    plain, decoded_plain = round_trip({"strategy": "quantise", "bits": 8, "per_channel": per_channel}, state)
    coded, decoded_coded = round_trip(
        {"strategy": "quantise", "bits": 8, "per_channel": per_channel, "entropy": True}, state
    )
    for name in state:
        assert torch.equal(decoded_plain[name], decoded_coded[name]), name
    if not per_channel:  # conv2 (3200 values) is worth coding; its stream is then protected
        assert coded["conv2.weight"].protected and not plain["conv2.weight"].protected
        assert coded["conv2.weight"].nbytes < plain["conv2.weight"].nbytes
        assert coded.nbytes < plain.nbytes
    else:  # per-row offsets spread the codes: histogram + stream (472 + 2812) > 3200 packed bytes
        assert coded["conv2.weight"] == plain["conv2.weight"]
        assert coded["conv2.weight/q"] == plain["conv2.weight/q"]
    # a 10-value bias is not: the packed codes go instead, exposed, and the format says so
    assert not coded["fc.bias"].protected and coded["fc.bias"].data == plain["fc.bias"].data
    assert coded["fc.bias/q"] == plain["fc.bias/q"]
    # what rANS leaves open travels in the header: per float tensor, the form byte of its values
    # and the lengths of values and side information (one varint byte each for the packed ones)
    floats = sum(t.dtype.is_floating_point for t in state.values())
    assert plain.framing_nbytes == FIXED_FRAMING
    assert coded.framing_nbytes >= FIXED_FRAMING + 3 * floats


# ---- symmetry ---------------------------------------------------------------------------


def assert_symmetric(weight: torch.Tensor, group: str, atol: float = 0.0) -> None:
    k = weight.shape[-1]
    flat = weight.reshape(-1, k * k)
    for perm, sign in symmetry_group(group, k).elements:
        torch.testing.assert_close(flat, sign * flat[:, list(perm)], atol=atol, rtol=0)


def project(weight: torch.Tensor, group: str) -> torch.Tensor:
    k = weight.shape[-1]
    p = torch.from_numpy(symmetry_group(group, k).projection).to(torch.float64)
    return (weight.reshape(-1, k * k).double() @ p.T).reshape(weight.shape).float()


@pytest.mark.parametrize("mode", ["dof", "full+project", "posthoc"])
@pytest.mark.parametrize("group", GROUPS)
def test_symmetry_lossless_before_quantisation(group: str, mode: str) -> None:
    symmetric = mode != "posthoc"
    state = tiny_state(symmetric=group if symmetric else None)
    payload, decoded = round_trip({"strategy": "symmetry", "group": group, "mode": mode}, state)
    for name, t in state.items():
        if name in CONV:
            expected = t if symmetric else project(t, group)
            torch.testing.assert_close(decoded[name], expected, atol=1e-6, rtol=0)
            assert_symmetric(decoded[name], group, atol=1e-6)
        elif not is_batch_counter(name):  # counters: round_trip checks they decode to 0
            assert torch.equal(decoded[name], t), name
    conv_values = {name: state[name].shape for name in CONV}
    for name, (c_out, c_in, k, _) in conv_values.items():
        dof = symmetry_group(group, k).dof
        per_kernel = k * k if mode == "full+project" else dof
        assert payload[name].nbytes == 4 * c_out * c_in * per_kernel
    assert payload["point.weight"].nbytes == 4 * state["point.weight"].numel()  # 1x1: sent as it is


@pytest.mark.parametrize("mode", ["dof", "full+project", "posthoc"])
@pytest.mark.parametrize("group", ["central_skew", "dihedral", "mirror_h"])
def test_symmetry_quantised(group: str, mode: str) -> None:
    state = tiny_state(symmetric=None if mode == "posthoc" else group)
    spec = {"strategy": "symmetry", "group": group, "mode": mode, "bits": 8, "per_channel": True}
    payload, decoded = round_trip(spec, state)
    quantised, plain_decoded = round_trip({"strategy": "quantise", "bits": 8, "per_channel": True}, state)
    for name in CONV:
        target = project(state[name], group)
        assert_symmetric(decoded[name], group, atol=1e-6)
        error = (decoded[name] - target).norm()
        assert error < 0.02 * target.norm()
        if mode == "full+project":  # same bytes as quantise; the projection only removes noise
            assert payload[name].nbytes == quantised[name].nbytes
            assert error <= (plain_decoded[name] - state[name]).norm() + 1e-6
        else:
            assert payload[name].nbytes < quantised[name].nbytes


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8, 11, 16])
def test_central_skew_dof_closed_form_bytes(bits: int) -> None:
    state = tiny_state(symmetric="central_skew")
    payload = build({"strategy": "symmetry", "group": "central_skew", "bits": bits}).encode(state)
    # 3x3 conv1, 8 x 3 kernels: exactly ceil(8*3*4*b/8) value bytes; 5x5 conv2 has 12 DoF
    assert payload["conv1.weight"].nbytes == math.ceil(8 * 3 * 4 * bits / 8)
    assert payload["conv2.weight"].nbytes == math.ceil(16 * 8 * 12 * bits / 8)
    assert payload["conv1.weight/q"].nbytes == 8  # lo and scale, per tensor


def test_dof_mode_refuses_an_unsymmetric_model() -> None:
    state = tiny_state()
    with pytest.raises(ValueError, match=r"conv1\.weight is not central_skew-symmetric.*posthoc"):
        build({"strategy": "symmetry", "group": "central_skew"}).encode(state)
    build({"strategy": "symmetry", "group": "central_skew", "mode": "posthoc"}).encode(state)  # never refuses


def test_symmetry_training_hooks() -> None:
    dof = build({"strategy": "symmetry", "group": "rot90"})
    assert dof.training_key() == "symmetric:rot90"
    assert build({"strategy": "symmetry", "group": "rot90", "mode": "full+project"}).training_key() == "symmetric:rot90"
    posthoc = build({"strategy": "symmetry", "group": "rot90", "mode": "posthoc"})
    assert posthoc.training_key() == "plain"
    net = dof.prepare_model(TinyNet())
    assert net.conv1.parametrizations.weight.original.shape == (8, 3, 3)
    net = dof.after_training(net, finetune=lambda model: None)
    assert set(net.state_dict()) == set(TinyNet().state_dict())
    state = {k: v.detach() for k, v in net.state_dict().items()}
    _, decoded = round_trip({"strategy": "symmetry", "group": "rot90", "bits": 16}, state)
    assert_symmetric(decoded["conv2.weight"], "rot90", atol=1e-6)
    assert posthoc.prepare_model(plain := TinyNet()) is plain and not hasattr(plain.conv1, "parametrizations")


# ---- prune -----------------------------------------------------------------------------


def kept_mask(decoded: torch.Tensor) -> torch.Tensor:
    return decoded != 0


def test_prune_magnitude_keeps_the_largest_exactly() -> None:
    state = tiny_state()
    payload, decoded = round_trip({"strategy": "prune", "keep": 0.3}, state)
    for name in CONV:
        t = state[name]
        m = round(0.3 * t.numel())
        mask = kept_mask(decoded[name])
        assert int(mask.sum()) == m
        assert torch.equal(decoded[name][mask], t[mask])  # float32: kept values exact
        assert t[mask].abs().min() >= t[~mask].abs().max()
    for name in state:
        if name not in CONV and not is_batch_counter(name):
            assert torch.equal(decoded[name], state[name])


def test_prune_random_is_seeded() -> None:
    state = tiny_state()
    _, a = round_trip({"strategy": "prune", "keep": 0.5, "method": "random", "seed": 1}, state)
    _, b = round_trip({"strategy": "prune", "keep": 0.5, "method": "random", "seed": 1}, state)
    _, c = round_trip({"strategy": "prune", "keep": 0.5, "method": "random", "seed": 2}, state)
    assert torch.equal(a["conv2.weight"], b["conv2.weight"])
    assert not torch.equal(kept_mask(a["conv2.weight"]), kept_mask(c["conv2.weight"]))
    assert int(kept_mask(a["conv2.weight"]).sum()) == 1600


@pytest.mark.parametrize(("keep", "kind"), [(0.5, BITMASK), (0.05, INDICES), (0.01, INDICES)])
@pytest.mark.parametrize("bits", [4, 8])
def test_prune_positions_choice_and_exact_bytes(keep: float, kind: int, bits: int) -> None:
    state = tiny_state()
    payload, _ = round_trip({"strategy": "prune", "keep": keep, "bits": bits, "per_channel": True}, state)
    # conv2: n = 3200 positions, 12-bit indices; conv1: n = 216, 8-bit indices
    for name, n in (("conv2.weight", 3200), ("conv1.weight", 216)):
        m = round(keep * n)
        mask_bytes, index_bytes = math.ceil(n / 8), math.ceil(m * math.ceil(math.log2(n)) / 8)
        chosen = INDICES if index_bytes < mask_bytes else BITMASK
        assert positions_nbytes(n, m) == (chosen, min(mask_bytes, index_bytes))  # what the receiver derives
        assert f"{name}/pos_kind" not in payload and payload[f"{name}/pos"].protected
        assert payload[f"{name}/pos"].nbytes == min(mask_bytes, index_bytes)
        assert payload[name].nbytes == math.ceil(m * bits / 8)
        assert payload[f"{name}/q"].nbytes == 8  # kept values are quantised per tensor (our choice)
    assert positions_nbytes(3200, round(keep * 3200))[0] == kind
    # the whole payload in closed form: pruned kernels + everything else quantised per channel
    expected = FIXED_FRAMING
    for name, t in state.items():
        if name in CONV:
            n = t.numel()
            m = round(keep * n)
            positions = min(math.ceil(n / 8), math.ceil(m * math.ceil(math.log2(n)) / 8))
            expected += math.ceil(m * bits / 8) + 8 + positions
        elif t.dtype.is_floating_point:
            expected += math.ceil(t.numel() * bits / 8) + 8 * (t.shape[0] if t.dim() >= 2 else 1)
    assert payload.nbytes == expected


def test_prune_matched_to_symmetry_sends_as_many_values_as_dof() -> None:
    state = tiny_state()
    prune, _ = round_trip({"strategy": "prune", "match": "central_skew", "bits": 8}, state)
    sym, _ = round_trip({"strategy": "symmetry", "group": "central_skew", "mode": "posthoc", "bits": 8}, state)
    for name in CONV:
        assert prune[name].nbytes == sym[name].nbytes  # 4/9 and 12/25 of the weights
        assert prune.nbytes > sym.nbytes  # plus the positions


def test_prune_exposed_positions_survive_corruption() -> None:
    state = tiny_state()
    strategy = build({"strategy": "prune", "keep": 0.5, "positions": "exposed"})
    payload = strategy.encode(state)
    segment = payload["conv2.weight/pos"]
    assert not segment.protected
    rng = np.random.default_rng(0)
    for flips in (1, 7, 40):
        data = bytearray(segment.data)
        for bit in rng.choice(8 * len(data), flips, replace=False):
            data[bit // 8] ^= 1 << (bit % 8)
        damaged = payload.with_segments(
            [s.replace_data(bytes(data)) if s.name == segment.name else s for s in payload.segments]
        )
        decoded = strategy.decode(strategy.read(damaged.to_bytes(), state), state)
        # values go to the set positions in order: never more than the m values sent
        assert int(kept_mask(decoded["conv2.weight"]).sum()) <= 1600
        assert torch.isfinite(decoded["conv2.weight"]).all()
    indices = build({"strategy": "prune", "keep": 0.01, "positions": "exposed"})
    payload = indices.encode(state)
    garbage = payload.with_segments(
        [s.replace_data(b"\xff" * s.nbytes) if s.name == "conv2.weight/pos" else s for s in payload.segments]
    )
    decoded = indices.decode(garbage, state)  # every index 4095 >= n = 3200: all dropped
    assert int(kept_mask(decoded["conv2.weight"]).sum()) == 0


def test_prune_protected_positions_mismatch_is_a_payload_error() -> None:
    state = tiny_state()
    strategy = build({"strategy": "prune", "keep": 0.5})
    payload = strategy.encode(state)
    bad = payload.with_segments(
        [s.replace_data(b"\xff" * s.nbytes) if s.name == "conv2.weight/pos" else s for s in payload.segments]
    )
    with pytest.raises(PayloadError) as info:
        strategy.decode(bad, state)
    assert info.value.segment == "conv2.weight/pos"


def test_prune_finetune_keeps_the_mask() -> None:
    torch.manual_seed(0)
    net = TinyNet()
    strategy = build({"strategy": "prune", "keep": 0.25, "finetune": True, "seed": 3})
    assert strategy.training_key() == "prune:magnitude:0.25:finetune:3"
    assert build({"strategy": "prune", "match": "dihedral", "finetune": True}).training_key() == (
        "prune:magnitude:match=dihedral:finetune:0"
    )
    assert build({"strategy": "prune", "keep": 0.25}).training_key() == "plain"
    before = net.conv2.weight.detach().clone()
    calls = []

    def finetune(model: nn.Module) -> None:
        calls.append(model)
        optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
        for _ in range(3):
            optimiser.zero_grad()
            model(torch.randn(4, 3, 8, 8)).square().mean().backward()
            optimiser.step()

    net = strategy.after_training(net, finetune)
    assert calls == [net]
    assert set(net.state_dict()) == set(TinyNet().state_dict())  # plain weights again
    weight = net.conv2.weight.detach()
    assert int((weight != 0).sum()) == 800
    assert not torch.equal(weight[weight != 0], before[weight != 0])  # fine-tuned
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    _, decoded = round_trip({"strategy": "prune", "keep": 0.25, "finetune": True, "seed": 3}, state)
    assert torch.equal(decoded["conv2.weight"], weight)  # the zeros are exactly the pruned positions


@settings(max_examples=100, deadline=None)
@given(bits=st.integers(1, 32), data=st.data())
def test_wide_index_packing(bits: int, data) -> None:
    values = np.array(data.draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=64)), dtype=np.int64)
    packed = pack_indices(values, bits)
    assert len(packed) == math.ceil(len(values) * bits / 8)
    np.testing.assert_array_equal(unpack_indices(packed, len(values), bits), values)


def test_index_bits() -> None:
    assert [index_bits(n) for n in (1, 2, 3, 4, 5, 3200, 2**22, 2**22 + 1)] == [1, 1, 2, 2, 3, 12, 22, 23]


# ---- every registered strategy ------------------------------------------------------------

class TinyNetWithInnerConv(TinyNet):
    """TinyNet plus a stride-1 3x3 conv inside the network (what MonoCNN replaces)."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Conv2d(8, 8, 3, padding=1)


ROUND_TRIP_SPECS = {
    "raw": {"dtype": "float32"},
    "quantise": {"bits": 16},
    "symmetry": {"mode": "posthoc"},
    "prune": {"keep": 1.0},
    "lowrank": {"rank": 10_000},
    "monocnn": {"seeds_per_layer": 4},
    "topk": {"keep": 1.0},
    "factorised": {"rank": 10_000},  # no factor pair is smaller than its matrix: all sent whole
}


@pytest.mark.parametrize("name", sorted(registry.available()))
def test_every_registered_strategy_round_trips_near_exactly(name: str) -> None:
    """At its most faithful setting each strategy gives back what it was given (to float rounding)."""
    if name not in ROUND_TRIP_SPECS:
        pytest.skip(f"{name}: an installed strategy this project does not know")
    strategy = build({"strategy": name, **ROUND_TRIP_SPECS[name]})
    torch.manual_seed(0)
    model = strategy.prepare_model(TinyNetWithInnerConv())
    model = strategy.after_training(model, finetune=lambda m: None)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if name == "symmetry":  # posthoc sends the projection: compare with it
        expected = {k: project(v, "central_skew") if is_conv_kernel(v) else v for k, v in state.items()}
    else:
        expected = state
    expected = {k: torch.zeros_like(v) if is_batch_counter(k) else v for k, v in expected.items()}
    _, decoded = round_trip({"strategy": name, **ROUND_TRIP_SPECS[name]}, state)
    for key, tensor in expected.items():
        scale = float(tensor.abs().max()) if tensor.dtype.is_floating_point and tensor.numel() else 1.0
        torch.testing.assert_close(decoded[key], tensor, atol=1e-4 * max(scale, 1e-3), rtol=0, msg=key)


def test_quantising_non_finite_values_is_refused_naming_the_tensor() -> None:
    state = {"layer.weight": torch.tensor([[1.0, float("nan")], [0.0, 2.0]])}
    with pytest.raises(ValueError, match="layer.weight: cannot quantise non-finite"):
        build({"strategy": "quantise", "bits": 8}).encode(state)
    # Raw floats carry NaN as a value.
    assert build({"strategy": "raw"}).encode(state).nbytes > 0


def test_only_symmetric_training_is_kept_through_federated_rounds() -> None:
    keeps = {mode: build({"strategy": "symmetry", "mode": mode, "bits": 8}).keeps_form_in_federated_training()
             for mode in ("dof", "full+project", "posthoc")}
    assert keeps == {"dof": True, "full+project": True, "posthoc": False}
    assert not build({"strategy": "quantise", "bits": 8}).keeps_form_in_federated_training()


# ---- the quickstart's payloads: closed form and framing ------------------------------------

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


@functools.cache
def quickstart_payloads() -> dict[str, tuple]:
    """label -> (strategy, state sent, its payload report), as `testbed inspect --json` prints them."""
    from testbed.commands.inspect import strategy_models
    from testbed.config import load_config
    from testbed.inspect import payload_report

    config = load_config(QUICKSTART, [])
    models = strategy_models(config, config.strategy_specs(), trained=False)
    return {
        label: (strategy, state, payload_report(label, strategy, state, reference))
        for label, (strategy, state, reference) in models.items()
    }


def closed_form_data_bytes(strategy, state: dict[str, torch.Tensor]) -> int:
    """Data segment bytes of the quickstart's strategies, from the tensors' shapes alone."""
    o = strategy.options
    total = 0
    for name, t in state.items():
        n = t.numel()
        if is_batch_counter(name):
            continue  # not sent
        if not t.dtype.is_floating_point:
            total += n * t.element_size()  # MonoCNN's fgf_seed: int64, raw
        elif strategy.name == "raw":
            total += 4 * n
        elif strategy.name == "monocnn" and is_fgf_buffer(name):
            continue  # regenerated by the receiver
        elif strategy.name == "symmetry" and is_conv_kernel(t):
            c_out, c_in, k, _ = t.shape
            total += math.ceil(c_out * c_in * symmetry_group(o.group, k).dof * o.bits / 8) + 8
        elif strategy.name == "prune" and is_conv_kernel(t):
            k = t.shape[-1]
            m = round(symmetry_group(o.match, k).dof / (k * k) * n)
            positions = min(math.ceil(n / 8), math.ceil(m * index_bits(n) / 8))
            total += math.ceil(m * o.bits / 8) + 8 + positions
        else:  # quantised per tensor: the codes and lo, scale
            total += math.ceil(n * o.bits / 8) + 8
    return total


def test_quickstart_payloads_are_their_data_plus_nine_bytes_of_framing() -> None:
    payloads = quickstart_payloads()
    assert set(payloads) == {"fp32", "q8", "skew-dof8", "prune-skew8", "monocnn8"}
    for label, (strategy, state, report) in payloads.items():
        assert report["segments"][0] == {"name": "framing", "bytes": FIXED_FRAMING, "protected": True}, label
        assert report["total_bytes"] == closed_form_data_bytes(strategy, state) + FIXED_FRAMING, label
        assert report["total_bytes"] == len(strategy.encode(state).to_bytes()), label


def test_quickstart_framing_goals() -> None:
    payloads = quickstart_payloads()
    for label, (_, _, report) in payloads.items():
        assert report["segments"][0]["bytes"] <= 64, label
    dof = payloads["skew-dof8"][2]
    assert dof["segments"][0]["bytes"] <= 0.01 * dof["total_bytes"]


@pytest.mark.parametrize("spec", [{"strategy": "quantise", "bits": 8}, {"strategy": "prune", "keep": 0.5}])
def test_the_order_of_the_state_dict_does_not_matter(spec: dict) -> None:
    """Removing a parametrisation or a pruning mask moves ``weight`` after ``bias``; both ends still agree."""
    state = tiny_state()
    shuffled = dict(reversed(list(state.items())))
    strategy = build(spec)
    assert strategy.payload_schema(shuffled) == strategy.payload_schema(state)
    decoded = strategy.decode(strategy.read(strategy.encode(shuffled).to_bytes(), state), state)
    expected = strategy.decode(strategy.encode(state), state)
    assert list(decoded) == list(state)
    for name in state:
        assert torch.equal(decoded[name], expected[name]), name


# ---- repetition: the equal-redundancy baseline of full+project ---------------------------


@pytest.mark.parametrize("mode", ["dof", "full+project"])
@pytest.mark.parametrize("bits, per_channel", [(None, False), (8, False), (4, True)])
def test_symmetry_repeat_sends_r_copies_and_decodes_as_one(mode: str, bits, per_channel: bool) -> None:
    state = tiny_state(symmetric="central_skew")
    base = {"strategy": "symmetry", "group": "central_skew", "mode": mode, "per_channel": per_channel}
    if bits:
        base["bits"] = bits
    once, decoded_once = round_trip(base, state)
    twice, decoded_twice = round_trip({**base, "repeat": 2}, state)
    for name in CONV:
        c_out, c_in, k, _ = state[name].shape
        count = c_out * c_in * (k * k if mode == "full+project" else symmetry_group("central_skew", k).dof)
        expected = 4 * count if bits is None else bitpack.packed_nbytes(count, bits)
        assert once[name].nbytes == expected
        assert twice[name].nbytes == (8 * count if bits is None else bitpack.packed_nbytes(2 * count, bits))
        if bits:  # the same quantiser ranges: the copies are the same codes
            assert twice[f"{name}/q"].data == once[f"{name}/q"].data
        # on a clean channel the copies agree, so the average is the single copy's value
        assert torch.allclose(decoded_twice[name], decoded_once[name], atol=1e-6)


def test_symmetry_repeat_averages_the_copies() -> None:
    """Noise on one copy only: the decoded theta is the mean of the two copies."""
    state = tiny_state(symmetric="central_skew")
    strategy = build({"strategy": "symmetry", "group": "central_skew", "mode": "dof", "repeat": 2})
    payload = strategy.encode(state)
    name = "conv1.weight"
    values = np.frombuffer(payload[name].data, "<f4").reshape(8, 2, -1).copy()
    clean = values[:, 0].copy()
    values[:, 1] += 1.0  # the second copy of every output channel's row, shifted by 1
    segments = [s if s.name != name else type(s)(name, values.astype("<f4").tobytes(), s.protected, s.fmt)
                for s in payload.segments]
    decoded = strategy.decode(Payload(segments, payload.schema), state)
    basis = torch.from_numpy(symmetry_group("central_skew", 3).basis.astype(np.float32))
    expected = (torch.from_numpy(clean).reshape(-1, 4) + 0.5) @ basis.T
    assert torch.allclose(decoded[name].reshape(-1, 9), expected, atol=1e-5)


def test_prune_finetune_within_the_budget_is_its_own_model() -> None:
    extra = build({"strategy": "prune", "match": "central_skew", "finetune": True})
    within = build({"strategy": "prune", "match": "central_skew", "finetune": True, "finetune_epochs": 0.5})
    assert extra.finetune_epochs_within_budget() is None and within.finetune_epochs_within_budget() == 0.5
    assert extra.training_key() != within.training_key()
    with pytest.raises(StrategySpecError, match="finetune_epochs needs finetune: true"):
        build({"strategy": "prune", "match": "central_skew", "finetune_epochs": 0.5})
