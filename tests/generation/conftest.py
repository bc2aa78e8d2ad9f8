"""Fixtures for the generator tests.

The tiny data set (perovskites + carbon built with pymatgen), the tiny generator
trained once per session and the tiny energy model live in ``tests/conftest.py``
so that the ``crystalgnn generate`` CLI tests share them; this file adds what
only the generator tests need.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

PEROV = "perov"
CARBON = "carbon"


def random_crystal(n: int, rng: np.random.Generator, k: int = 4):
    """(soft species (n, k), frac (n, 3), lattice (1, 3, 3)) as float64 tensors."""
    lattice = (3.0 + n ** (1 / 3)) * np.eye(3) + rng.normal(0, 0.4, (3, 3))
    logits = rng.normal(0, 1, (n, k))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return (
        torch.tensor(probs),
        torch.tensor(rng.uniform(0, 1, (n, 3))),
        torch.tensor(lattice).unsqueeze(0),
    )


@pytest.fixture
def make_crystal() -> Callable:
    """``make_crystal(n, rng, k=4)``: a random soft crystal (see :func:`random_crystal`).

    A fixture because test modules cannot import this conftest (``--import-mode=importlib``)."""
    return random_crystal


@pytest.fixture(scope="session")
def dataset(generator_dataset):
    """(structures, conditions): 40 perovskites (``perov``) and 20 carbon crystals (``carbon``)."""
    return generator_dataset


@pytest.fixture(scope="session")
def model_dir(generator_dir):
    """Directory of the saved tiny generator."""
    return generator_dir


@pytest.fixture(scope="session")
def flow(trained_generator):
    """The tiny trained :class:`CrystalFlow` (float32, eval mode). Do not modify."""
    return trained_generator[0]


@pytest.fixture
def source(model_dir, tiny_energy_model):
    """A structure source on the tiny generator with full physics guidance and few steps."""
    from crystalgnn_plugins.generation import CrystalStructureSource

    return CrystalStructureSource(model_dir, energy_model=tiny_energy_model, steps=8)


@pytest.fixture
def tiny_flow():
    """A small untrained float64 :class:`CrystalFlow` with fitted-looking statistics."""
    from crystalgnn_plugins.generation import CrystalFlow

    with torch.random.fork_rng():
        torch.manual_seed(0)
        flow = CrystalFlow(
            ["Ba", "C", "Ca", "O", "Sr", "Ti", "Zr"], [PEROV, CARBON], hidden=16, num_layers=2, num_freqs=4,
            latent_dim=4, encoder_layers=1, cond_features=4,
        )
    return flow.double()
