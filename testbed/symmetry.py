"""Symmetry groups of a k x k kernel: their DoF basis and projection, computed.

A group is a set of signed index maps g of the k x k grid. A kernel W is
invariant when W = s(g) * g(W) for every g. Positions tied by the group form
orbits; the invariant subspace has one basis vector per orbit whose signs are
consistent, and a position forced to equal its own negative is fixed to 0.
Nothing is tabulated: each group is given by its generators and closed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Generators of each group as (transform, sign); transforms act on a k x k array.
_TRANSFORMS = {
    "flip_h": lambda a: a[:, ::-1],
    "flip_v": lambda a: a[::-1, :],
    "rot180": lambda a: a[::-1, ::-1],
    "transpose": lambda a: a.T,
    "anti_transpose": lambda a: a[::-1, ::-1].T,
    "rot90": lambda a: np.rot90(a),
}

GROUP_GENERATORS: dict[str, list[tuple[str, int]]] = {
    "mirror_h": [("flip_h", 1)],
    "mirror_v": [("flip_v", 1)],
    "central": [("rot180", 1)],
    "central_skew": [("rot180", -1)],
    "mirror_hv": [("flip_h", 1), ("flip_v", 1)],
    "diagonal": [("transpose", 1)],
    "anti_diagonal": [("anti_transpose", 1)],
    "skew_diagonal": [("transpose", -1)],
    "rot90": [("rot90", 1)],
    "dihedral": [("rot90", 1), ("flip_h", 1)],
}

GROUPS = tuple(GROUP_GENERATORS)


def _as_permutation(transform: str, k: int) -> tuple[int, ...]:
    """The index map of a transform: result.flat[i] = input.flat[perm[i]]."""
    idx = np.arange(k * k).reshape(k, k)
    return tuple(int(v) for v in _TRANSFORMS[transform](idx).reshape(-1))


@dataclass(frozen=True)
class SymmetryGroup:
    name: str
    k: int
    elements: tuple[tuple[tuple[int, ...], int], ...]  # (permutation, sign), identity included
    basis: np.ndarray  # (k*k, dof), orthonormal columns, W.flat = basis @ theta

    @property
    def dof(self) -> int:
        return self.basis.shape[1]

    @property
    def projection(self) -> np.ndarray:
        """P = (1/|G|) sum_g s(g) g as a (k*k, k*k) matrix; equals basis @ basis.T."""
        n = self.k * self.k
        p = np.zeros((n, n))
        for perm, sign in self.elements:
            p[np.arange(n), perm] += sign
        return p / len(self.elements)


def _close(generators: list[tuple[tuple[int, ...], int]], n: int) -> tuple:
    """All products of the generators: the group they generate."""
    identity = (tuple(range(n)), 1)
    elements = {identity}
    frontier = [identity]
    while frontier:
        new = []
        for perm, sign in frontier:
            for gperm, gsign in generators:
                # (g after h): result[i] = input[h[g[i]]]
                composed = (tuple(perm[j] for j in gperm), sign * gsign)
                if composed not in elements:
                    elements.add(composed)
                    new.append(composed)
        frontier = new
    return tuple(sorted(elements))


@lru_cache(maxsize=None)
def symmetry_group(name: str, k: int) -> SymmetryGroup:
    if name not in GROUP_GENERATORS:
        raise ValueError(f"unknown symmetry group {name!r}; known: {', '.join(GROUPS)}")
    if k < 1:
        raise ValueError(f"kernel size must be >= 1, got {k}")
    n = k * k
    generators = [(_as_permutation(t, k), s) for t, s in GROUP_GENERATORS[name]]
    elements = _close(generators, n)
    # Column p of P is the symmetrised indicator of position p: it spans the
    # orbit of p with consistent signs, or is zero where signs cancel (a
    # position forced to 0). Distinct orbits give orthogonal columns.
    p_matrix = np.zeros((n, n))
    for perm, sign in elements:
        p_matrix[np.arange(n), perm] += sign
    p_matrix /= len(elements)
    seen: set[int] = set()
    columns = []
    for pos in range(n):
        if pos in seen:
            continue
        column = p_matrix[:, pos]
        orbit = set(np.nonzero(np.abs(p_matrix[pos]) > 0)[0].tolist()) | {pos}
        orbit |= set(np.nonzero(np.abs(column) > 1e-12)[0].tolist())
        seen |= orbit
        norm = np.linalg.norm(column)
        if norm > 1e-12:
            columns.append(column / norm)
    basis = np.stack(columns, axis=1) if columns else np.zeros((n, 0))
    basis.setflags(write=False)
    return SymmetryGroup(name=name, k=k, elements=elements, basis=basis)


def dof(name: str, k: int) -> int:
    return symmetry_group(name, k).dof
