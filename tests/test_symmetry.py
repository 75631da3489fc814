"""Symmetry groups: DoF counts of the paper's table, projection properties, noise gain, symmetric training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from testbed.models.symmetric import make_symmetric, strip_symmetric
from testbed.symmetry import GROUPS, symmetry_group

# Expected values copied from the DoF table of "Leveraging Kernel Symmetry for Joint Compression and
# Error Mitigation in Edge Model Transfer" (arXiv:2604.17371), not computed.
DOF_TABLE = {
    "mirror_h": (6, 15),
    "mirror_v": (6, 15),
    "central": (5, 13),
    "central_skew": (4, 12),
    "mirror_hv": (4, 9),
    "diagonal": (6, 15),
    "anti_diagonal": (6, 15),
    "skew_diagonal": (3, 10),
    "rot90": (3, 7),
    "dihedral": (3, 6),
}
RATIO_3X3 = {"mirror_h": 1.50, "central": 1.80, "central_skew": 2.25, "skew_diagonal": 3.00, "dihedral": 3.00}


def test_table_covers_all_groups() -> None:
    assert set(DOF_TABLE) == set(GROUPS)


@pytest.mark.parametrize("group", GROUPS)
def test_dof_matches_the_table(group: str) -> None:
    dof3, dof5 = DOF_TABLE[group]
    assert symmetry_group(group, 3).dof == dof3
    assert symmetry_group(group, 5).dof == dof5
    if group in RATIO_3X3:
        assert 9 / dof3 == pytest.approx(RATIO_3X3[group], abs=0.005)


def test_central_skew_3x3_has_the_documented_shape() -> None:
    # [[a,b,c],[d,0,-d],[-c,-b,-a]]
    a, b, c, d = 1.0, 2.0, 3.0, 4.0
    kernel = np.array([[a, b, c], [d, 0, -d], [-c, -b, -a]])
    g = symmetry_group("central_skew", 3)
    np.testing.assert_allclose(g.projection @ kernel.reshape(-1), kernel.reshape(-1), atol=1e-12)
    assert np.allclose(g.basis[4], 0)  # the centre is fixed to 0


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6, 7])
@pytest.mark.parametrize("group", GROUPS)
def test_projection_properties(group: str, k: int) -> None:
    g = symmetry_group(group, k)
    p, basis = g.projection, g.basis
    np.testing.assert_allclose(p @ p, p, atol=1e-12)  # idempotent
    np.testing.assert_allclose(p, p.T, atol=1e-12)  # orthogonal projection
    np.testing.assert_allclose(basis.T @ basis, np.eye(g.dof), atol=1e-12)  # orthonormal basis
    np.testing.assert_allclose(basis @ basis.T, p, atol=1e-12)
    assert np.trace(p) == pytest.approx(g.dof)
    rng = np.random.default_rng(k)
    invariant = basis @ rng.normal(size=g.dof)
    np.testing.assert_allclose(p @ invariant, invariant, atol=1e-12)
    for perm, sign in g.elements:  # and an invariant kernel obeys W = s(g) g(W) for every element
        np.testing.assert_allclose(sign * invariant[list(perm)], invariant, atol=1e-12)


@pytest.mark.parametrize("k", [2, 3, 4, 5])
@pytest.mark.parametrize(("group", "sign"), [("central", 1), ("central_skew", -1)])
def test_projection_is_the_rot180_average(group: str, sign: int, k: int) -> None:
    w = np.random.default_rng(0).normal(size=(k, k))
    expected = (w + sign * w[::-1, ::-1]) / 2
    projected = (symmetry_group(group, k).projection @ w.reshape(-1)).reshape(k, k)
    np.testing.assert_allclose(projected, expected, atol=1e-12)


def test_even_kernel_dof() -> None:
    # 4x4: central and central_skew pair the 16 positions (no centre), so 8 DoF each
    assert symmetry_group("central", 4).dof == 8
    assert symmetry_group("central_skew", 4).dof == 8
    assert symmetry_group("mirror_hv", 4).dof == 4


def test_unknown_group_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown symmetry group"):
        symmetry_group("spiral", 3)


@pytest.mark.parametrize(("group", "k"), [("central_skew", 3), ("dihedral", 3), ("central", 5), ("mirror_h", 4)])
def test_full_project_cuts_noise_by_k2_over_dof(group: str, k: int) -> None:
    g = symmetry_group(group, k)
    noise = np.random.default_rng(1).normal(size=(200_000, k * k))
    kept = noise @ g.projection.T
    gain_db = 10 * math.log10((noise**2).sum() / (kept**2).sum())
    expected_db = 10 * math.log10(k * k / g.dof)
    # energy kept is a chi-square sum over 200k*dof terms: relative sd ~ sqrt(2/(200k*dof)) -> < 0.02 dB
    assert gain_db == pytest.approx(expected_db, abs=0.03)


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 5, padding=2)
        self.conv4 = nn.Conv2d(8, 4, 4)
        self.point = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = self.point(torch.relu(self.conv4(x)))
        return self.fc(x.mean(dim=(2, 3)))


def assert_exactly_symmetric(weight: torch.Tensor, group: str) -> None:
    k = weight.shape[-1]
    flat = weight.detach().reshape(-1, k * k)
    for perm, sign in symmetry_group(group, k).elements:
        assert torch.equal(flat, sign * flat[:, list(perm)]), f"{group} k={k} not exact"


@pytest.mark.parametrize("group", GROUPS)
def test_make_symmetric_stays_exactly_symmetric_under_training(group: str) -> None:
    torch.manual_seed(0)
    net = SmallNet()
    before = net.conv2.weight.detach().clone()
    make_symmetric(net, group)
    # theta starts from the projection of the existing weights
    g = symmetry_group(group, 5)
    projected = before.reshape(-1, 25).double() @ torch.from_numpy(g.projection)
    torch.testing.assert_close(net.conv2.weight.detach().reshape(-1, 25).double(), projected, atol=1e-6, rtol=0)
    assert net.conv1.parametrizations.weight.original.shape == (6, 1, symmetry_group(group, 3).dof)
    assert not hasattr(net.point, "parametrizations")  # 1x1 kernels are left alone
    optimiser = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))
    losses = []
    for _ in range(5):
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    strip_symmetric(net)
    assert set(net.state_dict()) == set(SmallNet().state_dict())  # plain parameters again
    for conv in (net.conv1, net.conv2, net.conv4):
        assert_exactly_symmetric(conv.weight, group)
    assert not torch.equal(net.conv2.weight.detach(), projected.float().reshape(before.shape))  # it trained


def test_make_symmetric_refuses_unknown_group_and_double_parametrisation() -> None:
    with pytest.raises(ValueError, match="unknown symmetry group"):
        make_symmetric(SmallNet(), "nope")
    net = make_symmetric(SmallNet(), "central")
    with pytest.raises(ValueError, match="already"):
        make_symmetric(net, "central")
