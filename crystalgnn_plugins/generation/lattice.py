"""Rotation-free lattice representation and torus helpers for the generator.

A lattice with rows ``L`` (Å) has the Gram matrix ``G = L Lᵀ`` (rotation
invariant). Its *canonical pose* is the symmetric matrix ``G^{1/2}``: the same
lattice (same lengths and angles) with the rotation removed. The generator
works with the symmetric logarithm ``S = ½ log G`` (6 numbers), so that
``L = exp(S)`` in the canonical pose, ``det L = exp(tr S)`` is the volume, and
a symmetric action on the lattice (Klipfel et al. 2022) is a velocity of ``S``.
"""

from __future__ import annotations

import torch


def wrap(d: torch.Tensor) -> torch.Tensor:
    """Fractional differences wrapped to [-0.5, 0.5) (shortest way round the torus)."""
    return d - torch.floor(d + 0.5)


def lattice_to_log(lattice: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` lattice rows (Å) to the symmetric ``S = ½ log(L Lᵀ)``."""
    gram = lattice @ lattice.transpose(-1, -2)
    evals, evecs = torch.linalg.eigh(gram)
    return evecs @ torch.diag_embed(0.5 * torch.log(evals.clamp_min(1e-12))) @ evecs.transpose(-1, -2)


def log_to_lattice(log_lattice: torch.Tensor) -> torch.Tensor:
    """Symmetric ``S`` to the lattice ``exp(S)`` in its canonical (symmetric) pose, Å."""
    sym = 0.5 * (log_lattice + log_lattice.transpose(-1, -2))
    return torch.linalg.matrix_exp(sym)


def symmetric_to_vector(sym: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` symmetric to ``(..., 6)``: xx, yy, zz, xy, xz, yz."""
    return torch.stack(
        [sym[..., 0, 0], sym[..., 1, 1], sym[..., 2, 2], sym[..., 0, 1], sym[..., 0, 2], sym[..., 1, 2]], -1
    )


def vector_to_symmetric(vec: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`symmetric_to_vector`."""
    xx, yy, zz, xy, xz, yz = vec.unbind(-1)
    rows = [torch.stack([xx, xy, xz], -1), torch.stack([xy, yy, yz], -1), torch.stack([xz, yz, zz], -1)]
    return torch.stack(rows, -2)


def random_symmetric(shape: tuple[int, ...], generator: torch.Generator | None = None, dtype=None) -> torch.Tensor:
    """Symmetric matrices with independent standard-normal upper-triangle entries."""
    vec = torch.randn((*shape, 6), generator=generator, dtype=dtype)
    return vector_to_symmetric(vec)
