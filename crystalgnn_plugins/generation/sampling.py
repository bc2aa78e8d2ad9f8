"""Integrate a :class:`CrystalFlow` from the prior to crystals, with guidance."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from crystalgnn_plugins.generation.flow import CrystalFlow
from crystalgnn_plugins.generation.guidance import GuidanceContext
from crystalgnn_plugins.generation.lattice import log_to_lattice, random_symmetric
from crystalgnn_plugins.generation.network import _scatter_mean


@dataclass
class SampledCrystals:
    """Raw samples: species indices into the vocabulary ``(N,)``, fractional
    coordinates ``(N, 3)`` in [0, 1), lattice rows ``(B, 3, 3)`` Å, atoms per crystal."""

    species: torch.Tensor
    frac: torch.Tensor
    lattice: torch.Tensor
    num_atoms: torch.Tensor


def _clip_rows(x: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Scale each row (atom or crystal) of ``x`` down to a norm of at most ``max_norm``."""
    norm = x.flatten(1).norm(dim=-1).clamp_min(1e-12)
    scale = (max_norm / norm).clamp(max=1.0)
    return x * scale.view(-1, *([1] * (x.dim() - 1)))


def sample_flow(
    flow: CrystalFlow,
    num_atoms: torch.Tensor,
    condition: torch.Tensor,
    *,
    species: torch.Tensor | None = None,
    allowed: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    steps: int = 50,
    guidance: Sequence = (),
    guidance_start: float = 0.5,
    guidance_every: int = 1,
    coord_speedup: float = 0.0,
    max_guidance: float = 1.0,
    time_power: float = 1.0,
    projection_steps: int = 0,
    langevin_step: float = 3e-5,
    generator: torch.Generator | None = None,
    lattice_path: Callable[[float], torch.Tensor] | None = None,
    frac_path: Callable[[float], torch.Tensor] | None = None,
) -> SampledCrystals:
    """Euler integration of the flow for a batch of crystals.

    A flow with wrapped-normal coordinates (``flow.coord_path``) moves its atoms by
    predictor-corrector steps instead (as DiffCSP): before each step but the first, a
    Langevin step with the score ``-ε/σ`` and step size ``langevin_step (σ/σ_min)²``
    (the corrector), then an ancestral step from ``σ(t)`` to the next ``σ`` (the
    predictor); both add noise from ``generator``. Lattice and species follow the
    flow as for the geodesic path.

    Args:
        num_atoms: (B,) atoms per crystal.
        condition: (B,) dataset index.
        species: (N,) fixed species (composition-given mode), or ``None`` to
            generate them.
        allowed: (B, K) bool, species each crystal may use (e.g. a chemical system).
        z: (B, latent_dim) latent codes, or ``None`` for the unconditional flow.
        steps: integration steps.
        guidance: terms (see :mod:`.guidance`) applied from ``t >= guidance_start``;
            a term with ``guides_lattice = False`` moves only atoms and species.
        guidance_every: evaluate the guidance terms on every ``k``-th guided step only
            and reuse their last gradients in between (fewer energy-model evaluations;
            1 = every guided step).
        coord_speedup: velocity of the coordinates multiplied by ``1 + s t``
            (inference anti-annealing as in FlowMM; 0 = plain flow; geodesic path only).
        max_guidance: largest guidance velocity per atom (fractional units per unit
            time) and per lattice (log-lattice norm per unit time).
        projection_steps: after the last step, at most this many descent steps of the
            guidance terms that constrain geometry (``projects = True``, e.g. the
            repulsion term) on the final atoms (each atom moves at most
            ``max_guidance / steps`` per step, fractional): pairs that the last, large
            steps pushed together are separated; crystals without such pairs are
            unchanged (the terms are zero there).
        langevin_step: corrector step of wrapped-normal coordinates (0: predictor only).
        generator: random generator for the prior and the sampler's noise (reproducible
            sampling).
        lattice_path, frac_path: diagnostics: functions of the time giving the log-lattice
            ``S`` (B, 3, 3) or the fractional coordinates (N, 3) instead of integrating
            them (e.g. a crystal's own training path), so that the errors of the
            lattice and of the coordinates can be told apart.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if time_power <= 0:
        raise ValueError(f"time_power must be positive, got {time_power}")
    wrapped_normal = flow.coord_path == "wrapped_normal"
    if wrapped_normal and coord_speedup:
        raise ValueError("coord_speedup applies to the geodesic coordinate path; this flow's coordinates "
                         "are wrapped-normal (their sharpness is set by langevin_step)")
    if langevin_step < 0:
        raise ValueError(f"langevin_step must be >= 0, got {langevin_step}")
    if guidance_every < 1:
        raise ValueError(f"guidance_every must be at least 1, got {guidance_every}")
    device = flow.lattice_mean.device
    dtype = flow.lattice_mean.dtype
    num_atoms = num_atoms.to(device)
    condition = condition.to(device)
    b, n = len(num_atoms), int(num_atoms.sum())
    k = len(flow.elements)
    atom_batch = torch.repeat_interleave(torch.arange(b, device=device), num_atoms)

    frac = torch.rand((n, 3), generator=generator, dtype=dtype).to(device)
    mean, std = flow.lattice_prior(condition, num_atoms)
    log_l = mean + std.view(-1, 1, 1) * random_symmetric((b,), generator=generator, dtype=dtype).to(device)
    fixed = species is not None
    if fixed:
        a = F.one_hot(species.to(device), k).to(dtype)
    else:
        a = torch.randn((n, k), generator=generator, dtype=dtype).to(device)
    mask = allowed.to(device)[atom_batch] if allowed is not None else None
    ctx = GuidanceContext.of(flow, num_atoms, condition)

    times = [1.0 - (1.0 - k / steps) ** time_power for k in range(steps + 1)]

    def noise() -> torch.Tensor:
        return torch.randn((n, 3), generator=generator, dtype=dtype).to(device)

    def centred(x: torch.Tensor) -> torch.Tensor:
        return x - _scatter_mean(x, atom_batch, b)[atom_batch]

    if lattice_path is not None:
        log_l = lattice_path(times[0]).to(device, dtype)
    logits = None
    guided_steps = 0  # guided steps so far (guidance_every)
    grads: list[torch.Tensor] = []
    for step in range(steps):
        t, dt = times[step], times[step + 1] - times[step]
        if frac_path is not None:
            frac = frac_path(t).to(device, dtype)
        tt = torch.full((b,), t, device=device, dtype=dtype)
        sigma = flow.coord_sigma(torch.tensor(t, dtype=torch.float64)).item() if wrapped_normal else 0.0
        if wrapped_normal and langevin_step > 0 and step > 0 and frac_path is None:
            with torch.no_grad():
                eps = centred(flow.velocity(a, frac, log_l, num_atoms, tt, condition, z)["frac_velocity"])
            size = langevin_step * (sigma / flow.sigma_min) ** 2
            frac = torch.remainder(frac - size * eps / sigma + (2 * size) ** 0.5 * noise(), 1.0)
        with torch.no_grad():
            out = flow.velocity(a, frac, log_l, num_atoms, tt, condition, z)
        v_f = centred(out["frac_velocity"])
        v_l = out["lattice_action"] * std.view(-1, 1, 1)
        logits = out["species_logits"]
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        guided = bool(guidance) and t >= guidance_start
        if guided and guided_steps % guidance_every == 0:
            with torch.enable_grad():
                f_hat = (frac - sigma * v_f if wrapped_normal else frac + (1 - t) * v_f).detach().requires_grad_(True)
                l_hat = (log_l + (1 - t) * v_l).detach().requires_grad_(True)
                p_hat = (a if fixed else F.softmax(logits, -1)).detach().requires_grad_(not fixed)
                lattice_hat = log_to_lattice(l_hat)
                # an atoms-only term sees a detached lattice: no lattice gradient from it
                total = sum(
                    term.weight * term(p_hat, f_hat, lattice_hat if getattr(term, "guides_lattice", True)
                                       else lattice_hat.detach(), ctx).sum()
                    for term in guidance
                )
                inputs = [f_hat, l_hat] + ([p_hat] if not fixed else [])
                grads = torch.autograd.grad(total, inputs, allow_unused=True)
            grads = [torch.zeros_like(x) if g is None else torch.nan_to_num(g) for x, g in zip(inputs, grads)]
        if guided:
            guided_steps += 1
            # a guided step moves an atom by at most max_guidance * dt (fractional) and
            # the log-lattice by at most as much: an energy model evaluated on a crystal
            # with atoms on top of each other can return huge gradients
            guide_f = _clip_rows(grads[0], max_guidance)
            if not wrapped_normal:
                v_f = v_f - guide_f
            v_l = v_l - _clip_rows(0.5 * (grads[1] + grads[1].transpose(-1, -2)), max_guidance)
            if not fixed:
                logits = logits - grads[2]
        if wrapped_normal:
            # ancestral step from sigma to the next level (VE SDE), noise-free into the end
            nxt = flow.coord_sigma(torch.tensor(times[step + 1], dtype=torch.float64)).item()
            var = sigma**2 - nxt**2
            frac = frac - var / sigma * v_f
            if step < steps - 1:
                frac = frac + (nxt**2 * var / sigma**2) ** 0.5 * noise()
            if guided:
                frac = frac - dt * guide_f
            frac = torch.remainder(frac, 1.0)
        else:
            frac = torch.remainder(frac + dt * (1 + coord_speedup * t) * v_f, 1.0)
        log_l = log_l + dt * v_l if lattice_path is None else lattice_path(times[step + 1]).to(device, dtype)
        if not fixed:
            a = a + dt * (F.softmax(logits, -1) - a) / (1 - t)
    if frac_path is not None:
        frac = frac_path(times[-1]).to(device, dtype)
    if fixed:
        final_species = species.to(device)
    else:
        final_species = (a.masked_fill(~mask, float("-inf")) if mask is not None else a).argmax(-1)
    projecting = [term for term in guidance if getattr(term, "projects", False)]
    if projection_steps > 0 and projecting:
        frac = _project(projecting, frac, log_to_lattice(log_l), F.one_hot(final_species, k).to(dtype), ctx,
                        projection_steps, max_guidance / steps, atom_batch, b)
    return SampledCrystals(final_species, torch.remainder(frac, 1.0), log_to_lattice(log_l), num_atoms)


def _project(terms, frac, lattice, probs, ctx, num_steps: int, max_step: float, atom_batch, b: int) -> torch.Tensor:
    """Descent of the constraint ``terms`` on the fractional coordinates only
    (lattice and species fixed), each atom by at most ``max_step`` per step."""
    for _ in range(num_steps):
        with torch.enable_grad():
            f = frac.detach().requires_grad_(True)
            total = sum(term.weight * term(probs, f, lattice, ctx).sum() for term in terms)
            (grad,) = torch.autograd.grad(total, [f], allow_unused=True)
        if grad is None:
            break
        grad = torch.nan_to_num(grad)
        if not bool(grad.abs().amax() > 0):
            break
        grad = grad - _scatter_mean(grad, atom_batch, b)[atom_batch]  # no drift of the whole crystal
        frac = torch.remainder(frac - _clip_rows(grad, 1.0) * max_step, 1.0)
    return frac
