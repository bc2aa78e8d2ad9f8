"""``CrystalFlow``: flow matching over species, fractional coordinates and lattice.

The three parts of a crystal each get a straight path from a prior sample
(``t = 0``) to a data crystal (``t = 1``):

- fractional coordinates on the torus, one of two paths (``coord_path``):
  ``"geodesic"``: uniform prior, geodesic path ``f_t = f_0 + t wrap(f_1 - f_0)``,
  the network predicts the velocity; ``"wrapped_normal"``: wrapped Gaussian noise
  ``f_t = f_1 + σ(t) ε (mod 1)`` with ``σ`` falling geometrically from
  ``sigma_max`` (≈ uniform) at ``t = 0`` to ``sigma_min`` at 1, the network predicts
  ``ε`` (so the score ``-ε/σ`` is known and the sampler can correct the atoms with
  Langevin steps at every noise level, as in DiffCSP). Targets are centred per crystal
  (a global translation changes nothing);
- lattice: the rotation-free ``S = ½ log(L Lᵀ)`` (:mod:`.lattice`), Gaussian
  prior around the dataset's mean shape at the volume expected for the number
  of atoms, linear path; the network's symmetric lattice action is the velocity;
- species: one-hot vectors with a Gaussian prior and a linear path; the network
  predicts the species (logits) and the velocity follows from it. In the
  composition-given mode (crystal structure prediction) the species stay fixed.

A latent autoencoder rides along: an invariant encoder maps a crystal to a
Gaussian latent ``z`` (KL-regularised) that conditions the flow; it is dropped
during training with probability ``latent_dropout`` so that the flow also runs
without one. Each crystal also carries a dataset condition (e.g. ``perov_5``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from crystalgnn_plugins.generation.lattice import (
    lattice_to_log,
    log_to_lattice,
    random_symmetric,
    symmetric_to_vector,
    wrap,
)
from crystalgnn_plugins.generation.network import PeriodicActionNetwork, _scatter_mean, dense_edges

MAX_ATOMS = 64


@dataclass
class CrystalBatch:
    """Crystals for the generator, atoms stored crystal by crystal.

    Attributes:
        species: (N,) index into the model's element vocabulary.
        frac: (N, 3) fractional coordinates in [0, 1).
        lattice: (B, 3, 3) lattice rows, Å (any pose).
        num_atoms: (B,) atoms per crystal.
        condition: (B,) dataset index.
        ids: identifiers for error messages.
    """

    species: torch.Tensor
    frac: torch.Tensor
    lattice: torch.Tensor
    num_atoms: torch.Tensor
    condition: torch.Tensor
    ids: list[str] = field(default_factory=list)

    @property
    def batch(self) -> torch.Tensor:
        return torch.repeat_interleave(torch.arange(len(self.num_atoms), device=self.frac.device), self.num_atoms)

    def to(self, device=None, dtype=None) -> CrystalBatch:
        return CrystalBatch(
            self.species.to(device), self.frac.to(device, dtype), self.lattice.to(device, dtype),
            self.num_atoms.to(device), self.condition.to(device), self.ids,
        )


def collate_crystals(items: Sequence[CrystalBatch]) -> CrystalBatch:
    """Concatenate single-crystal batches."""
    return CrystalBatch(
        torch.cat([x.species for x in items]), torch.cat([x.frac for x in items]),
        torch.cat([x.lattice for x in items]), torch.cat([x.num_atoms for x in items]),
        torch.cat([x.condition for x in items]), [i for x in items for i in x.ids],
    )


#: coordinate paths of :class:`CrystalFlow`
COORD_PATHS = ("geodesic", "wrapped_normal")


class CrystalFlow(nn.Module):
    """Flow-matching generator of periodic crystals with a latent autoencoder.

    Args:
        elements: species vocabulary (element symbols).
        conditions: dataset names the model is conditioned on.
        hidden, num_layers, num_freqs, disp_freqs: size of the :class:`PeriodicActionNetwork`.
        latent_dim, encoder_layers: latent autoencoder.
        cond_features: width of the dataset embedding.
        image_rbf, image_cutoff: image-summed pair features of the networks (0: off;
            see :class:`PeriodicActionNetwork`).
        edge_vectors: per-edge free fractional displacements beside the directions
            (see :class:`PeriodicActionNetwork`).
        coord_path: ``"geodesic"`` or ``"wrapped_normal"`` (module docstring).
        sigma_min, sigma_max: noise range of the wrapped-normal path (fractional).
        condition_pressures: pressure (GPa) at which each condition's training crystals
            were relaxed (e.g. ``{"carbon_24": 10.0}``); the learned-energy guidance and
            ``relax=True`` of :class:`CrystalStructureSource` use the enthalpy ``E + PV``
            at that pressure. Conditions not listed: 0 GPa.
    """

    model_type: ClassVar[str] = "crystal_flow"
    units: ClassVar[dict[str, str]] = {"lattice": "Å", "frac": "1"}

    def __init__(
        self,
        elements: Sequence[str],
        conditions: Sequence[str] = ("default",),
        *,
        hidden: int = 128,
        num_layers: int = 4,
        num_freqs: int = 8,
        latent_dim: int = 16,
        encoder_layers: int = 2,
        cond_features: int = 16,
        disp_freqs: int = 3,
        image_rbf: int = 0,
        image_cutoff: float = 3.0,
        edge_vectors: bool = False,
        coord_path: str = "geodesic",
        sigma_min: float = 0.005,
        sigma_max: float = 0.5,
        condition_pressures: dict[str, float] | None = None,
    ):
        super().__init__()
        if not elements:
            raise ValueError("CrystalFlow needs a non-empty element vocabulary")
        if coord_path not in COORD_PATHS:
            raise ValueError(f"coord_path must be one of {COORD_PATHS}, got {coord_path!r}")
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
        self.coord_path, self.sigma_min, self.sigma_max = coord_path, float(sigma_min), float(sigma_max)
        self.elements = list(elements)
        self.conditions = list(conditions)
        self.condition_pressures = {str(k): float(v) for k, v in (condition_pressures or {}).items()}
        unknown = sorted(set(self.condition_pressures) - set(self.conditions))
        if unknown:
            raise ValueError(f"condition_pressures: {unknown} are not conditions of this flow ({self.conditions})")
        self.hidden, self.num_layers, self.num_freqs = hidden, num_layers, num_freqs
        self.latent_dim, self.encoder_layers, self.cond_features = latent_dim, encoder_layers, cond_features
        self.disp_freqs, self.image_rbf, self.image_cutoff = disp_freqs, image_rbf, image_cutoff
        self.edge_vectors = bool(edge_vectors)
        k = len(self.elements)
        images = {"image_rbf": image_rbf, "image_cutoff": image_cutoff}
        self.cond_embed = nn.Embedding(len(self.conditions), cond_features)
        self.net = PeriodicActionNetwork(k, hidden, num_layers, num_freqs, cond_features + latent_dim + 1, disp_freqs,
                                         edge_vectors=self.edge_vectors, **images)
        self.encoder = PeriodicActionNetwork(k, hidden, encoder_layers, num_freqs, cond_features, heads=False, **images)
        self.to_latent = nn.Linear(hidden, 2 * latent_dim)
        c = len(self.conditions)
        # data statistics, set by fit_statistics()
        self.register_buffer("lattice_mean", torch.zeros(c, 3, 3))
        self.register_buffer("lattice_std", torch.ones(c))
        self.register_buffer("log_volume_per_atom", torch.full((c,), 2.5))
        self.register_buffer("num_atoms_probs", torch.zeros(c, MAX_ATOMS + 1))
        self.register_buffer("species_probs", torch.full((c, k), 1.0 / k))

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict[str, Any]:
        return {
            "elements": self.elements, "conditions": self.conditions, "hidden": self.hidden,
            "num_layers": self.num_layers, "num_freqs": self.num_freqs, "latent_dim": self.latent_dim,
            "encoder_layers": self.encoder_layers, "cond_features": self.cond_features,
            "disp_freqs": self.disp_freqs, "image_rbf": self.image_rbf, "image_cutoff": self.image_cutoff,
            "edge_vectors": self.edge_vectors,
            "coord_path": self.coord_path, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max,
            "condition_pressures": dict(self.condition_pressures),
        }

    def coord_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Noise level (fractional) of the wrapped-normal path at time ``t``:
        ``sigma_max`` at 0, ``sigma_min`` at 1, geometric in between."""
        return self.sigma_max ** (1 - t) * self.sigma_min**t

    def pressure_gpa(self, condition: int | str) -> float:
        """Pressure (GPa) of a condition's training crystals (0 unless set)."""
        name = condition if isinstance(condition, str) else self.conditions[int(condition)]
        return self.condition_pressures.get(name, 0.0)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CrystalFlow:
        config = dict(config)
        return cls(config.pop("elements"), config.pop("conditions"), **config)

    def with_coord_path(self, coord_path: str) -> CrystalFlow:
        """This flow with another coordinate path and the same weights (``self`` if it
        already has it): the network is the same, only what it is trained to predict
        and how it is sampled change, so a trained flow is a starting point for the other."""
        return self.extended(coord_path=coord_path)

    def extended(self, **changes: Any) -> CrystalFlow:
        """This flow with configuration ``changes`` and its weights (``self`` if nothing
        changes): another coordinate path, or networks with image-summed features or
        edge vectors added, whose new weights start at zero
        (:meth:`load_compatible_state`), so the result computes what this flow computes."""
        config = self.get_config()
        if all(config.get(k) == v for k, v in changes.items()):
            return self
        flow = CrystalFlow.from_config({**config, **changes})
        flow.load_compatible_state(self)
        return flow.to(self.lattice_mean)

    def load_compatible_state(self, other: CrystalFlow) -> None:
        """Start from the weights of ``other``, a flow of the same size whose networks may
        lack the image-summed features or the edge vectors: the extra input columns and
        output rows start at zero, so this flow computes exactly what ``other`` computes
        until trained."""
        own = self.state_dict()
        for name, value in other.state_dict().items():
            if name not in own:
                raise ValueError(f"load_compatible_state: {name} has no counterpart in this flow")
            target = own[name]
            if target.shape == value.shape:
                target.copy_(value)
            elif target.dim() == value.dim() and all(a >= b for a, b in zip(target.shape, value.shape)):
                target.zero_()
                target[tuple(slice(0, n) for n in value.shape)].copy_(value)
            else:
                raise ValueError(f"load_compatible_state: {name} has shape {tuple(value.shape)}, "
                                 f"this flow {tuple(target.shape)}")

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def condition_index(self, name: str | None) -> int:
        """Index of a dataset condition (the first one when ``None``)."""
        if name is None:
            return 0
        if name not in self.conditions:
            raise ValueError(f"unknown condition {name!r}; this generator knows {self.conditions}")
        return self.conditions.index(name)

    # ------------------------------------------------------------------ data
    def batch_from_structures(self, structures: Sequence[Any], conditions: Sequence[str] | str | None = None, ids=None) -> CrystalBatch:
        """pymatgen ``Structure``s (Niggli-reduced here) to a :class:`CrystalBatch`."""
        if isinstance(conditions, str) or conditions is None:
            conditions = [conditions] * len(structures)
        items = []
        for k, (s, cond) in enumerate(zip(structures, conditions)):
            sid = str(ids[k]) if ids is not None else str(k)
            if len(s) > MAX_ATOMS:
                raise ValueError(f"structure {sid}: {len(s)} atoms, the generator handles at most {MAX_ATOMS}")
            unknown = sorted({sp.symbol for sp in s.species} - set(self.elements))
            if unknown:
                raise ValueError(f"structure {sid}: elements {unknown} are not in the generator's vocabulary")
            red = s.get_reduced_structure("niggli")
            items.append(CrystalBatch(
                torch.tensor([self.elements.index(sp.symbol) for sp in red.species]),
                torch.tensor(np.mod(red.frac_coords, 1.0), dtype=torch.float32),
                torch.tensor(red.lattice.matrix, dtype=torch.float32).unsqueeze(0),
                torch.tensor([len(red)]),
                torch.tensor([self.condition_index(cond)]),
                [sid],
            ))
        return collate_crystals(items)

    @torch.no_grad()
    def fit_statistics(self, batch: CrystalBatch) -> None:
        """Lattice prior, atom-count and species distributions per condition from training data."""
        log_l = lattice_to_log(batch.lattice.double())
        n = batch.num_atoms.double()
        log_vpa = torch.diagonal(log_l, dim1=-2, dim2=-1).sum(-1) - torch.log(n)
        for c in range(len(self.conditions)):
            sel = batch.condition == c
            if not sel.any():
                continue
            self.log_volume_per_atom[c] = log_vpa[sel].mean().float()
            shape = log_l[sel] - (torch.log(n[sel]) + self.log_volume_per_atom[c].double()).view(-1, 1, 1) / 3 * torch.eye(3, dtype=torch.float64)
            self.lattice_mean[c] = shape.mean(0).float()
            self.lattice_std[c] = (shape - shape.mean(0)).std().clamp_min(0.02).float()
            counts = torch.bincount(batch.num_atoms[sel], minlength=MAX_ATOMS + 1)[: MAX_ATOMS + 1].float()
            self.num_atoms_probs[c] = counts / counts.sum()
            atom_sel = sel[batch.batch]
            sp = torch.bincount(batch.species[atom_sel], minlength=len(self.elements)).float()
            self.species_probs[c] = sp / sp.sum()

    def lattice_prior(self, condition: torch.Tensor, num_atoms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``S`` (B, 3, 3) and scalar std (B,) of the lattice prior."""
        eye = torch.eye(3, device=condition.device, dtype=self.lattice_mean.dtype)
        log_v = torch.log(num_atoms.to(self.lattice_mean.dtype)) + self.log_volume_per_atom[condition]
        return self.lattice_mean[condition] + log_v.view(-1, 1, 1) / 3 * eye, self.lattice_std[condition]

    # ------------------------------------------------------------------ latent
    def encode(self, batch: CrystalBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance (B, latent_dim) of the latent of clean crystals
        (invariant to rotations, translations, permutations and periodic images)."""
        species = F.one_hot(batch.species, len(self.elements)).to(batch.frac.dtype)
        t = torch.ones(len(batch.num_atoms), device=batch.frac.device, dtype=batch.frac.dtype)
        out = self.encoder(species, batch.frac, batch.lattice, batch.num_atoms, t, self.cond_embed(batch.condition))
        mu, logvar = self.to_latent(out["crystal_features"]).chunk(2, -1)
        return mu, logvar.clamp(-8, 4)

    def _cond(self, condition: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        b = condition.shape[0]
        emb = self.cond_embed(condition)
        if z is None:
            z = emb.new_zeros(b, self.latent_dim)
            flag = emb.new_zeros(b, 1)
        else:
            flag = emb.new_ones(b, 1)
        return torch.cat([emb, z.to(emb.dtype), flag], -1)

    def velocity(self, species_t, frac_t, log_lattice_t, num_atoms, t, condition, z=None) -> dict[str, torch.Tensor]:
        """Network outputs at time ``t`` for crystals on the path (canonical pose)."""
        lattice = log_to_lattice(log_lattice_t)
        return self.net(species_t, frac_t, lattice, num_atoms, t, self._cond(condition, z))

    # ------------------------------------------------------------------ training
    def loss(
        self,
        batch: CrystalBatch,
        *,
        csp_fraction: float = 0.5,
        latent_dropout: float = 0.5,
        kl_weight: float = 1e-3,
        coord_weight: float | None = None,
        lattice_weight: float = 1.0,
        species_weight: float = 1.0,
        repulsion_weight: float = 0.0,
        radius_factor: float = 0.7,
        ot_coupling: bool = False,
        ot_translation: bool = False,
        mid_time_fraction: float = 0.0,
        mid_time_range: tuple[float, float] = (0.25, 0.65),
        energy_term: Any = None,
        energy_weight: float = 0.0,
        energy_min_time: float = 0.5,
    ) -> dict[str, torch.Tensor]:
        """Flow-matching loss terms and their weighted sum (``"loss"``).

        ``csp_fraction`` of the crystals keep their species fixed (composition-given
        mode), the others also learn species; ``repulsion_weight`` adds the
        differentiable short-distance penalty on the predicted clean crystal.
        ``ot_coupling`` pairs the prior atoms with the data atoms of each crystal by
        the assignment of least squared periodic distance (the crystal is the same
        under any order of its atoms), which makes the paths straighter and the
        velocity targets less averaged over equivalent atoms; ``ot_translation`` also
        shifts each data crystal rigidly (the same crystal) to the translation that
        shortens the paths most (implies ``ot_coupling``). ``coord_weight`` defaults
        to 10 for the geodesic path and 1 for the wrapped-normal one. With ``coord_path =
        "wrapped_normal"`` the coordinate term regresses the noise ``ε`` of
        ``f_t = f_1 + σ(t) ε`` instead of a velocity (no pairing: there are no prior atoms),
        averaged over the periodic images that could have produced ``f_t``
        (:func:`wrapped_noise_mean`): the same optimum ``E[ε | f_t]``, without the
        unlearnable noise of the image choice that dominates the loss at large ``σ``.
        ``mid_time_fraction`` of the crystals draw their time from ``mid_time_range``
        instead of [0, 1): more training where the structure forms (wrapped-normal
        carbon: ``σ`` 0.19–0.03), which is learned last.
        ``energy_term`` (a guidance term such as
        :class:`~crystalgnn_plugins.generation.EnergyTerm`, per crystal in eV/atom)
        with ``energy_weight`` adds the learned energy (enthalpy at the condition's
        pressure) of the predicted clean crystal, for crystals at times
        ``t >= energy_min_time`` of the conditions the term is active for (its
        ``active``), averaged over them (``"energy"``): the physics term in training.
        """
        if not 0 <= mid_time_fraction <= 1:
            raise ValueError(f"mid_time_fraction must be in [0, 1], got {mid_time_fraction}")
        lo, hi = mid_time_range
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"mid_time_range must satisfy 0 <= low < high <= 1, got {mid_time_range}")
        device, dtype = batch.frac.device, batch.frac.dtype
        b = len(batch.num_atoms)
        atom_batch = batch.batch
        t = torch.rand(b, device=device, dtype=dtype)
        if mid_time_fraction:
            mid = lo + (hi - lo) * torch.rand(b, device=device, dtype=dtype)
            t = torch.where(torch.rand(b, device=device) < mid_time_fraction, mid, t)
        tn = t[atom_batch].unsqueeze(-1)

        f1, species1 = batch.frac, batch.species
        wrapped_normal = self.coord_path == "wrapped_normal"
        if wrapped_normal and (ot_coupling or ot_translation):
            raise ValueError("ot_coupling / ot_translation pair prior and data atoms of the geodesic path; "
                             "the wrapped-normal path has no prior atoms to pair")
        if coord_weight is None:
            coord_weight = 1.0 if wrapped_normal else 10.0
        f0 = None if wrapped_normal else torch.rand_like(f1)
        if ot_translation:
            order, shift = ot_alignment(f0, f1, batch.lattice, batch.num_atoms)
            f1, species1 = torch.remainder(f1[order] + shift[atom_batch], 1.0), species1[order]
        elif ot_coupling:
            order = ot_assignment(f0, f1, batch.lattice, batch.num_atoms)
            f1, species1 = f1[order], species1[order]
        if wrapped_normal:
            sigma = self.coord_sigma(tn)
            f_t = torch.remainder(f1 + sigma * torch.randn_like(f1), 1.0)
            u_f = wrapped_noise_mean(f_t - f1, sigma)
        else:
            u_f = wrap(f1 - f0)
            f_t = torch.remainder(f0 + tn * u_f, 1.0)

        s1 = lattice_to_log(batch.lattice)
        mean, std = self.lattice_prior(batch.condition, batch.num_atoms)
        s0 = mean + std.view(-1, 1, 1) * random_symmetric((b,), dtype=dtype).to(device)
        s_t = (1 - t).view(-1, 1, 1) * s0 + t.view(-1, 1, 1) * s1
        u_s = (s1 - s0) / std.view(-1, 1, 1)

        x1 = F.one_hot(species1, len(self.elements)).to(dtype)
        csp = torch.rand(b, device=device) < csp_fraction
        a0 = torch.randn_like(x1)
        a_t = torch.where(csp[atom_batch].unsqueeze(-1), x1, (1 - tn) * a0 + tn * x1)

        z, kl = None, torch.zeros((), device=device, dtype=dtype)
        if self.latent_dim and latent_dropout < 1:
            mu, logvar = self.encode(batch)
            kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(-1)).mean()
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
            keep = (torch.rand(b, device=device) >= latent_dropout).to(dtype).unsqueeze(-1)
            z = z * keep
        cond = self._cond(batch.condition, z)
        if z is not None:
            cond[:, -1] = keep.squeeze(-1)
        out = self.net(a_t, f_t, log_to_lattice(s_t), batch.num_atoms, t, cond)

        v_f = out["frac_velocity"]
        v_f = v_f - _scatter_mean(v_f, atom_batch, b)[atom_batch]
        u_fc = u_f - _scatter_mean(u_f, atom_batch, b)[atom_batch]
        loss_f = ((v_f - u_fc) ** 2).sum(-1).mean()
        loss_l = ((symmetric_to_vector(out["lattice_action"]) - symmetric_to_vector(u_s)) ** 2).mean()
        gen = ~csp[atom_batch]
        loss_a = F.cross_entropy(out["species_logits"][gen], species1[gen]) if gen.any() else kl * 0
        terms = {"coords": loss_f, "lattice": loss_l, "species": loss_a, "kl": kl}
        total = coord_weight * loss_f + lattice_weight * loss_l + species_weight * loss_a + kl_weight * kl
        energy_on = energy_term is not None and bool(energy_weight)
        if repulsion_weight or energy_on:  # the predicted clean crystal, for the physics terms
            f_hat = f_t - sigma * v_f if wrapped_normal else f_t + (1 - tn) * v_f
            lattice_hat = log_to_lattice(s_t + ((1 - t) * std).view(-1, 1, 1) * out["lattice_action"])
        if repulsion_weight:
            radii = self.covalent_radii(dtype, device)[species1]
            rep = repulsion_energy(f_hat, lattice_hat, batch.num_atoms, radii, radius_factor)
            terms["repulsion"] = (rep * t).mean()
            total = total + repulsion_weight * terms["repulsion"]
        if energy_on:
            terms["energy"] = self._energy_loss(energy_term, batch, species1, f_hat, lattice_hat, t >= energy_min_time)
            total = total + energy_weight * terms["energy"]
        terms["loss"] = total
        return terms

    def _energy_loss(self, term, batch: CrystalBatch, species, frac, lattice, late: torch.Tensor) -> torch.Tensor:
        """Mean of ``term`` over the crystals selected by ``late`` whose condition the
        term is active for (0 if there are none; other crystals never reach its model)."""
        from crystalgnn_plugins.generation.guidance import GuidanceContext

        names = [self.conditions[int(c)] for c in batch.condition.tolist()]
        active = getattr(term, "active", None)
        use = late & torch.tensor([active is None or active({c}) for c in names], device=late.device)
        if not bool(use.any()):
            return frac.new_zeros(())
        atoms = use[batch.batch]
        ctx = GuidanceContext.of(self, batch.num_atoms[use], batch.condition[use])
        probs = F.one_hot(species[atoms], len(self.elements)).to(frac.dtype)
        return term(probs, frac[atoms], lattice[use], ctx).mean()

    def covalent_radii(self, dtype=torch.float32, device=None) -> torch.Tensor:
        """Covalent radii (Å) of the vocabulary."""
        from ase.data import atomic_numbers, covalent_radii

        return torch.tensor([covalent_radii[atomic_numbers[e]] for e in self.elements], dtype=dtype, device=device)


def wrapped_noise_mean(delta: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """``E[ε | f_t, f_1]`` for ``f_t = f_1 + σ ε (mod 1)``, ``ε ~ N(0, 1)`` per component.

    ``delta = f_t - f_1`` (any periodic image); each component is the average of
    ``(delta + k) / σ`` over the integers ``k`` (all within ``6 σ`` of the wrapped
    difference), weighted by the Gaussian density of that unwrapped noise. It equals
    ``-σ ∇ log p(f_t | f_1)`` of the wrapped normal (DiffCSP's score target): ``ε`` itself
    when ``σ`` is small, shrinking to 0 as the wrapped normal becomes uniform.
    """
    sig = torch.as_tensor(sigma, dtype=delta.dtype, device=delta.device)
    images = int(math.ceil(6 * float(sig.max()))) + 1
    k = torch.arange(-images, images + 1, device=delta.device, dtype=delta.dtype)
    u = wrap(delta).unsqueeze(-1) + k  # (..., 2K+1) unwrapped candidates
    w = torch.softmax(-0.5 * (u / sig.unsqueeze(-1)) ** 2, dim=-1)
    return (w * u).sum(-1) / sig


def ot_assignment(f0: torch.Tensor, f1: torch.Tensor, lattice: torch.Tensor, num_atoms: torch.Tensor) -> torch.Tensor:
    """Index (N,) into the data atoms ``f1`` giving each prior atom ``f0`` its partner:
    per crystal, the permutation of least total squared Cartesian length of the wrapped
    fractional differences (the paths the flow is trained on; ``scipy`` linear assignment)."""
    return ot_alignment(f0, f1, lattice, num_atoms, starts=1, iterations=1)[0]


def ot_alignment(
    f0: torch.Tensor, f1: torch.Tensor, lattice: torch.Tensor, num_atoms: torch.Tensor,
    starts: int = 3, iterations: int = 5, seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`ot_assignment`, with each data crystal also translated rigidly:
    ``(order (N,), shift (B, 3))`` such that ``f1[order] + shift[crystal]`` is the
    translated, re-ordered crystal with the least total squared path length found.

    Alternates the assignment for a fixed shift with the shift for a fixed
    assignment (the circular mean of the wrapped residuals), from a zero shift and
    ``starts - 1`` random ones, keeping the best pair seen (the first is
    :func:`ot_assignment`'s, so the paths are never longer than with it)."""
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(seed)
    with torch.no_grad():
        d = f1.detach().cpu().double().numpy()
        z = f0.detach().cpu().double().numpy()
        cells = lattice.detach().cpu().double().numpy()
        order = np.arange(len(d))
        shifts = np.zeros((len(num_atoms), 3))
        start = 0
        for k, n in enumerate(num_atoms.tolist()):
            data, prior = d[start : start + n], z[start : start + n]
            best = (np.inf, None, None)
            for trial in range(starts if n > 1 else 1):
                tau = np.zeros(3) if trial == 0 else rng.random(3)
                for _ in range(iterations):
                    diff = data[None] + tau - prior[:, None]  # (prior, data, 3)
                    diff -= np.round(diff)
                    cols = linear_sum_assignment(((diff @ cells[k]) ** 2).sum(-1))[1] if n > 1 else np.zeros(1, int)
                    res = diff[np.arange(n), cols]
                    centred = res - res.mean(0)  # the flow's target is centred per crystal
                    cost = float(((centred @ cells[k]) ** 2).sum())
                    if cost < best[0]:
                        best = (cost, cols, tau)
                    angle = 2 * np.pi * res
                    tau = tau - np.arctan2(np.sin(angle).mean(0), np.cos(angle).mean(0)) / (2 * np.pi)
            order[start : start + n] = start + best[1]
            shifts[k] = np.mod(best[2], 1.0)
            start += n
    return torch.as_tensor(order, device=f1.device), torch.as_tensor(shifts, device=f1.device, dtype=f1.dtype)


def repulsion_energy(
    frac: torch.Tensor, lattice: torch.Tensor, num_atoms: torch.Tensor, radii: torch.Tensor, factor: float = 0.7
) -> torch.Tensor:
    """Per-crystal penalty ``Σ_pairs relu(d_min - d)²`` (Å²) for pairs closer than
    ``d_min = factor (r_i + r_j)`` (species-aware, covalent radii ``radii`` per atom).

    Distances are those of the shortest wrapped fractional difference; an atom
    and its own periodic image count when the lattice is shorter than ``d_min``.
    """
    b = lattice.shape[0]
    edge_index, edge_batch = dense_edges(num_atoms)
    i, j = edge_index
    d = wrap(frac[j] - frac[i])
    r = torch.einsum("ea,eab->eb", d, lattice[edge_batch])
    dist = torch.sqrt((r**2).sum(-1) + 1e-12)
    pen = F.relu(factor * (radii[i] + radii[j]) - dist) ** 2
    out = lattice.new_zeros(b).index_add_(0, edge_batch, 0.5 * pen)
    # self-images: the three lattice vectors
    batch = torch.repeat_interleave(torch.arange(b, device=lattice.device), num_atoms)
    lengths = torch.linalg.norm(lattice, dim=-1)  # (B, 3)
    self_pen = F.relu(factor * 2 * radii.unsqueeze(-1) - lengths[batch]) ** 2
    return out.index_add_(0, batch, self_pen.sum(-1))
