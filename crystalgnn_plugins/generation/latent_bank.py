"""The aggregate posterior of a generator's latent autoencoder, for sampling.

A :class:`LatentBank` holds, for every training crystal, its condition, its number of
atoms and the mean and standard deviation of its latent ``z`` under the generator's
encoder (16 numbers each; no structures). Sampling a random entry and
``z = mu + std * eps`` draws latent codes where the flow was trained on them, with
the atom count that goes with them; the unconditional flow (``z = 0``) averages over
the modes of a condition instead (carbon_24: densities between the graphitic and
the diamond-like crystals, docs/generation.md *Latent codes of training crystals*).
The bank ships next to the generator's weights as ``latent_bank.npz``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crystalgnn_plugins._atomic import atomic_write

LATENT_BANK_FILE = "latent_bank.npz"


@dataclass
class LatentBank:
    """Latent means/standard deviations ``(M, latent_dim)`` of ``M`` crystals with
    their condition names and atom counts ``(M,)``."""

    conditions: np.ndarray
    num_atoms: np.ndarray
    mu: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        self.conditions = np.asarray(self.conditions, dtype=str)
        self.num_atoms = np.asarray(self.num_atoms, dtype=np.int64)
        self.mu = np.asarray(self.mu, dtype=np.float32)
        self.std = np.asarray(self.std, dtype=np.float32)
        m = len(self.conditions)
        if self.num_atoms.shape != (m,) or self.mu.ndim != 2 or self.mu.shape[0] != m or self.std.shape != self.mu.shape:
            raise ValueError(
                f"latent bank: inconsistent shapes conditions {self.conditions.shape}, num_atoms "
                f"{self.num_atoms.shape}, mu {self.mu.shape}, std {self.std.shape}"
            )
        if not (np.isfinite(self.mu).all() and np.isfinite(self.std).all() and (self.std >= 0).all()):
            raise ValueError("latent bank: mu and std must be finite and std >= 0")

    @property
    def latent_dim(self) -> int:
        return int(self.mu.shape[1])

    def __len__(self) -> int:
        return len(self.conditions)

    def _rows(self, condition: str, num_atoms: int | None = None) -> np.ndarray:
        """Indices of the entries of ``condition`` (with ``num_atoms`` atoms)."""
        mask = self.conditions == condition
        if num_atoms is not None:
            mask &= self.num_atoms == int(num_atoms)
        return np.flatnonzero(mask)

    def has(self, condition: str, num_atoms: int | None = None) -> bool:
        """Whether the bank holds crystals of ``condition`` (with ``num_atoms`` atoms)."""
        return len(self._rows(condition, num_atoms)) > 0

    @classmethod
    def from_structures(cls, flow: Any, structures: Sequence[Any], condition: str, batch_size: int = 256) -> LatentBank:
        """Encode ``structures`` (pymatgen) of ``condition`` with ``flow``'s encoder."""
        if not structures:
            raise ValueError(f"latent bank: no structures for condition {condition!r}")
        mus, stds = [], []
        flow.eval()
        for lo in range(0, len(structures), batch_size):
            batch = flow.batch_from_structures(list(structures[lo : lo + batch_size]), condition)
            with torch.no_grad():
                mu, logvar = flow.encode(batch.to(flow.lattice_mean.device))
            mus.append(mu.double().cpu().numpy())
            stds.append((0.5 * logvar).exp().double().cpu().numpy())
        return cls([condition] * len(structures), [len(s) for s in structures], np.concatenate(mus), np.concatenate(stds))

    @classmethod
    def concat(cls, banks: Sequence[LatentBank]) -> LatentBank:
        return cls(*(np.concatenate([getattr(b, f) for b in banks]) for f in ("conditions", "num_atoms", "mu", "std")))

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``directory/latent_bank.npz`` atomically."""
        path = Path(directory) / LATENT_BANK_FILE
        names, index = np.unique(self.conditions, return_inverse=True)
        atomic_write(path, lambda fh: np.savez_compressed(
            fh, condition_names=names, condition_index=index.astype(np.int16),
            num_atoms=self.num_atoms.astype(np.int16), mu=self.mu, std=self.std))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatentBank:
        """Read a bank from a ``latent_bank.npz`` file or the directory holding it."""
        path = Path(path)
        if path.is_dir():
            path = path / LATENT_BANK_FILE
        with np.load(path, allow_pickle=False) as data:
            missing = {"condition_names", "condition_index", "num_atoms", "mu", "std"} - set(data.files)
            if missing:
                raise ValueError(f"{path}: not a latent bank (missing {sorted(missing)})")
            conditions = data["condition_names"][data["condition_index"]]
            return cls(conditions, data["num_atoms"], data["mu"], data["std"])

    def sample(
        self, condition: str, n: int, rng: np.random.Generator, generator: torch.Generator | None = None,
        num_atoms: int | None = None, noise: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Atom counts ``(n,)`` and latent codes ``(n, latent_dim)`` (float64) of ``n``
        random entries of ``condition`` (with ``num_atoms`` atoms, if given; no entry
        repeats before all were drawn):
        ``z = mu + (std + noise) * eps`` (``noise`` widens every posterior: codes
        further from the training crystals')."""
        if noise < 0:
            raise ValueError(f"latent noise must be >= 0, got {noise}")
        idx = self._rows(condition, num_atoms)
        if not len(idx):
            raise ValueError(f"latent bank has no crystals of condition {condition!r}"
                             + (f" with {num_atoms} atoms" if num_atoms is not None else ""))
        # stratified: every entry once (in random order) before any entry twice
        pick = np.concatenate([rng.permutation(idx) for _ in range(-(-n // len(idx)))])[:n]
        eps = torch.randn((n, self.latent_dim), generator=generator, dtype=torch.float64)
        z = torch.from_numpy(self.mu[pick]).double() + (torch.from_numpy(self.std[pick]).double() + noise) * eps
        return torch.from_numpy(self.num_atoms[pick]), z
