"""The rotation-free lattice representation ``S = ½ log(L Lᵀ)`` and the torus helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from crystalgnn_plugins.generation.lattice import (
    lattice_to_log,
    log_to_lattice,
    random_symmetric,
    symmetric_to_vector,
    vector_to_symmetric,
    wrap,
)

SEEDS = st.integers(0, 2**32 - 1)


def random_lattice(seed: int, batch: int = 1) -> torch.Tensor:
    """Well-conditioned lattices (rows, Å), with either handedness, float64."""
    rng = np.random.default_rng(seed)
    scale = rng.uniform(2.0, 12.0, (batch, 1, 1))
    lat = scale * (np.eye(3) + rng.normal(0, 0.3, (batch, 3, 3)))
    return torch.tensor(lat)


def random_orthogonal(seed: int) -> torch.Tensor:
    """A random rotation, times an inversion for odd seeds (all of O(3))."""
    r = Rotation.random(random_state=seed).as_matrix()
    return torch.tensor(r if seed % 2 == 0 else -r)


# ------------------------------------------------------------------ wrap
@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=20), st.integers(-5, 5))
def test_wrap_range_and_periodicity(values, shift):
    d = torch.tensor(values, dtype=torch.float64)
    w = wrap(d)
    assert (w >= -0.5).all() and (w < 0.5).all()
    # differs from the input by an integer (same point of the torus)
    assert torch.allclose(d - w, torch.round(d - w), atol=1e-9)
    # invariant to integer shifts (periodic images)
    assert torch.allclose(wrap(d + shift), w, atol=1e-9)


def test_wrap_is_identity_inside_and_odd():
    d = torch.linspace(-0.49, 0.49, 99, dtype=torch.float64)
    assert torch.equal(wrap(d), d)
    assert torch.allclose(wrap(-d), -wrap(d))
    # the boundary goes to -0.5: [-0.5, 0.5)
    assert wrap(torch.tensor([0.5, -0.5, 1.5])).tolist() == [-0.5, -0.5, -0.5]


def test_wrap_is_shortest_way_round():
    rng = np.random.default_rng(0)
    a, b = torch.tensor(rng.uniform(0, 1, (200, 3))), torch.tensor(rng.uniform(0, 1, (200, 3)))
    d = wrap(b - a)
    # no integer shift of the difference is shorter, component by component
    for k in (-1, 1):
        assert (d.abs() <= (d + k).abs() + 1e-12).all()


# ------------------------------------------------------------------ log lattice
@settings(max_examples=40, deadline=None)
@given(SEEDS)
def test_round_trip_preserves_gram_matrix(seed):
    lat = random_lattice(seed, batch=3)
    s = lattice_to_log(lat)
    back = log_to_lattice(s)
    gram = lat @ lat.transpose(-1, -2)
    # same lengths and angles...
    torch.testing.assert_close(back @ back.transpose(-1, -2), gram, rtol=1e-10, atol=1e-10)
    # ...and differs from the input only by an orthogonal change of the Cartesian frame
    q = torch.linalg.solve(lat, back)
    torch.testing.assert_close(q.transpose(-1, -2) @ q, torch.eye(3, dtype=torch.float64).expand(3, 3, 3), atol=1e-10, rtol=0)
    # canonical pose: symmetric, positive volume |det L| = exp(tr S)
    torch.testing.assert_close(back, back.transpose(-1, -2), atol=1e-10, rtol=0)
    vol = torch.linalg.det(lat).abs()
    torch.testing.assert_close(torch.linalg.det(back), vol, rtol=1e-10, atol=0)
    torch.testing.assert_close(torch.diagonal(s, dim1=-2, dim2=-1).sum(-1), torch.log(vol), rtol=0, atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(SEEDS, SEEDS)
def test_log_lattice_is_rotation_invariant(seed, rot_seed):
    lat = random_lattice(seed)
    r = random_orthogonal(rot_seed)
    s = lattice_to_log(lat)
    torch.testing.assert_close(s, s.transpose(-1, -2), atol=1e-12, rtol=0)
    torch.testing.assert_close(lattice_to_log(lat @ r.T), s, atol=1e-10, rtol=0)


@settings(max_examples=25, deadline=None)
@given(SEEDS)
def test_log_of_canonical_pose_is_exact_inverse(seed):
    s = 0.3 * random_symmetric((4,), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    s = s + 1.2 * torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(lattice_to_log(log_to_lattice(s)), s, atol=1e-10, rtol=0)


def test_cubic_lattice():
    a = 3.9
    s = lattice_to_log(a * torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(s, np.log(a) * torch.eye(3, dtype=torch.float64))
    # log_to_lattice symmetrises its input (only the symmetric part is a lattice shape)
    skew = torch.tensor([[0.0, 0.3, 0.0], [-0.3, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(log_to_lattice(s + skew), a * torch.eye(3, dtype=torch.float64))


def test_symmetric_vector_round_trip():
    g = torch.Generator().manual_seed(0)
    sym = random_symmetric((5, 2), generator=g, dtype=torch.float64)
    assert sym.shape == (5, 2, 3, 3)
    torch.testing.assert_close(sym, sym.transpose(-1, -2), atol=0, rtol=0)
    vec = symmetric_to_vector(sym)
    assert vec.shape == (5, 2, 6)
    torch.testing.assert_close(vector_to_symmetric(vec), sym, atol=0, rtol=0)
    m = vector_to_symmetric(torch.arange(6.0))
    assert m.tolist() == [[0.0, 3.0, 4.0], [3.0, 1.0, 5.0], [4.0, 5.0, 2.0]]


def test_random_symmetric_is_reproducible():
    a = random_symmetric((3,), generator=torch.Generator().manual_seed(7))
    b = random_symmetric((3,), generator=torch.Generator().manual_seed(7))
    c = random_symmetric((3,), generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_is_kept(dtype):
    lat = random_lattice(0).to(dtype)
    assert lattice_to_log(lat).dtype == dtype and log_to_lattice(lattice_to_log(lat)).dtype == dtype
