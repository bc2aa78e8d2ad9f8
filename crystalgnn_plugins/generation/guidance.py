"""Differentiable terms that steer sampling: physics and property targets.

A term maps the *predicted clean crystal* of a sampling step (soft species
``(N, K)`` over the generator's vocabulary, fractional coordinates ``(N, 3)``,
lattice rows ``(B, 3, 3)`` in Å) to one value per crystal ``(B,)`` to be
minimised. The sampler pushes the velocities down its gradient, scaled by the
term's ``weight``; a term whose ``guides_lattice`` is ``False`` moves only the
atoms (and species), never the lattice; a term with an ``active(conditions)``
method returning ``False`` for a batch's conditions is left out of that batch.
The same terms can be used as training losses.

Built in:

- :class:`RepulsionTerm`: ``Σ relu(d_min - d)²`` for pairs closer than a
  species-aware minimum distance (Å²);
- :class:`EnergyTerm`: energy per atom (eV/atom) from an
  :class:`~crystalgnn_plugins.models.EnergyModel` (the default potential), or the
  enthalpy per atom ``(E + PV) / N`` at the pressure the crystals were made at;
- :class:`ChargeBalanceTerm`: species changes that make an unbalanced composition
  charge neutral (SMACT oxidation states), linearised in the soft species;
- :class:`PropertyTerm`: a trained
  :class:`~crystalgnn_plugins.models.PropertyModel` pushed below, above or
  towards a value ("formation energy below X", "band gap near Y"), also
  differentiable in the species when the model's encoder supports soft species.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from ase.units import GPa
from torch.nn import functional as F

from crystalgnn_plugins.generation.flow import repulsion_energy
from crystalgnn_plugins.models.base import evaluating


@dataclass
class GuidanceContext:
    """What a term may need besides the crystal: the vocabulary, atom counts, the
    pressure of each crystal's condition ``(B,)`` in eV/Å³ (``None``: 0) and each
    crystal's condition name (``None``: unknown)."""

    elements: list[str]
    num_atoms: torch.Tensor
    pressure: torch.Tensor | None = None
    conditions: list[str] | None = None

    @classmethod
    def of(cls, flow, num_atoms: torch.Tensor, condition: torch.Tensor) -> GuidanceContext:
        """The context of crystals of a :class:`CrystalFlow` with condition indices
        ``condition (B,)``: its vocabulary, and each condition's name and pressure."""
        pressures = torch.tensor([flow.pressure_gpa(c) for c in condition.tolist()], dtype=torch.float64,
                                 device=num_atoms.device)
        return cls(flow.elements, num_atoms, pressures * GPa if bool(pressures.any()) else None,
                   [flow.conditions[c] for c in condition.tolist()])

    @property
    def atomic_numbers(self) -> torch.Tensor:
        from ase.data import atomic_numbers

        return torch.tensor([atomic_numbers[e] for e in self.elements])


class RepulsionTerm:
    """Penalty for interatomic distances below ``factor × (r_cov,i + r_cov,j)`` (Å²).

    A geometric constraint: ``sample_flow(projection_steps=...)`` also descends it on
    the final atoms (``projects = True``)."""

    projects = True

    def __init__(self, weight: float = 1.0, factor: float = 0.7, guides_lattice: bool = True):
        self.weight, self.factor, self.guides_lattice = float(weight), float(factor), bool(guides_lattice)

    def __call__(self, probs, frac, lattice, ctx: GuidanceContext) -> torch.Tensor:
        from ase.data import covalent_radii

        radii_table = torch.tensor(covalent_radii[ctx.atomic_numbers.numpy()], dtype=frac.dtype, device=frac.device)
        return repulsion_energy(frac, lattice, ctx.num_atoms, probs @ radii_table, self.factor)


def _graph(model, probs, frac, lattice, ctx: GuidanceContext, soft: bool):
    """A batched crystal graph of the predicted crystals whose positions, cell
    (and, with ``soft``, species) carry gradients to ``frac``/``lattice``/``probs``."""
    from crystalgnn_plugins.graph import CrystalGraph

    z_vocab = ctx.atomic_numbers.to(probs.device)
    num_atoms = ctx.num_atoms.to(probs.device)
    batch = torch.repeat_interleave(torch.arange(len(num_atoms), device=probs.device), num_atoms)
    # wrapped positions, differentiable in frac and lattice
    shift = torch.floor(frac.detach())
    positions = torch.einsum("na,nab->nb", frac - shift, lattice[batch])
    pbc = torch.ones((len(num_atoms), 3), dtype=torch.bool)
    graph = CrystalGraph.from_batch(
        z_vocab[probs.argmax(-1)], positions, lattice, pbc, num_atoms.tolist(), model.cutoff, model.max_neighbors,
        ids=[f"sample {k}" for k in range(len(num_atoms))],
    )
    if soft:
        weights = probs.new_zeros(probs.shape[0], 119)
        weights[:, z_vocab] = probs
        graph.species_weights = weights
    return graph


class EnergyTerm:
    """Energy per atom (eV/atom) of the predicted crystal under an energy model;
    at a pressure ``P`` the enthalpy per atom ``(E + PV) / N``.

    Species are taken as the most likely ones (the gradient acts on the geometry);
    crystals with elements the model does not know contribute zero.

    Args:
        model: energy model, or a registered name/path.
        weight: guidance weight.
        pressure: GPa; ``None`` takes each crystal's pressure from the sampling
            context (the pressure of its condition, see ``CrystalFlow.condition_pressures``).
        condition_weights: extra factor per condition name (e.g. ``{"carbon_24": 6.0}``);
            conditions not listed, or crystals without a condition, get 1.
        guides_lattice: let the term move the lattice while sampling (else atoms only).
    """

    def __init__(
        self, model: Any = "default", weight: float = 1.0, pressure: float | None = None,
        condition_weights: dict[str, float] | None = None, guides_lattice: bool = True,
    ):
        from crystalgnn_plugins.models.pretrained import resolve_model

        self.model = resolve_model(model) if isinstance(model, str) else model
        self.weight = float(weight)
        self.pressure = None if pressure is None else float(pressure)
        self.condition_weights = {str(k): float(v) for k, v in (condition_weights or {}).items()}
        self.guides_lattice = bool(guides_lattice)

    def active(self, conditions: set[str]) -> bool:
        """Whether the term acts on crystals of these conditions (a zero weight for
        all of them: the sampler skips the energy model altogether)."""
        return self.weight != 0 and any(self.condition_weights.get(c, 1.0) != 0 for c in conditions)

    def __call__(self, probs, frac, lattice, ctx: GuidanceContext) -> torch.Tensor:
        known = self.model.elements  # None: the model takes any element
        ok = torch.tensor([known is None or e in known for e in ctx.elements], device=probs.device)
        crystal_ok = torch.ones(len(ctx.num_atoms), dtype=torch.bool, device=probs.device)
        atom_batch = torch.repeat_interleave(torch.arange(len(ctx.num_atoms), device=probs.device), ctx.num_atoms)
        bad_atoms = ~ok[probs.argmax(-1)]
        crystal_ok[atom_batch[bad_atoms]] = False
        dtype = next(self.model.parameters()).dtype
        graph = _graph(self.model, probs, frac.to(dtype), lattice.to(dtype), ctx, soft=False)
        with evaluating(self.model):  # the caller's model keeps its own train/eval mode
            energies = self.model.atomic_energies(graph, graph.edge_vectors())
        per_crystal = energies.new_zeros(len(ctx.num_atoms)).index_add_(0, graph.batch, energies)
        if self.pressure is not None:
            pressure = torch.full_like(per_crystal, self.pressure * GPa)
        elif ctx.pressure is not None:
            pressure = ctx.pressure.to(per_crystal)
        else:
            pressure = None
        if pressure is not None:
            volume = torch.linalg.det(graph.cell).abs()
            per_crystal = per_crystal + pressure * volume
        value = per_crystal / ctx.num_atoms.to(per_crystal.dtype)
        if self.condition_weights and ctx.conditions is not None:
            value = value * value.new_tensor([self.condition_weights.get(c, 1.0) for c in ctx.conditions])
        return torch.where(crystal_ok, value, torch.zeros_like(value)).to(frac.dtype)


class ChargeBalanceTerm:
    """Steer the species of crystals whose predicted composition is not charge
    balanced (SMACT oxidation states and Pauling test, as
    :func:`~crystalgnn_plugins.metrics.generation.compositional_validity`).

    Charge neutrality is a property of the whole composition, not a smooth function
    of the species: the term is its linearisation in the soft species,
    ``value = -Σ_i Σ_e p_ie [switching atom i to element e balances the crystal]``
    over each atom's ``candidates`` most likely elements, for crystals whose most
    likely composition is unbalanced (balanced crystals contribute 0). Its gradient
    raises the logits of the single-atom changes that balance the crystal by
    ``weight``; the flow's own logits decide among them. Each distinct composition
    is checked once (cached), so the term costs little beside the flow.
    """

    guides_lattice = False

    def __init__(self, weight: float = 1.0, candidates: int = 8):
        if candidates < 1:
            raise ValueError(f"candidates must be at least 1, got {candidates}")
        self.weight, self.candidates = float(weight), int(candidates)

    def __call__(self, probs, frac, lattice, ctx: GuidanceContext) -> torch.Tensor:
        from crystalgnn_plugins.metrics.generation import charge_balanced

        b, k = len(ctx.num_atoms), probs.shape[-1]
        batch = torch.repeat_interleave(torch.arange(b, device=probs.device), ctx.num_atoms.to(probs.device))
        fixes = torch.zeros_like(probs)
        with torch.no_grad():
            species = probs.argmax(-1)
            counts = torch.zeros((b, k), dtype=torch.long, device=probs.device).index_put_(
                (batch, species), torch.ones_like(species), accumulate=True)
            # each distinct composition is checked once (and cached across calls)
            rows, inverse = torch.unique(counts, dim=0, return_inverse=True)
            balanced = torch.tensor([charge_balanced(self._counts(row, ctx.elements)) for row in rows.tolist()],
                                    device=probs.device)
            atoms = (~balanced[inverse])[batch].nonzero().flatten().tolist()  # atoms of unbalanced crystals
            if atoms:
                top = probs.topk(min(self.candidates, k), dim=-1).indices.tolist()
                counts_list, species_list, batch_list = counts.tolist(), species.tolist(), batch.tolist()
                for i in atoms:
                    row = counts_list[batch_list[i]]
                    for e in top[i]:
                        if e == species_list[i]:
                            continue
                        changed = list(row)
                        changed[species_list[i]] -= 1
                        changed[e] += 1
                        if charge_balanced(self._counts(changed, ctx.elements)):
                            fixes[i, e] = 1.0
        per_atom = -(probs * fixes).sum(-1)
        return per_atom.new_zeros(b).index_add_(0, batch, per_atom)

    @staticmethod
    def _counts(row: list[int], elements: list[str]) -> dict[str, int]:
        return {elements[e]: c for e, c in enumerate(row) if c}


class PropertyTerm:
    """Steer a property predicted by a trained property model.

    Exactly one of ``below`` (penalty ``relu(y - below)``), ``above``
    (``relu(above - y)``) or ``near`` (``(y - near)²``) is given, in the model's
    units. ``soft_species`` makes the term differentiable in the species too.
    ``model`` must be a property model (one with a ``target`` output, e.g. from
    ``crystalgnn train --target ...``), given as an instance, a directory or a
    registered name; an energy model raises ``ValueError``.
    """

    def __init__(
        self,
        model: Any,
        *,
        below: float | None = None,
        above: float | None = None,
        near: float | None = None,
        weight: float = 1.0,
        soft_species: bool = True,
    ):
        given = [x is not None for x in (below, above, near)]
        if sum(given) != 1:
            raise ValueError("PropertyTerm needs exactly one of below=, above= or near=")
        from crystalgnn_plugins.models.pretrained import resolve_model

        self.model = resolve_model(model) if isinstance(model, (str, os.PathLike)) else model
        if not isinstance(getattr(self.model, "target", None), str):
            what = f"{str(model)!r}: " if isinstance(model, (str, os.PathLike)) else ""
            hint = (", an energy model (energies guide sampling through energy_weight / EnergyTerm)"
                    if hasattr(self.model, "atomic_energies") else ", which has no property target")
            raise ValueError(
                f"PropertyTerm needs a property model (trained with `crystalgnn train --target ...`), "
                f"whose output it steers; got {what}{type(self.model).__name__}{hint}"
            )
        self.below, self.above, self.near = below, above, near
        self.weight, self.soft_species = float(weight), soft_species

    def predict(self, probs, frac, lattice, ctx: GuidanceContext) -> torch.Tensor:
        """The model's prediction ``(B,)`` for the (soft) crystals."""
        dtype = next(self.model.parameters()).dtype
        graph = _graph(self.model, probs.to(dtype), frac.to(dtype), lattice.to(dtype), ctx, soft=self.soft_species)
        with evaluating(self.model):  # the caller's model keeps its own train/eval mode
            return self.model(graph)[self.model.target].to(frac.dtype)

    def __call__(self, probs, frac, lattice, ctx: GuidanceContext) -> torch.Tensor:
        y = self.predict(probs, frac, lattice, ctx)
        if self.below is not None:
            return F.relu(y - self.below)
        if self.above is not None:
            return F.relu(self.above - y)
        return (y - self.near) ** 2
