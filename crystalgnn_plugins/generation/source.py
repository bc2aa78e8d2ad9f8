"""``CrystalStructureSource``: new crystals as pymatgen ``Structure``s.

In the style of the ``pymatgen.ext`` clients (``MPRester``, ``OptimadeRester``):
an object you create once (optionally as a context manager) and ask for
structures::

    from crystalgnn_plugins.generation import CrystalStructureSource

    source = CrystalStructureSource()                     # shipped generator, offline
    structures = source.get_structures(10, chemsys="Sr-Ti-O", seed=0)
    csp = source.get_structures(5, composition="SrTiO3", relax=True)

Every structure carries its provenance in ``Structure.properties["generation"]``.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from crystalgnn_plugins._version import __version__

DEFAULT_GENERATOR = "generator"
#: learned-energy guidance weight for conditions without an entry in
#: ``DEFAULT_ENERGY_WEIGHTS`` (measured on perov_5: higher weights cost
#: compositional validity; docs/generation.md)
DEFAULT_ENERGY_WEIGHT = 0.05
#: measured per-condition weights of the shipped generator (docs/generation.md):
#: carbon_24: recall and precision rise up to 0.3, fall at 1.0; perov_5: 0.05 and 0
#: give the same metrics on 10,000 samples (the sharp sampler already puts the atoms
#: on their sites), CSP and targeting too, and 0 samples 5x faster (no potential)
DEFAULT_ENERGY_WEIGHTS = {"carbon_24": 0.3, "perov_5": 0.0}
#: measured sampler settings per condition of the shipped generator (docs/generation.md):
#: carbon_24's atoms settle into sharper sites with shorter final steps (1,000 samples:
#: COV-P 17 -> 23 %, still >= 90 % unique); a coordinate speed-up sharpens them further
#: (speed-up 3: COV-P 49 %) but makes duplicates (82 % unique), so it is opt-in there.
#: perov_5's atoms land on their symmetric sites with speed-up 3 and p = 2 (10,000
#: samples: COV-P 48 -> 66 %, COV-R 99.5 -> 99.7 %, 97.9 % unique; relaxations no
#: longer move the atoms), so that is its default
DEFAULT_COORD_SPEEDUPS: dict[str, float] = {"perov_5": 3.0}
DEFAULT_TIME_POWERS = {"carbon_24": 2.0, "perov_5": 2.0}
#: directed sampling of perov_5, with a given composition (crystal structure prediction)
#: or a property target, does better with plain uniform steps (CSP, 379 test formulas:
#: 63.9 % matched against 51.7 % with the speed-up and p = 2; heat_ref targeting: x4.2
#: more samples below the threshold and 87 % unique against x3.2 and 73 %), so unless
#: asked otherwise it uses them; carbon_24 keeps its de novo setting (not measured)
DEFAULT_DIRECTED_COORD_SPEEDUPS: dict[str, float] = {}
DEFAULT_DIRECTED_TIME_POWERS: dict[str, float] = {"carbon_24": 2.0}
#: guided steps per evaluation of the guidance terms (docs/generation.md, *Fewer potential
#: evaluations*): carbon_24's potential guidance evaluated on every 4th guided step gives
#: the same metrics (1,000 samples, two seeds: COV-R 99.5/98.0 %, COV-P 19.8/20.1 against
#: 22.7/20.4 %, density EMD 0.103/0.094 against 0.099/0.093) at 2.6x the speed; every 8th
#: loses recall (90.6 %). Conditions not listed evaluate them on every guided step
DEFAULT_GUIDANCE_EVERY: dict[str, int] = {"carbon_24": 4}
#: energy model of the learned-energy guidance per condition when no ``energy_model`` is
#: given (docs/generation.md, *A small guide for carbon_24*): carbon_24 is guided by a
#: 34k-parameter carbon-only potential ("carbon-guide") that gives the same metrics as the
#: default potential at ~2x the speed; relaxation keeps the default potential
DEFAULT_GUIDANCE_MODELS: dict[str, str] = {"carbon_24": "carbon-guide"}
#: conditions whose free samples draw their latent code and atom count from the
#: generator's latent bank (docs/generation.md, *Latent codes of training crystals*):
#: carbon_24's samples fall into the data's two density modes (density EMD 0.10 -> 0.04,
#: same recall and precision); perov_5 loses recall and compositional validity with it,
#: so it stays unconditional
DEFAULT_LATENT: dict[str, bool] = {"carbon_24": True}
#: extra width of the bank's latent codes per condition (``z = mu + (std + noise) eps``):
#: carbon_24's exact codes make alike samples (87-89 % unique among 1,000), widened by 0.3
#: they are >= 90 % unique again with the density kept
DEFAULT_LATENT_NOISE: dict[str, float] = {"carbon_24": 0.3}


def _per_condition(
    name: str, value: Any, conditions: Sequence[str], defaults: dict[str, Any], fallback: Any,
    cast: Callable[[Any], Any] = float,
) -> dict[str, Any]:
    """One setting for every condition: ``None`` -> the measured ``defaults`` (else
    ``fallback``); a single value -> everywhere; a dict -> its entries, the measured
    defaults (else ``fallback``) for the conditions it does not list. ``cast`` converts
    each value (``float``; ``bool`` for switches; identity for models)."""
    if value is None:
        return {c: cast(defaults.get(c, fallback)) for c in conditions}
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(conditions))
        if unknown:
            raise ValueError(f"{name}: {unknown} are not conditions of this generator ({list(conditions)})")
        return {c: cast(value.get(c, defaults.get(c, fallback))) for c in conditions}
    return dict.fromkeys(conditions, cast(value))


def _generator_dir(model: Any):
    """The saved-model directory of a generator given by name or path (``None`` for an instance)."""
    from crystalgnn_plugins.generation.flow import CrystalFlow
    from crystalgnn_plugins.models.pretrained import model_path

    return None if isinstance(model, CrystalFlow) else model_path(DEFAULT_GENERATOR if model is None else model)


def resolve_generator(model: Any = None, *, device: str | torch.device = "cpu"):
    """A :class:`~crystalgnn_plugins.generation.CrystalFlow` from an instance, a
    saved-model directory or a shipped name (``None``: the shipped default)."""
    from crystalgnn_plugins.generation.flow import CrystalFlow
    from crystalgnn_plugins.models.io import ModelFileError, load_model

    if isinstance(model, CrystalFlow):
        return model.to(device)
    path = _generator_dir(model)
    flow = load_model(path, device=device)
    if not isinstance(flow, CrystalFlow):
        raise ModelFileError(f"{path}: holds a {type(flow).__name__}, not a crystal generator")
    return flow


def _is_valid(structure, min_distance: float = 0.5) -> bool:
    if structure.volume <= 0.1:
        return False
    if len(structure) == 1:
        return min(structure.lattice.abc) > min_distance
    dm = structure.distance_matrix + np.eye(len(structure)) * 1e9
    return bool(dm.min() > min_distance) and min(structure.lattice.abc) > min_distance


def _active_terms(terms: list, conditions: set[str]) -> list:
    """The guidance terms that act on crystals of these conditions (a term without an
    ``active`` method always acts)."""
    return [t for t in terms if not hasattr(t, "active") or t.active(conditions)]


def _atom_chunks(counts: torch.Tensor, max_atoms: int) -> list[tuple[int, int]]:
    """Consecutive crystal ranges ``[a, b)`` of at most ``max_atoms`` atoms each
    (a crystal larger than that forms its own range)."""
    chunks, a, total = [], 0, 0
    for k, c in enumerate(counts.tolist()):
        if k > a and total + c > max_atoms:
            chunks.append((a, k))
            a, total = k, 0
        total += c
    chunks.append((a, len(counts)))
    return chunks


class CrystalStructureSource:
    """Generated crystals on request, as pymatgen ``Structure``s.

    Args:
        model: a :class:`~crystalgnn_plugins.generation.CrystalFlow`, a saved
            generator directory or a shipped name (``None``: the default).
        energy_model: energy model for ``relax=True`` and for the physics guidance of
            the conditions without a ``guidance_model`` (name, path or model; ``None``: the
            shipped default potential).
        guidance_model: energy model of the learned-energy guidance: one (name, path or
            model) for every condition, or a dict ``{condition: model}`` (others keep their
            default); ``None``: ``DEFAULT_GUIDANCE_MODELS`` if ``energy_model`` is not
            given (the shipped "carbon-guide" for carbon_24), else ``energy_model``.
            The guide only steers sampling; ``relax=True`` uses ``energy_model``.
        latent: draw the latent code and the atom count of free samples (no
            ``composition``, ``chemsys`` or ``target``) from the latent bank, i.e. near
            the latent code of a random training crystal of the condition
            (:class:`~crystalgnn_plugins.generation.LatentBank`), instead of the
            unconditional flow. One bool, or a dict ``{condition: bool}`` (others keep
            their default); ``None``: ``DEFAULT_LATENT`` (carbon_24) where the bank has
            crystals of the condition. A given ``num_atoms`` uses entries with that many
            atoms (unconditional if there are none).
        latent_noise: widen the bank's codes, ``z = mu + (std + latent_noise) eps``:
            codes further from the training crystals. One number, or a dict
            ``{condition: value}`` (others keep their default); ``None``: ``DEFAULT_LATENT_NOISE``.
        latent_bank: a :class:`~crystalgnn_plugins.generation.LatentBank` or the path of
            a ``latent_bank.npz``; ``None``: the one saved next to the generator's weights
            (the shipped generator has one), if any.
        physics: guide sampling with the interatomic-distance repulsion, the
            learned energy and charge balance (weights ``repulsion_weight``,
            ``energy_weight``, ``charge_weight``); the energy term is the enthalpy
            ``E + PV`` at the pressure of each sample's condition (e.g. 10 GPa for
            carbon_24, whose crystals were relaxed at 10 GPa).
        energy_weight: weight of the learned-energy guidance: one number, or a dict
            ``{condition: weight}`` (conditions not listed keep their default); ``None``: 0.3 for
            carbon_24, 0 for perov_5 (repulsion only) and 0.05 for the others
            (``DEFAULT_ENERGY_WEIGHTS``). A condition with weight 0 is sampled without
            evaluating the potential.
        charge_weight: weight of the charge-balance guidance
            (:class:`~crystalgnn_plugins.generation.guidance.ChargeBalanceTerm`): raises
            the species logits of single-atom changes that make an unbalanced predicted
            composition charge neutral (SMACT oxidation states); 0 turns it off.
        guide_lattice: let the physics guidance move the lattice as well as the atoms
            (property targets always may). Off by
            default: the flow's lattices have the data's density, and the guidance
            would expand cells whose atoms are still too close (carbon_24: median
            density 2.75 against 3.22 g/cm³ with it, 3.20 without).
        steps: integration steps of the flow.
        guidance_start: flow time (0 prior, 1 data) from which the guidance acts.
        guidance_every: evaluate the guidance (the energy model) on every ``k``-th
            guided step and reuse its gradients in between (faster guided sampling).
            One number, or a dict ``{condition: k}`` (others keep their default); ``None``:
            ``DEFAULT_GUIDANCE_EVERY`` (4 for carbon_24: the same metrics at 2.6x the
            speed; 1 for the others and for wrapped-normal generators).
        coord_speedup: coordinate velocity multiplied by ``1 + coord_speedup * t``
            (inference anti-annealing, FlowMM): sharper sites. One number, or a dict
            ``{condition: value}`` (others keep their default); ``None``: ``DEFAULT_COORD_SPEEDUPS``
            (3 for perov_5, 0 for the others) and, with a given composition or a
            property target, 0 (``DEFAULT_DIRECTED_COORD_SPEEDUPS``; ``time_power``
            likewise 1, except 2 for carbon_24). ``{"carbon_24": 3, "perov_5": 3}`` gives
            much more crystal-like carbon but more duplicate samples (docs/generation.md).
        time_power: step times ``1 - (1 - k / steps) ** time_power`` (1: uniform;
            larger: shorter steps near the end, see
            :func:`~crystalgnn_plugins.generation.sampling.sample_flow`). One number or a
            dict (others keep their default); ``None``: 2 for carbon_24 and perov_5, 1 for the others (``DEFAULT_TIME_POWERS``).
        projection_steps: with ``physics``, at most this many descent steps of the
            repulsion on the final atoms (see
            :func:`~crystalgnn_plugins.generation.sampling.sample_flow`): separates the
            rare pairs that the last steps pushed together (e.g. two anions on one site
            with ``coord_speedup``); other samples are unchanged. 0 turns it off.
        batch_size: crystals planned at once (atom counts, compositions).
        max_batch_atoms: at most this many atoms are integrated together (a planned
            batch is cut into consecutive chunks; a larger single crystal goes alone):
            the network sees every atom pair of a crystal, so memory grows with the
            atoms per batch (carbon_24 with guidance: ~0.4 GB per 1,000 atoms), and
            batches of a few thousand atoms are also the fastest on a CPU.
        relax_kwargs: options of :func:`crystalgnn_plugins.relaxation.relax` for
            ``relax=True`` (default fmax 0.05 eV/Å, 500 steps, cell relaxed, at the
            pressure of the sample's condition: ``CrystalFlow.condition_pressures``).
        device: ``"cpu"`` or ``"cuda"``.
        reuse_memory: on CPU, let the C allocator keep freed buffers for the next
            step (process-wide, see
            :func:`~crystalgnn_plugins.calculators.reuse_host_memory`), as
            ``GNNCalculator`` does: guided carbon_24 sampling 4.8 → 7.6 valid
            crystals/s on one thread; the resident memory stays at its peak.
    """

    def __init__(
        self,
        model: Any = None,
        *,
        energy_model: Any = None,
        guidance_model: Any = None,
        latent: bool | dict[str, bool] | None = None,
        latent_noise: float | dict[str, float] | None = None,
        latent_bank: Any = None,
        physics: bool = True,
        repulsion_weight: float = 5.0,
        energy_weight: float | dict[str, float] | None = None,
        charge_weight: float = 3.0,
        guide_lattice: bool = False,
        guidance_start: float = 0.6,
        guidance_every: int | dict[str, int] | None = None,
        steps: int = 50,
        coord_speedup: float | dict[str, float] | None = None,
        time_power: float | dict[str, float] | None = None,
        projection_steps: int = 10,
        batch_size: int = 1000,
        max_batch_atoms: int = 2000,
        relax_kwargs: dict[str, Any] | None = None,
        device: str | torch.device = "cpu",
        reuse_memory: bool = True,
    ):
        self.flow = resolve_generator(model, device=device).eval()
        self.latent_bank, self.latent = self._latent_settings(model, latent, latent_bank)
        self.latent_noise = _per_condition("latent_noise", latent_noise, self.flow.conditions, DEFAULT_LATENT_NOISE, 0.0)
        bad = {c: v for c, v in self.latent_noise.items() if v < 0}
        if bad:
            raise ValueError(f"latent_noise must be >= 0, got {bad}")
        self.device = torch.device(device)
        if reuse_memory and self.device.type == "cpu":
            from crystalgnn_plugins.calculators.host_memory import reuse_host_memory

            reuse_host_memory()
        self._energy_model_arg = energy_model
        self._energy_model = None
        self.guidance_models = self._guidance_models(guidance_model, energy_model)
        self._guides: dict[Any, Any] = {}  # loaded guidance models by _guide_key
        self.physics = physics
        self.repulsion_weight, self.guide_lattice = repulsion_weight, guide_lattice
        if charge_weight < 0:
            raise ValueError(f"charge_weight must be >= 0, got {charge_weight}")
        self.charge_weight = float(charge_weight)
        self.energy_weights = self._energy_weights(energy_weight)
        self.guidance_start, self.steps = guidance_start, steps
        conditions = self.flow.conditions
        # the measured speed-ups, step powers and guidance reuse belong to the geodesic coordinate path
        # (the shipped generator); a wrapped-normal flow has no speed-up (sample_flow
        # rejects one) and uniform steps (its corrector works at every noise level)
        geodesic = self.flow.coord_path == "geodesic"
        self.coord_speedups = _per_condition("coord_speedup", coord_speedup, conditions,
                                             DEFAULT_COORD_SPEEDUPS if geodesic else {}, 0.0)
        self.time_powers = _per_condition("time_power", time_power, conditions,
                                          DEFAULT_TIME_POWERS if geodesic else {}, 1.0)
        self.directed_coord_speedups = _per_condition("coord_speedup", coord_speedup, conditions,
                                                      DEFAULT_DIRECTED_COORD_SPEEDUPS if geodesic else {}, 0.0)
        self.directed_time_powers = _per_condition("time_power", time_power, conditions,
                                                   DEFAULT_DIRECTED_TIME_POWERS if geodesic else {}, 1.0)
        every = _per_condition("guidance_every", guidance_every, conditions, DEFAULT_GUIDANCE_EVERY if geodesic else {}, 1)
        bad = {c: k for c, k in every.items() if k < 1 or k != int(k)}
        if bad:
            raise ValueError(f"guidance_every must be a whole number >= 1, got {bad}")
        self.guidance_every = {c: int(k) for c, k in every.items()}
        bad = {c: p for c, p in self.time_powers.items() if p <= 0}
        if bad:
            raise ValueError(f"time_power must be positive, got {bad}")
        if projection_steps < 0:
            raise ValueError(f"projection_steps must be >= 0, got {projection_steps}")
        self.projection_steps = int(projection_steps)
        if max_batch_atoms < 1:
            raise ValueError(f"max_batch_atoms must be at least 1, got {max_batch_atoms}")
        self.batch_size, self.max_batch_atoms = batch_size, int(max_batch_atoms)
        self.relax_kwargs = dict(relax_kwargs or {})

    # pymatgen.ext clients are context managers
    def __enter__(self) -> CrystalStructureSource:
        return self

    def __exit__(self, *exc) -> None:
        return None

    @property
    def conditions(self) -> list[str]:
        """Datasets the generator is conditioned on (``condition=`` values)."""
        return list(self.flow.conditions)

    @property
    def elements(self) -> list[str]:
        """Elements the generator can place."""
        return list(self.flow.elements)

    def energy_model(self):
        """The energy model used for relaxation and for the guidance of conditions
        without a guidance model (loaded once)."""
        if self._energy_model is None:
            from crystalgnn_plugins.models.pretrained import resolve_model

            self._energy_model = resolve_model(self._energy_model_arg, device=self.device)
        return self._energy_model

    def _latent_settings(self, model: Any, latent: Any, bank: Any) -> tuple[Any, dict[str, bool]]:
        """The latent bank (or ``None``) and, per condition, whether free samples use it."""
        from crystalgnn_plugins.generation.latent_bank import LATENT_BANK_FILE, LatentBank

        conditions = self.flow.conditions
        if bank is None:
            directory = _generator_dir(model)
            if directory is not None and (directory / LATENT_BANK_FILE).is_file():
                bank = LatentBank.load(directory)
        elif not isinstance(bank, LatentBank):
            bank = LatentBank.load(bank)
        if bank is not None and bank.latent_dim != self.flow.latent_dim:
            raise ValueError(f"latent bank has codes of dimension {bank.latent_dim}, the generator {self.flow.latent_dim}")
        wanted = _per_condition("latent", latent, conditions, DEFAULT_LATENT, False, cast=bool)
        missing = sorted(c for c, on in wanted.items() if on and (bank is None or not bank.has(c)))
        # conditions the caller asked for (not just the defaults) must be in the bank
        asked = [c for c in missing if latent is True or (isinstance(latent, dict) and latent.get(c))]
        if asked:
            raise ValueError(f"latent sampling asked for {asked}, but the latent bank has no crystals of "
                             f"{'them' if bank is not None else 'any condition (no bank)'}")
        return bank, {c: on and c not in missing for c, on in wanted.items()}

    def uses_latent(self, condition: str, num_atoms: int | None = None) -> bool:
        """Whether free samples of ``condition`` (with ``num_atoms`` atoms) draw their
        latent code from the latent bank."""
        return self.latent[condition] and self.latent_bank.has(condition, num_atoms)

    def _guidance_models(self, value: Any, energy_model: Any) -> dict[str, Any]:
        """The guidance model of every condition (``None``: the energy model)."""
        defaults: dict[str, Any] = {}
        if energy_model is None:
            from crystalgnn_plugins.models.pretrained import pretrained_path

            # a source checkout without the guide's weights guides with the energy model
            defaults = {c: m for c, m in DEFAULT_GUIDANCE_MODELS.items() if pretrained_path(m) is not None}
        return _per_condition("guidance_model", value, self.flow.conditions, defaults, None, cast=lambda m: m)

    def guidance_label(self, condition: str) -> str:
        """What guides ``condition``'s learned-energy term: a model name or path, or the
        class name of a model instance (provenance)."""
        spec = self.guidance_models[condition]
        if spec is None:
            spec = self._energy_model_arg
            if spec is None:
                return "default"
        return str(spec) if isinstance(spec, (str, os.PathLike)) else type(spec).__name__

    def _guide_key(self, condition: str) -> Any:
        """Conditions with one key share one loaded guidance model (``None``: the energy model)."""
        spec = self.guidance_models[condition]
        if spec is None:
            return None
        return str(spec) if isinstance(spec, (str, os.PathLike)) else id(spec)

    def _guidance_model(self, condition: str):
        """The loaded guidance model of ``condition``."""
        spec, key = self.guidance_models[condition], self._guide_key(condition)
        if key is None:
            return self.energy_model()
        if key not in self._guides:
            from crystalgnn_plugins.models.pretrained import resolve_model

            self._guides[key] = resolve_model(spec, device=self.device)
        return self._guides[key]

    def _guidance(self, target) -> list:
        from crystalgnn_plugins.generation.guidance import (
            ChargeBalanceTerm,
            EnergyTerm,
            PropertyTerm,
            RepulsionTerm,
        )

        terms: list = []
        if self.physics:
            terms.append(RepulsionTerm(self.repulsion_weight, guides_lattice=self.guide_lattice))
            # one energy term per guidance model, acting on its own conditions only
            groups: dict[Any, list[str]] = {}
            for c, w in self.energy_weights.items():
                if w:
                    groups.setdefault(self._guide_key(c), []).append(c)
            for conds in groups.values():
                weights = {c: self.energy_weights[c] if c in conds else 0.0 for c in self.flow.conditions}
                terms.append(EnergyTerm(self._guidance_model(conds[0]), 1.0, condition_weights=weights,
                                        guides_lattice=self.guide_lattice))
            if self.charge_weight:
                terms.append(ChargeBalanceTerm(self.charge_weight))
        if target is not None:
            if isinstance(target, dict):
                target = PropertyTerm(**target)
            terms.append(target)
        return terms

    def _energy_weights(self, energy_weight) -> dict[str, float]:
        """The learned-energy guidance weight of every condition of the flow."""
        return _per_condition("energy_weight", energy_weight, self.flow.conditions, DEFAULT_ENERGY_WEIGHTS,
                              DEFAULT_ENERGY_WEIGHT)

    def _sampler(self, cond: int, directed: bool = False, guided: bool = True) -> dict[str, float]:
        """``sample_flow`` settings of a condition (by index), for free generation or,
        with ``directed``, for a given composition or property target; ``guided``:
        guidance terms are used (else there is nothing to project)."""
        name = self.flow.conditions[cond]
        if directed:
            speedups, powers = self.directed_coord_speedups, self.directed_time_powers
        else:
            speedups, powers = self.coord_speedups, self.time_powers
        out = {"coord_speedup": speedups[name], "time_power": powers[name]}
        if self.physics and guided:
            out["projection_steps"] = self.projection_steps
        if guided:
            out["guidance_every"] = self.guidance_every[name]
        return out

    def _plan(self, n, composition, chemsys, num_atoms, condition, rng, known: set[str] | None = None):
        """Atom counts, fixed species and allowed species for ``n`` crystals; ``known``:
        the elements of a property target's model (``None``: any), to which the species
        are restricted."""
        from pymatgen.core import Composition

        flow = self.flow
        k = len(flow.elements)
        species = allowed = None
        if composition is not None:
            if isinstance(composition, str):
                _check_formula(composition)
            comp = Composition(composition)
            symbols_in = {el.symbol for el in comp.elements}
            unknown = sorted(symbols_in - set(flow.elements))
            if unknown:
                raise ValueError(f"composition {comp.formula!r}: elements {unknown} are unknown to this generator")
            if known is not None and not symbols_in <= known:
                raise ValueError(f"composition {comp.formula!r}: elements {sorted(symbols_in - known)} are unknown "
                                 f"to the target's property model (it knows {sorted(known)})")
            if chemsys is not None and not symbols_in <= set(_chemsys_elements(chemsys)):
                raise ValueError(f"composition {comp.formula!r} has elements outside chemsys {chemsys!r}")
            cond = flow.condition_index(condition) if condition is not None else self._condition_for(symbols_in)
            reduced, _ = comp.get_reduced_composition_and_factor()
            if any(abs(amt - round(amt)) > 1e-6 for amt in reduced.values()):
                raise ValueError(f"composition {comp.formula!r}: amounts must be whole numbers of atoms")
            unit = int(round(reduced.num_atoms))
            if num_atoms is None:
                z_counts = [m for m in range(1, 9) if float(comp.num_atoms) <= m * unit and (m * unit) in _support(flow, cond)]
                num_atoms = max(int(round(comp.num_atoms)), z_counts[0] * unit if z_counts else unit)
            max_atoms = len(flow.num_atoms_probs[cond]) - 1
            if not 1 <= num_atoms <= max_atoms:
                raise ValueError(f"num_atoms={num_atoms} is out of range for this generator (1 to {max_atoms})")
            if num_atoms % unit:
                raise ValueError(f"num_atoms={num_atoms} is not a multiple of the {unit} atoms of {reduced.formula}")
            factor = num_atoms // unit
            symbols = [el.symbol for el, amt in sorted(reduced.items(), key=lambda x: x[0].X) for _ in range(int(round(amt)) * factor)]
            one = torch.tensor([flow.elements.index(s) for s in symbols])
            species = one.repeat(n)
            counts = torch.full((n,), len(symbols))
        else:
            els, what = None, None  # the elements the species are restricted to, and what restricts them
            if chemsys is not None:
                els = _chemsys_elements(chemsys)
                what = f"chemsys {'-'.join(els)!r}"
                unknown = sorted(set(els) - set(flow.elements))
                if unknown:
                    raise ValueError(f"{what}: elements {unknown} are unknown to this generator")
            if known is not None:
                pool = [e for e in (flow.elements if els is None else els) if e in known]
                if not pool:
                    raise ValueError(f"target: its property model knows none of the elements of "
                                     f"{'this generator' if els is None else what} (it knows {sorted(known)})")
                what = "target" if els is None else f"target with {what}"
                if els is not None or len(pool) < k:
                    els = pool
            if condition is not None:
                cond = flow.condition_index(condition)
            elif els is not None:
                cond = self._condition_with(els, what)
            else:
                cond = 0
            if els is not None:
                idx = [flow.elements.index(e) for e in els]
                if known is not None and not bool((flow.species_probs[cond, idx] > 0).any()):
                    raise ValueError(f"{what}: none of the elements the property model knows ({sorted(set(els))}) "
                                     f"occurs in condition {flow.conditions[cond]!r}; nothing to sample")
                mask = torch.zeros(k, dtype=torch.bool)
                mask[idx] = True
                allowed = mask.expand(n, k)
            if num_atoms is not None:
                if not 1 <= int(num_atoms) <= len(flow.num_atoms_probs[cond]) - 1:
                    raise ValueError(f"num_atoms={num_atoms} is out of range for this generator")
                counts = torch.full((n,), int(num_atoms))
            else:
                probs = flow.num_atoms_probs[cond].cpu().double().numpy()
                counts = torch.tensor(rng.choice(len(probs), size=n, p=probs / probs.sum()))
        return counts, species, allowed, torch.full((n,), cond)

    def _condition_with(self, symbols: Sequence[str], what: str) -> int:
        """The condition under which the elements carry the most training-species
        probability (``what`` names them in the error if no condition has any)."""
        probs = self.flow.species_probs.detach().cpu().double()
        mass = probs[:, [self.flow.elements.index(e) for e in symbols]].sum(-1)
        if not bool((mass > 0).any()):
            raise ValueError(f"{what}: no condition of this generator ({self.conditions}) has any of the elements "
                             f"{sorted(set(symbols))} in its training data")
        return int(mass.argmax())

    def _condition_for(self, symbols: set[str]) -> int:
        """The condition under which the elements are most likely (training
        species frequencies); the first condition if none has them all."""
        probs = self.flow.species_probs.detach().cpu().double()
        idx = [self.flow.elements.index(e) for e in symbols]
        support = (probs[:, idx] > 0).all(-1)
        if not support.any():
            return 0
        score = torch.log(probs[:, idx].clamp_min(1e-300)).sum(-1).masked_fill(~support, float("-inf"))
        return int(score.argmax())

    def get_structures(
        self,
        n: int,
        *,
        composition: Any = None,
        chemsys: str | Sequence[str] | None = None,
        num_atoms: int | None = None,
        target: Any = None,
        relax: bool = False,
        seed: int | None = None,
        condition: str | None = None,
        valid_only: bool = True,
    ) -> list:
        """Generate ``n`` crystals.

        Args:
            n: number of structures.
            composition: a formula or ``Composition``: crystal structure
                prediction for that composition (species fixed). The atom count is
                the smallest multiple of the formula unit that the condition's training
                cells have, so outside carbon_24 it is in practice limited to the
                training cell sizes (perov_5 has only 5-atom cells: ``"Si"`` gives
                Si5). A formula string with a number starting with a zero (``"SrTi03"``)
                is refused: the letter O was meant.
            chemsys: e.g. ``"Sr-Ti-O"``: species restricted to these elements.
            num_atoms: atoms per cell (default: drawn from the training data).
            target: a :class:`~crystalgnn_plugins.generation.PropertyTerm` or the
                dict of its arguments, e.g. ``{"model": path, "below": 0.44}``. The
                species are restricted to the elements the property model knows
                (with ``chemsys``: to those of the chemsys); a ``composition`` with
                others is refused.
            relax: relax every sample with the energy model (batched FIRE +
                Fréchet cell filter; ``relax_kwargs``, default fmax 0.05 eV/Å, 500 steps).
            seed: makes the sampling reproducible: the same ``seed`` and arguments give
                the same structures. The batch is drawn together, so the same seed
                with another ``n`` gives different structures (not a prefix).
            condition: dataset the samples should resemble (``self.conditions``);
                default: with a composition, the condition whose training species
                make it most likely; with a ``chemsys`` (or a ``target`` alone), the
                condition under which its elements (those the target's model knows)
                carry the most training-species probability; with none of these, the
                first condition (``self.conditions[0]``; carbon_24 for the shipped
                generator).
            valid_only: drop samples with distances below 0.5 Å or volume below
                0.1 Å³ and sample again until ``n`` are valid (at most 10 rounds).

        Returns:
            ``n`` pymatgen ``Structure``s with fractional coordinates in [0, 1);
            ``properties["generation"]`` holds the provenance (generator, version,
            seed, condition, guidance, relaxation).
        """
        from crystalgnn_plugins.generation.sampling import sample_flow

        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive whole number of structures, got {n!r}")
        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        terms = self._guidance(target)
        known = _target_elements(terms[-1]) if target is not None else None  # the target is the last term
        directed = composition is not None or target is not None  # CSP or property targeting
        free = not directed and chemsys is None  # latent codes from the bank apply to free generation only
        out: list = []
        rounds = 0
        start = time.perf_counter()
        while len(out) < n and rounds < 10:
            rounds += 1
            need = n - len(out)
            for lo in range(0, need, self.batch_size):
                m = min(self.batch_size, need - lo)
                counts, species, allowed, cond = self._plan(m, composition, chemsys, num_atoms, condition, rng, known)
                z, name = None, self.flow.conditions[int(cond[0])]
                if free and self.uses_latent(name, num_atoms):
                    counts, z = self.latent_bank.sample(name, m, rng, gen, num_atoms, noise=self.latent_noise[name])
                    z = z.to(self.device, self.flow.lattice_mean.dtype)
                for a, b in _atom_chunks(counts, self.max_batch_atoms):
                    first, last = int(counts[:a].sum()), int(counts[:b].sum())
                    active = _active_terms(terms, {self.flow.conditions[int(c)] for c in cond[a:b]})
                    raw = sample_flow(
                        self.flow, counts[a:b], cond[a:b], species=None if species is None else species[first:last],
                        allowed=None if allowed is None else allowed[a:b], z=None if z is None else z[a:b],
                        steps=self.steps, guidance=active,
                        guidance_start=self.guidance_start, generator=gen,
                        **self._sampler(int(cond[a]), directed=directed, guided=bool(active)),
                    )
                    out.extend(self._to_structures(
                        raw, cond[a:b], seed, composition, chemsys, [type(t).__name__ for t in active], valid_only,
                        directed=directed, guided=bool(active), latent=z is not None,
                    ))
        if len(out) < n:
            warnings.warn(f"only {len(out)} of {n} samples were valid after {rounds} rounds", stacklevel=2)
        out = out[:n]
        if relax and out:
            out = self._relax(out)
        for s in out:
            s.properties["generation"]["seconds_per_structure"] = (time.perf_counter() - start) / len(out)
        return out

    # ------------------------------------------------------------------ latent space
    def encode(self, structures: Sequence[Any], condition: str | None = None) -> np.ndarray:
        """Latent means ``(n, latent_dim)`` of known crystals (invariant to rotations,
        translations, permutations and periodic images)."""
        flow = self.flow
        batch = flow.batch_from_structures(list(structures), condition).to(self.device)
        with torch.no_grad():
            mu, _ = flow.encode(batch)
        return mu.cpu().numpy()

    def decode(
        self, z: np.ndarray, num_atoms: int | Sequence[int], *, condition: str | None = None,
        composition: Any = None, seed: int | None = 0,
    ) -> list:
        """Crystals generated from latent codes ``z`` ``(n, latent_dim)``. The same
        ``seed`` uses the same prior noise for every code, so nearby codes give
        related crystals (interpolation, latent optimisation)."""
        from crystalgnn_plugins.generation.sampling import sample_flow

        z = torch.as_tensor(np.atleast_2d(z), dtype=self.flow.lattice_mean.dtype, device=self.device)
        n = z.shape[0]
        counts = torch.as_tensor(np.broadcast_to(np.asarray(num_atoms), (n,)).copy())
        if len(set(counts.tolist())) != 1:
            raise ValueError("decode: all codes must share one num_atoms (the prior noise is shared)")
        species = None
        if composition is not None:
            _, species, _, _ = self._plan(1, composition, None, int(counts[0]), condition, np.random.default_rng(0))
            species = species.repeat(n)
        cond = torch.full((n,), self.flow.condition_index(condition))
        out = []
        for k in range(n):  # one code at a time with the same noise
            gen = torch.Generator().manual_seed(0 if seed is None else int(seed))
            raw = sample_flow(
                self.flow, counts[k : k + 1], cond[k : k + 1], z=z[k : k + 1],
                species=None if species is None else species[: int(counts[0])],
                steps=self.steps, generator=gen, **self._sampler(int(cond[k]), directed=composition is not None, guided=False),
            )
            out.extend(self._to_structures(raw, cond[k : k + 1], seed, composition, None, ["latent"],
                                           directed=composition is not None, guided=False))
        return out

    def interpolate(self, start: Any, end: Any, num: int = 5, *, condition: str | None = None, seed: int | None = 0) -> list:
        """``num`` crystals decoded along the straight line between the latents of
        two structures with the same number of atoms."""
        if len(start) != len(end):
            raise ValueError(f"interpolate: {len(start)} and {len(end)} atoms; the end points need the same number")
        z = self.encode([start, end], condition)
        path = np.stack([(1 - w) * z[0] + w * z[1] for w in np.linspace(0, 1, num)])
        return self.decode(path, len(start), condition=condition, seed=seed)

    def _to_structures(self, raw, cond, seed, composition, chemsys, guidance, valid_only: bool = False,
                       directed: bool = False, guided: bool = True, latent: bool = False) -> list:
        from pymatgen.core import Lattice, Structure

        sp = raw.species.cpu()
        fr = _wrapped(raw.frac.detach().cpu().double().numpy())
        lat = raw.lattice.detach().cpu().double().numpy()
        out, first = [], 0
        for b, cnt in enumerate(raw.num_atoms.tolist()):
            s = Structure(Lattice(lat[b]), [self.flow.elements[i] for i in sp[first : first + cnt]], fr[first : first + cnt])
            first += cnt
            if valid_only and not _is_valid(s):
                continue
            s.properties["generation"] = {
                "generator": "crystal_flow", "package_version": __version__, "seed": seed,
                "condition": self.flow.conditions[int(cond[b])], "steps": self.steps,
                **self._sampler(int(cond[b]), directed=directed, guided=guided),
                "composition": None if composition is None else str(composition),
                "chemsys": chemsys if chemsys is None or isinstance(chemsys, str) else "-".join(chemsys),
                "guidance": list(guidance),
                **({"energy_guide": self.guidance_label(self.flow.conditions[int(cond[b])])}
                   if "EnergyTerm" in guidance else {}),
                "pressure_GPa": self.flow.pressure_gpa(int(cond[b])),
                **({"latent": "bank", "latent_noise": self.latent_noise[self.flow.conditions[int(cond[b])]]}
                   if latent else {}),
            }
            out.append(s)
        return out

    def _relax(self, structures: list) -> list:
        """Relax with the energy model, each crystal at the pressure of its
        condition (``CrystalFlow.condition_pressures``) unless ``relax_kwargs``
        sets ``pressure``."""
        from crystalgnn_plugins.relaxation import relax

        kwargs = dict(self.relax_kwargs)
        fixed_pressure = kwargs.pop("pressure", None)
        pressures = [
            float(fixed_pressure) if fixed_pressure is not None
            else self.flow.pressure_gpa(s.properties["generation"]["condition"])
            for s in structures
        ]
        results: list = [None] * len(structures)
        for pressure in sorted(set(pressures)):
            idx = [k for k, p in enumerate(pressures) if p == pressure]
            with warnings.catch_warnings():
                # non-convergence is recorded per structure below, not only warned about
                warnings.simplefilter("ignore")
                got = relax([structures[k] for k in idx], self.energy_model(), batched=True, on_error="skip",
                            pressure=pressure, **kwargs)
            for k, res in zip(idx, got, strict=True):
                results[k] = res
        relaxed = []
        for s, res, pressure in zip(structures, results, pressures, strict=True):
            new = res.structure.copy()
            for site, f in zip(new, _wrapped(new.frac_coords), strict=True):
                site.frac_coords = f  # the same crystal, coordinates in [0, 1)
            new.properties = dict(s.properties)
            new.properties["generation"] = dict(s.properties["generation"])
            new.properties["generation"]["relaxation"] = {
                "converged": bool(res.converged),
                "steps": int(res.steps),
                "pressure_GPa": pressure,
                "energy_eV": float(res.energy),
                "energy_per_atom_eV": float(res.energy_per_atom),
                "error": res.error,
            }
            relaxed.append(new)
        return relaxed


#: a number that starts with a zero followed by a digit ("03"; not "0.5" or "10")
_LEADING_ZERO = re.compile(r"(?<![\d.])0\d")


def _check_formula(formula: str) -> None:
    """Refuse a formula with a number such as ``03``: almost always the digit zero typed
    for the letter O (pymatgen reads ``"SrTi03"`` as SrTi3)."""
    match = _LEADING_ZERO.search(formula)
    if match:
        fixed = re.sub(r"(?<![\d.])0(?=\d)", "O", formula)
        raise ValueError(f"composition {formula!r}: the number {match.group()!r} starts with the digit zero; "
                         f"did you mean the letter O ({fixed!r})?")


def _wrapped(frac: np.ndarray) -> np.ndarray:
    """Fractional coordinates moved into [0, 1) by whole lattice vectors (the same crystal)."""
    out = frac - np.floor(frac)
    out[out >= 1.0] = 0.0  # a tiny negative coordinate rounds to 1.0
    return out


def _target_elements(term: Any) -> set[str] | None:
    """The elements the model of a target term knows (``None``: any, or no model)."""
    known = getattr(getattr(term, "model", None), "elements", None)
    return None if known is None else set(known)


def _chemsys_elements(chemsys: str | Sequence[str]) -> list[str]:
    return [e.strip() for e in (chemsys.split("-") if isinstance(chemsys, str) else chemsys)]


def _support(flow, cond: int) -> set[int]:
    probs = flow.num_atoms_probs[cond]
    return {int(i) for i in torch.nonzero(probs > 0).flatten()}


__all__ = ["CrystalStructureSource", "resolve_generator"]
