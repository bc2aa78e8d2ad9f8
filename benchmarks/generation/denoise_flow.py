"""How well the generator's flow finishes held-out crystals from part way along its paths.

For held-out crystals of one dataset (fixed split, ``common.load_split``), each
crystal is put on a training path at time ``t0`` (a fresh uniform prior point
per atom, atoms paired with the crystal's by least periodic distance as in
``CrystalFlow.loss(ot_coupling=True)``; the lattice on its straight path from a
prior draw) and the flow alone is integrated from ``t0`` to 1 (``--steps``
Euler steps, shrinking towards 1 like the sampler's ``time_power=2``). The
result is compared with the crystal it started from by the CDVAE structure
fingerprint (site-averaged CrystalNN, ``metrics.generation.fingerprints``):

- ``own``: fraction within 0.2 of the crystal it came from (the COV cutoff);
- ``any``: fraction within 0.2 of any held-out crystal (a COV-P at that start);
- ``median_distance`` to its own crystal, and structural validity.

``--path-lengths`` also prints the mean squared length of the coordinate paths
the flow is trained on, for the three couplings of ``CrystalFlow.loss``.
``t0 = 0`` is plain sampling of the test crystals' atom counts; ``t0`` near 1
tests only the last steps. ``--true-lattice`` keeps the crystal's own lattice
throughout (the flow moves the atoms only), which separates coordinate errors
from lattice errors. A wrapped-normal flow is probed from ``t0 = 0`` (its own
predictor-corrector sampler, ``--langevin-step``): ``--true-lattice`` then moves the
lattice along its training path to the crystal's own, ``--true-coords`` the
coordinates along theirs, and ``--loss-by-time`` compares its noise prediction with
the training target (and prints the error of the implied clean positions in Å).
Seconds per model on one thread for 120 carbon_24 crystals
and five start times; used as a fast proxy while changing the generator::

    OMP_NUM_THREADS=1 python benchmarks/generation/denoise_flow.py \\
        --csv ../shared/data/carbon_24/dev.csv --dataset carbon_24 \\
        --t0 0.95,0.9,0.8,0.6 [--true-lattice] [--model DIR] [--out report.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_split  # noqa: E402

from crystalgnn_plugins._atomic import atomic_write_json  # noqa: E402
from crystalgnn_plugins.generation.flow import ot_alignment, ot_assignment, wrapped_noise_mean  # noqa: E402
from crystalgnn_plugins.generation.lattice import (  # noqa: E402
    lattice_to_log,
    log_to_lattice,
    random_symmetric,
    wrap,
)
from crystalgnn_plugins.generation.network import _scatter_mean  # noqa: E402
from crystalgnn_plugins.generation.sampling import sample_flow  # noqa: E402
from crystalgnn_plugins.generation.source import resolve_generator  # noqa: E402
from crystalgnn_plugins.metrics import generation as gm  # noqa: E402


def _structures(flow, species, frac, lattice, num_atoms) -> list:
    """Raw crystals (atoms stored crystal by crystal) as pymatgen ``Structure``s."""
    from pymatgen.core import Lattice, Structure

    cells, frac, starts = lattice.numpy(), frac.numpy(), np.cumsum([0] + num_atoms.tolist())
    symbols = [flow.elements[i] for i in species.tolist()]
    return [Structure(Lattice(cells[k]), symbols[starts[k] : starts[k + 1]], frac[starts[k] : starts[k + 1]])
            for k in range(len(num_atoms))]


def finish_from(flow, structures, dataset: str, t0: float, steps: int, true_lattice: bool, seed: int,
                time_power: float = 1.0, langevin_step: float = 3e-5, true_coords: bool = False) -> list:
    """The crystals put on their paths at ``t0`` and integrated to 1 by the flow (no guidance).
    A wrapped-normal flow is sampled from ``t0 = 0`` only (its own sampler, the crystals'
    species and atom counts, ``time_power`` and ``langevin_step``); ``true_lattice`` then
    moves the lattice along its training path from a prior draw to the crystal's own,
    ``true_coords`` the coordinates along theirs (one noise draw, ``f_1 + σ(t) ε``)."""
    batch = flow.batch_from_structures(structures, dataset)  # Niggli cells, as in training
    gen = torch.Generator().manual_seed(seed)
    num_atoms, condition, species = batch.num_atoms, batch.condition, batch.species
    b = len(structures)
    if flow.coord_path != "geodesic":
        if t0 != 0:
            raise ValueError(f"a {flow.coord_path} flow is probed from t0 = 0 only")
        paths = {}
        if true_lattice:
            s1 = lattice_to_log(batch.lattice)
            mean, std = flow.lattice_prior(condition, num_atoms)
            s0 = mean + std.view(-1, 1, 1) * random_symmetric((b,), generator=gen)
            paths["lattice_path"] = lambda t: s1 if t >= 1 else (1 - t) * s0 + t * s1
        if true_coords:
            eps = torch.randn(batch.frac.shape, generator=gen)
            paths["frac_path"] = lambda t: torch.remainder(batch.frac + flow.coord_sigma(torch.tensor(t)) * eps, 1.0)
        out = sample_flow(flow, num_atoms, condition, species=species, steps=steps, time_power=time_power,
                          langevin_step=langevin_step, generator=gen, **paths)
        return _structures(flow, species, out.frac, out.lattice, num_atoms)
    if true_coords:
        raise ValueError("--true-coords applies to wrapped-normal flows")
    atom_batch = batch.batch
    f1, lattice1 = batch.frac, batch.lattice
    f0 = torch.rand(f1.shape, generator=gen)
    order = ot_assignment(f0, f1, lattice1, num_atoms)
    f1, species = f1[order], species[order]
    a = F.one_hot(species, len(flow.elements)).float()
    frac = torch.remainder(f0 + t0 * wrap(f1 - f0), 1.0)
    s1 = lattice_to_log(lattice1)
    mean, std = flow.lattice_prior(condition, num_atoms)
    s0 = mean + std.view(-1, 1, 1) * random_symmetric((b,), generator=gen)
    log_l = s1.clone() if true_lattice else (1 - t0) * s0 + t0 * s1
    times = [1 - (1 - t0) * (1 - k / steps) ** 2 for k in range(steps + 1)]
    with torch.no_grad():
        for k in range(steps):
            t, dt = times[k], times[k + 1] - times[k]
            out = flow.velocity(a, frac, log_l, num_atoms, torch.full((b,), t), condition)
            v = out["frac_velocity"]
            v = v - _scatter_mean(v, atom_batch, b)[atom_batch]
            frac = torch.remainder(frac + dt * v, 1.0)
            if not true_lattice:
                log_l = log_l + dt * out["lattice_action"] * std.view(-1, 1, 1)
    return _structures(flow, species, frac, log_to_lattice(log_l), num_atoms)


def path_lengths(flow, structures, dataset: str, seed: int) -> dict[str, float]:
    """Mean squared length (Å² per atom) of the centred training paths of the coordinates
    from one uniform prior draw to the crystals (Niggli cells): atoms in their stored
    order, paired by least distance (``ot_coupling``), and paired with the rigid
    translation (``ot_translation``)."""
    batch = flow.batch_from_structures(structures, dataset)
    f1, lattice, num_atoms, crystal = batch.frac, batch.lattice, batch.num_atoms, batch.batch
    f0 = torch.rand(f1.shape, generator=torch.Generator().manual_seed(seed))

    def mean_square(data: torch.Tensor) -> float:
        d = wrap(data - f0)
        d = d - _scatter_mean(d, crystal, len(num_atoms))[crystal]
        return float((torch.einsum("na,nab->nb", d, lattice[crystal]) ** 2).sum(-1).mean())

    order, shift = ot_alignment(f0, f1, lattice, num_atoms)
    return {
        "stored order": mean_square(f1),
        "paired": mean_square(f1[ot_assignment(f0, f1, lattice, num_atoms)]),
        "paired and translated": mean_square(torch.remainder(f1[order] + shift[crystal], 1.0)),
    }


def loss_by_time(flow, structures, dataset: str, times: list[float], translate: bool, seed: int,
                 draws: int = 8) -> tuple[dict[str, float], dict[str, float]]:
    """The network's coordinate error relative to predicting no motion,
    ``E|v - u|^2 / E|u|^2`` (centred, fractional), at fixed times on the training
    paths (the crystals' own lattices; atoms in their stored order, or paired and
    translated as in ``CrystalFlow.loss(ot_translation=True)``), over ``draws`` prior draws.
    A wrapped-normal flow's noise prediction is compared with its training target, and
    the median error (Å) of the clean positions it implies (``x̂_1 = f_t - σ ε̂``) is
    returned too (second dict, empty for a geodesic flow), both keyed by time."""
    batch = flow.batch_from_structures(structures, dataset)
    b, crystal = len(batch.num_atoms), batch.batch
    a = F.one_hot(batch.species, len(flow.elements)).float()
    log_l = lattice_to_log(batch.lattice)
    gen = torch.Generator().manual_seed(seed)

    def centred(x: torch.Tensor) -> torch.Tensor:
        return x - _scatter_mean(x, crystal, b)[crystal]

    out, clean_error_a = {}, {}
    for t in times:
        err = base = 0.0
        if flow.coord_path == "wrapped_normal":
            sigma = float(flow.coord_sigma(torch.tensor(t, dtype=torch.float64)))
            errors_a = []
            for _ in range(draws):
                f_t = torch.remainder(batch.frac + sigma * torch.randn(batch.frac.shape, generator=gen), 1.0)
                target = centred(wrapped_noise_mean(f_t - batch.frac, sigma))
                with torch.no_grad():
                    eps = centred(flow.velocity(a, f_t, log_l, batch.num_atoms, torch.full((b,), t),
                                                batch.condition)["frac_velocity"])
                err += float(((eps - target) ** 2).sum(-1).mean())
                base += float((target**2).sum(-1).mean())
                errors_a.append(torch.einsum("na,nab->nb", sigma * (eps - target), batch.lattice[crystal]).norm(dim=-1))
            out[f"{t:g}"] = err / base
            clean_error_a[f"{t:g}"] = float(torch.cat(errors_a).median())
            continue
        for _ in range(draws):
            f0, f1 = torch.rand(batch.frac.shape, generator=gen), batch.frac
            if translate:
                order, shift = ot_alignment(f0, f1, batch.lattice, batch.num_atoms)
                f1 = torch.remainder(f1[order] + shift[crystal], 1.0)  # carbon: species unchanged by order
            u = wrap(f1 - f0)
            with torch.no_grad():
                v = flow.velocity(a if not translate else a[order], torch.remainder(f0 + t * u, 1.0), log_l,
                                  batch.num_atoms, torch.full((b,), t), batch.condition)["frac_velocity"]
            err += float(((centred(v) - centred(u)) ** 2).sum(-1).mean())
            base += float((centred(u) ** 2).sum(-1).mean())
        out[f"{t:g}"] = err / base
    return out, clean_error_a


def _median_bond(structures) -> float:
    """Median over all atoms of the distance (Å) to the nearest other atom, periodic
    images included (an atom's own images: the shortest vector of the reduced lattice)."""
    nearest = []
    for s in structures:
        shortest = float(np.linalg.norm(s.lattice.get_lll_reduced_lattice().matrix, axis=1).min())
        d = s.distance_matrix + np.diag(np.full(len(s), np.inf))
        nearest.extend(np.minimum(d.min(1), shortest))
    return float(np.median(nearest))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", required=True, help="the dataset's dev.csv")
    ap.add_argument("--dataset", default="carbon_24", help="perov_5 or carbon_24 (the condition)")
    ap.add_argument("--model", default=None, help="generator (default: the shipped one)")
    ap.add_argument("--split", default="test", choices=("train", "val", "test"))
    ap.add_argument("--num", type=int, default=120, help="crystals of the split used (the first ones)")
    ap.add_argument("--draws", type=int, default=1,
                    help="prior draws per crystal (each finished crystal is scored against its own)")
    ap.add_argument("--t0", default="0.95,0.9,0.8,0.6", help="comma-separated start times")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--true-lattice", action="store_true",
                    help="keep each crystal's own lattice (wrapped-normal flows: move it along its training path)")
    ap.add_argument("--true-coords", action="store_true",
                    help="wrapped-normal flows: move the coordinates along their training path (one noise "
                         "draw), only the lattice is integrated")
    ap.add_argument("--time-power", type=float, default=1.0,
                    help="step times of a wrapped-normal flow's sampler (geodesic flows: always 2)")
    ap.add_argument("--langevin-step", type=float, default=3e-5,
                    help="corrector step of a wrapped-normal flow's sampler (0: predictor only)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--path-lengths", action="store_true",
                    help="also print the mean squared training path length per coupling (Å² per atom)")
    ap.add_argument("--loss-by-time", default=None, metavar="T1,T2,...",
                    help="also print the coordinate error relative to no motion at these times")
    ap.add_argument("--translate", action="store_true",
                    help="with --loss-by-time: paths of the paired and translated atoms (--ot-translation)")
    ap.add_argument("--out", default=None, help="write the results as JSON here too")
    args = ap.parse_args()
    if args.draws < 1:
        ap.error(f"--draws must be at least 1, got {args.draws}")
    torch.set_num_threads(args.threads)
    from scipy.spatial.distance import cdist

    flow = resolve_generator(args.model).eval()
    distinct = load_split(args.csv, args.dataset)[args.split][: args.num]
    reference_distinct = gm.fingerprints(distinct)[0]
    crystals = distinct * args.draws
    reference = np.concatenate([reference_distinct] * args.draws)
    results: dict = {}
    if args.path_lengths:
        results["path_lengths_A2"] = paths = path_lengths(flow, crystals, args.dataset, args.seed)
        print("mean squared path (Å² per atom): " + ", ".join(f"{k} {v:.2f}" for k, v in paths.items()), flush=True)
    if args.loss_by_time:
        times = [float(x) for x in args.loss_by_time.split(",")]
        ratios, clean_error_a = loss_by_time(flow, distinct, args.dataset, times, args.translate, args.seed)
        results["loss_by_time"] = ratios
        print("coordinate error / no motion: " + ", ".join(f"t {k} {v:.2f}" for k, v in ratios.items()), flush=True)
        if clean_error_a:
            results["clean_position_error_A"] = clean_error_a
            print("median error of the implied clean positions (Å): " + ", ".join(
                f"t {k} {v:.3f}" for k, v in clean_error_a.items()), flush=True)
    for t0 in (float(x) for x in args.t0.split(",") if x):
        if not 0 <= t0 < 1:
            ap.error(f"start times must be in [0, 1), got {t0}")
        finished = finish_from(flow, crystals, args.dataset, t0, args.steps, args.true_lattice, args.seed,
                               args.time_power, args.langevin_step, args.true_coords)
        fps = gm.fingerprints(finished)[0]
        ok = np.isfinite(fps).all(1)
        own = np.full(len(fps), np.inf)
        own[ok] = np.linalg.norm(fps[ok] - reference[ok], axis=1)
        nearest = np.full(len(fps), np.inf)
        nearest[ok] = cdist(fps[ok], reference_distinct[np.isfinite(reference_distinct).all(1)]).min(1)
        results[f"{t0:g}"] = row = {
            "own": float(np.mean(own <= 0.2)), "any": float(np.mean(nearest <= 0.2)),
            "median_distance": float(np.median(own)),
            "median_bond_A": _median_bond(finished), "median_bond_own_A": _median_bond(crystals),
            "median_density": float(np.median([x.density for x in finished])),
            "median_density_own": float(np.median([x.density for x in crystals])),
            "valid": float(np.mean([gm.structural_validity(s) for s in finished])),
        }
        print(f"t0 = {t0:g}: own {row['own']:.2f}  any {row['any']:.2f}  median distance "
              f"{row['median_distance']:.3f}  valid {row['valid']:.2f}  nearest neighbour {row['median_bond_A']:.2f} Å "
              f"(own {row['median_bond_own_A']:.2f} Å)  density {row['median_density']:.2f} g/cm³ "
              f"(own {row['median_density_own']:.2f})", flush=True)
    if args.out:
        atomic_write_json(args.out, {"args": vars(args), "results": results})


if __name__ == "__main__":
    main()
