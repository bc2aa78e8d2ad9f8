"""Generation metrics with the CDVAE conventions (Xie et al. 2022; also used by DiffCSP).

- validity: structural (every pair of atoms at least 0.5 Å apart, volume at least 0.1 Å³)
  and compositional (SMACT charge neutrality + Pauling electronegativity test);
- coverage COV-R / COV-P on CrystalNN (structure) and Magpie (composition) fingerprints;
- Earth mover's distances of density (g/cm³) and of the number of elements;
- uniqueness and novelty with pymatgen's ``StructureMatcher`` (default tolerances);
- CSP match rate and normalised RMS distance.

All fractions are in [0, 1]; print them as ``100 * x`` %. matminer, smact and the
structure matcher are imported inside the functions that need them
(``pip install 'crystalgnn-plugins[generation]'``). See docs/generation_metrics.md.
"""

from __future__ import annotations

import itertools
import warnings
from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from pymatgen.core import Composition, Structure

#: COV distance cutoffs (structure fingerprint, standardised composition fingerprint), CDVAE.
COV_CUTOFFS = {
    "perov_5": {"struc": 0.2, "comp": 4.0},
    "carbon_24": {"struc": 0.2, "comp": 4.0},
    "mp_20": {"struc": 0.4, "comp": 10.0},
}

_EXTRA_HINT = "pip install 'crystalgnn-plugins[generation]'"


def _require(module: str) -> Any:
    """Import an optional dependency of the generation metrics or say how to install it."""
    from importlib import import_module

    try:
        return import_module(module)
    except ImportError as exc:
        raise ImportError(f"generation metrics need {module.split('.')[0]}: {_EXTRA_HINT}") from exc


# ----------------------------------------------------------------------------- validity


def structural_validity(structure: Structure | None, cutoff: float = 0.5) -> bool:
    """CDVAE structural validity: no two atoms closer than ``cutoff`` Å (minimum image,
    i ≠ j) and a cell volume of at least 0.1 Å³. ``None`` is invalid."""
    if structure is None:
        return False
    volume = float(structure.volume)
    if not np.isfinite(volume) or volume < 0.1:
        return False
    if len(structure) < 2:
        return True
    dist = np.array(structure.distance_matrix, dtype=float)
    np.fill_diagonal(dist, np.inf)
    return bool(np.isfinite(structure.lattice.matrix).all() and dist.min() >= cutoff)


def _reduced_counts(composition: Composition) -> tuple[tuple[str, int], ...] | None:
    """((symbol, count), ...) of the reduced composition, sorted by atomic number;
    ``None`` for fractional amounts or dummy species."""
    from pymatgen.core import Element

    elements = composition.element_composition
    if any(not isinstance(el, Element) for el in elements):
        return None
    reduced, _ = elements.get_reduced_composition_and_factor()
    counts = []
    for el in sorted(reduced, key=lambda e: e.Z):
        amount = reduced[el]
        if abs(amount - round(amount)) > 1e-6:
            return None
        counts.append((el.symbol, int(round(amount))))
    return tuple(counts)


def compositional_validity(composition_or_structure: Composition | Structure | str) -> bool:
    """CDVAE ``smact_validity``: one element, or all metals (alloys), or a charge-neutral
    combination of SMACT oxidation states that passes the Pauling electronegativity test."""
    from pymatgen.core import Composition

    comp = getattr(composition_or_structure, "composition", composition_or_structure)
    counts = _reduced_counts(Composition(comp))
    return counts is not None and _smact_valid(counts)


def charge_balanced(counts: dict[str, int]) -> bool:
    """:func:`compositional_validity` of a composition given as ``{symbol: atoms}``
    (whole numbers; reduced here), without building a pymatgen ``Composition``."""
    from math import gcd

    from ase.data import atomic_numbers

    items = sorted(((s, int(c)) for s, c in counts.items() if c), key=lambda sc: atomic_numbers[sc[0]])
    if not items:
        return False
    g = 0
    for _, c in items:
        g = gcd(g, c)
    return _smact_valid(tuple((s, c // g) for s, c in items))


@lru_cache(maxsize=65536)
def _smact_valid(counts: tuple[tuple[str, int], ...]) -> bool:
    smact = _require("smact")
    screening = _require("smact.screening")
    symbols = [s for s, _ in counts]
    if len(symbols) == 1 or all(s in smact.metals for s in symbols):
        return True
    try:
        elements = smact.element_dictionary(symbols)
    except KeyError:  # an element smact has no data for
        return False
    ox_lists = [_smact14_oxidation_states(elements[s]) for s in symbols]
    electronegativities = [elements[s].pauling_eneg for s in symbols]
    stoichs = [(c,) for _, c in counts]
    threshold = max(c for _, c in counts)
    for ox_states in itertools.product(*ox_lists):
        # neutral_ratios_iter: what neutral_ratios lists (its return type differs in smact 3 and 4)
        if not any(smact.neutral_ratios_iter(ox_states, stoichs=stoichs, threshold=threshold)):
            continue
        try:
            if screening.pauling_test(ox_states, electronegativities):
                return True
        except TypeError:  # missing electronegativity: accepted, as in CDVAE
            return True
    return False


def _smact14_oxidation_states(element: Any) -> list[int]:
    """The 2014 SMACT oxidation states, the default of the smact 2.x that CDVAE used
    (smact 4 defaults to the ICSD-2024 list and keeps the old one as ``*_smact14``)."""
    states = getattr(element, "oxidation_states_smact14", element.oxidation_states)
    return list(states or [])


# ----------------------------------------------------------------------------- fingerprints


@lru_cache(maxsize=1)
def _featurizers() -> tuple[Any, Any]:
    site = _require("matminer.featurizers.site")
    comp = _require("matminer.featurizers.composition")
    return site.CrystalNNFingerprint.from_preset("ops"), comp.ElementProperty.from_preset("magpie")


def _fingerprint_one(structure: Structure) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(structure fp, composition fp) of one crystal, ``(None, None)`` if featurisation fails."""
    crystal_nn, magpie = _featurizers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            sites = [crystal_nn.featurize(structure, i) for i in range(len(structure))]
            comp = magpie.featurize(structure.composition)
        except Exception:  # any featurisation failure: the crystal is uncovered
            return None, None
    return np.mean(np.asarray(sites, dtype=float), axis=0), np.asarray(comp, dtype=float)


def _stack(rows: Sequence[np.ndarray | None]) -> np.ndarray:
    width = next((len(r) for r in rows if r is not None), 0)
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        if r is not None:
            out[i] = r
    return out


def _starmap(function, tasks: list[tuple], n_jobs: int, chunksize: int = 1) -> list:
    """``[function(*task) for task in tasks]``, in ``n_jobs`` spawned processes if ``n_jobs > 1``
    (spawned, not forked: no fork after torch/OpenMP in the parent)."""
    if n_jobs <= 1 or len(tasks) <= 1:
        return [function(*task) for task in tasks]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(min(n_jobs, len(tasks)), mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(function, *zip(*tasks), chunksize=chunksize))


def fingerprints(structures: Sequence[Structure | None], n_jobs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """CDVAE fingerprints ``(struct_fps, comp_fps)``: the site-averaged CrystalNN "ops"
    fingerprint (dimensionless, 61 columns) and the Magpie element-property statistics
    of the composition (132 columns). Rows of ``None`` entries or failed featurisations
    are NaN. ``n_jobs > 1`` featurises in that many spawned processes."""
    _featurizers()  # fail early with the install hint
    items = list(structures)
    todo = [i for i, s in enumerate(items) if s is not None]
    results: list[tuple[Any, Any]] = [(None, None)] * len(items)
    done = _starmap(_fingerprint_one, [(items[i],) for i in todo], n_jobs, max(1, len(todo) // (8 * n_jobs)))
    for i, r in zip(todo, done):
        results[i] = r
    return _stack([r[0] for r in results]), _stack([r[1] for r in results])


# ----------------------------------------------------------------------------- coverage


@lru_cache(maxsize=1)
def broad_comp_scaler() -> tuple[np.ndarray, np.ndarray]:
    """``(mean, std)`` of the Magpie composition features over a broad, synthetic,
    dataset-independent composition set (all elements H-Bi, their binaries and
    seeded ternaries; ``benchmarks/generation/make_comp_scaler.py``)."""
    import json
    from pathlib import Path

    data = json.loads((Path(__file__).parent / "data" / "magpie_scaler.json").read_text())
    return np.asarray(data["mean"], dtype=float), np.asarray(data["std"], dtype=float)


def _comp_scaler(comp_scaler, reference: np.ndarray):
    """A function standardising composition fingerprints (NaN -> 0, as CDVAE)."""
    if isinstance(comp_scaler, str):
        if comp_scaler == "broad":
            mean, std = broad_comp_scaler()
        elif comp_scaler == "reference":
            mean, std = np.nanmean(reference, 0), np.nanstd(reference, 0)
            std = np.where(std > 1e-12, std, 1.0)
        else:
            raise ValueError(f"comp_scaler {comp_scaler!r}: use 'broad', 'reference' or a (mean, std) pair")
    else:
        mean, std = (np.asarray(a, dtype=float) for a in comp_scaler)
    return lambda x: np.nan_to_num((x - mean) / std)


def fingerprint_distances(
    generated_fps: tuple[np.ndarray, np.ndarray],
    reference_fps: tuple[np.ndarray, np.ndarray],
    comp_scaler: str | tuple[np.ndarray, np.ndarray] = "broad",
) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances ``(structure, composition)``, each of shape (generated, reference),
    between ``(struct_fps, comp_fps)`` pairs as :func:`coverage` measures them (composition
    fingerprints standardised by ``comp_scaler``); rows and columns of crystals without
    fingerprints are NaN. For looking at single crystals, e.g. the references a sampler misses."""
    from scipy.spatial.distance import cdist

    g_struc, g_comp = (np.asarray(a, dtype=float) for a in generated_fps)
    r_struc, r_comp = (np.asarray(a, dtype=float) for a in reference_fps)
    g_ok, r_ok = _fingerprinted(g_struc, g_comp), _fingerprinted(r_struc, r_comp)
    d_struc = np.full((len(g_ok), len(r_ok)), np.nan)
    d_comp = np.full((len(g_ok), len(r_ok)), np.nan)
    if g_ok.any() and r_ok.any():
        scale = _comp_scaler(comp_scaler, r_comp[r_ok])
        d_struc[np.ix_(g_ok, r_ok)] = cdist(g_struc[g_ok], r_struc[r_ok])
        d_comp[np.ix_(g_ok, r_ok)] = cdist(scale(g_comp[g_ok]), scale(r_comp[r_ok]))
    return d_struc, d_comp


def coverage(
    generated_fps: tuple[np.ndarray, np.ndarray],
    reference_fps: tuple[np.ndarray, np.ndarray],
    struc_cutoff: float,
    comp_cutoff: float,
    num_generated: int | None = None,
    comp_scaler: str | tuple[np.ndarray, np.ndarray] = "broad",
) -> dict[str, float]:
    """CDVAE COV-R / COV-P from ``(struct_fps, comp_fps)`` pairs (rows with a NaN structure
    fingerprint: not fingerprinted, e.g. invalid; they count as uncovered generated crystals).

    Composition fingerprints are standardised with fixed means and standard deviations
    of a broad composition set (``comp_scaler="broad"``, :func:`broad_comp_scaler`; CDVAE
    uses fixed constants of its own training data, which make the cutoff a distance in
    units of a broad chemistry), or fitted on the reference set (``"reference"``), or a
    given ``(mean, std)``; distances are Euclidean. As in CDVAE's
    ``compute_cov``, a reference crystal is recalled if its nearest generated structure
    fingerprint is within ``struc_cutoff`` and its nearest generated composition
    fingerprint within ``comp_cutoff`` (the two nearest may differ; ``cov_recall_joint``
    asks for one generated crystal within both); precision counts generated crystals
    likewise and divides by ``num_generated`` (default: all rows of ``generated_fps``).
    ``amsd_*``/``amcd_*`` are the mean nearest structure/composition distances."""
    g_ok = _fingerprinted(*(np.asarray(a, dtype=float) for a in generated_fps))
    r_ok = _fingerprinted(*(np.asarray(a, dtype=float) for a in reference_fps))
    n_gen = len(g_ok) if num_generated is None else int(num_generated)
    out = {"num_generated": n_gen, "num_fingerprinted": int(g_ok.sum()), "num_reference": int(r_ok.sum())}
    if not g_ok.any() or not r_ok.any():
        nan = float("nan")
        return {**out, "cov_recall": 0.0, "cov_precision": 0.0, "cov_recall_joint": 0.0,
                "cov_precision_joint": 0.0, "amsd_recall": nan, "amsd_precision": nan,
                "amcd_recall": nan, "amcd_precision": nan}
    d_struc, d_comp = (d[g_ok][:, r_ok] for d in fingerprint_distances(generated_fps, reference_fps, comp_scaler))
    joint = (d_struc <= struc_cutoff) & (d_comp <= comp_cutoff)
    recalled = (d_struc.min(axis=0) <= struc_cutoff) & (d_comp.min(axis=0) <= comp_cutoff)
    precise = (d_struc.min(axis=1) <= struc_cutoff) & (d_comp.min(axis=1) <= comp_cutoff)
    return {
        **out,
        "cov_recall": float(recalled.mean()),
        "cov_precision": float(precise.sum() / n_gen),
        "cov_recall_joint": float(joint.any(axis=0).mean()),
        "cov_precision_joint": float(joint.any(axis=1).sum() / n_gen),
        "amsd_recall": float(d_struc.min(axis=0).mean()),
        "amsd_precision": float(d_struc.min(axis=1).mean()),
        "amcd_recall": float(d_comp.min(axis=0).mean()),
        "amcd_precision": float(d_comp.min(axis=1).mean()),
    }


def _fingerprinted(struc: np.ndarray, comp: np.ndarray) -> np.ndarray:
    """Rows with a finite structure fingerprint and a composition fingerprint that is not
    all NaN (Magpie has gaps for some elements; CDVAE sets those to 0 after scaling)."""
    if struc.ndim != 2 or comp.ndim != 2 or not struc.shape[1] or not comp.shape[1]:
        return np.zeros(len(struc), dtype=bool)
    return np.isfinite(struc).all(axis=1) & ~np.isnan(comp).all(axis=1)


# ----------------------------------------------------------------------------- distributions


def density_emd(generated: Sequence[Structure], reference: Sequence[Structure]) -> float:
    """Wasserstein-1 distance between the densities (g/cm³) of two sets of crystals."""
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance([s.density for s in generated], [s.density for s in reference]))


def num_elements_emd(generated: Sequence[Structure], reference: Sequence[Structure]) -> float:
    """Wasserstein-1 distance between the numbers of distinct species per crystal."""
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(_num_elements(generated), _num_elements(reference)))


def _num_elements(structures: Sequence[Structure]) -> list[int]:
    """Distinct species per crystal."""
    return [len(set(s.species)) for s in structures]


# ----------------------------------------------------------------------------- uniqueness / novelty


def _reduce(structure: Structure) -> Structure:
    """The Niggli-reduced primitive cell, exactly as ``StructureMatcher`` prepares it."""
    from pymatgen.core import Structure

    niggli = Structure.from_sites(structure).get_reduced_structure(reduction_algo="niggli")
    return niggli.get_primitive_structure()


def _buckets(structures: Sequence[Structure]) -> dict[tuple[str, int], list[tuple[int, Structure]]]:
    """Reduced structures keyed by (reduced formula, sites in the primitive cell).
    With ``attempt_supercell=False`` and ``allow_subset=False``, ``StructureMatcher``
    only matches crystals of the same reduced formula (its composition hash) and the
    same number of primitive sites, so only crystals in the same bucket are compared."""
    out: dict[tuple[str, int], list[tuple[int, Structure]]] = defaultdict(list)
    for i, s in enumerate(structures):
        r = _reduce(s)
        out[(r.composition.reduced_formula, len(r))].append((i, r))
    return out


def _subset(structures: Sequence[Structure], max_samples: int | None, seed: int) -> list[Structure]:
    items = list(structures)
    if max_samples is None or len(items) <= max_samples:
        return items
    idx = np.random.default_rng(seed).choice(len(items), size=max_samples, replace=False)
    return [items[i] for i in sorted(idx)]


def _matcher() -> Any:
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher()


def _groups_in_bucket(reduced: list[Structure]) -> int:
    """Distinct crystals among the reduced structures of one bucket (greedy grouping)."""
    matcher = _matcher()
    groups = 0
    todo = list(reduced)
    while todo:
        first, todo = todo[0], todo[1:]
        todo = [r for r in todo if not matcher.fit(first, r, skip_structure_reduction=True)]
        groups += 1
    return groups


def _novel_in_bucket(reduced: list[Structure], known: list[Structure]) -> int:
    """How many of ``reduced`` match none of ``known`` (reduced structures of one bucket)."""
    matcher = _matcher()
    return sum(not any(matcher.fit(r, t, skip_structure_reduction=True) for t in known) for r in reduced)


def uniqueness(structures: Sequence[Structure], max_samples: int | None = None, seed: int = 0,
               n_jobs: int = 1) -> float:
    """Number of distinct crystals divided by the number of samples (``StructureMatcher``
    defaults; samples grouped greedily like ``StructureMatcher.group_structures``).
    With ``max_samples``, on a random subset of that size (``seed``); ``n_jobs > 1``
    compares the buckets of (formula, primitive sites) in that many processes (same result)."""
    items = _subset(structures, max_samples, seed)
    if not items:
        return float("nan")
    buckets = sorted(([r for _, r in b] for b in _buckets(items).values()), key=len, reverse=True)
    return sum(_starmap(_groups_in_bucket, [(b,) for b in buckets], n_jobs)) / len(items)


def novelty(
    structures: Sequence[Structure],
    training: Sequence[Structure],
    max_samples: int | None = None,
    seed: int = 0,
    n_jobs: int = 1,
) -> float:
    """Fraction of samples that match no training crystal (``StructureMatcher`` defaults,
    which rescale volumes). With ``max_samples``, on a random subset of the samples;
    ``n_jobs > 1`` compares chunks of samples in that many processes (same result)."""
    items = _subset(structures, max_samples, seed)
    if not items:
        return float("nan")
    train = _buckets(training)
    tasks = []
    for key, bucket in _buckets(items).items():
        known = [r for _, r in train.get(key, [])]
        reduced = [r for _, r in bucket]
        step = max(1, -(-len(reduced) // (4 * n_jobs))) if known else len(reduced)
        tasks += [(reduced[lo : lo + step], known) for lo in range(0, len(reduced), step)]
    return sum(_starmap(_novel_in_bucket, tasks, n_jobs)) / len(items)


# ----------------------------------------------------------------------------- structure prediction


def csp_match(
    predictions: Sequence[Structure | None],
    references: Sequence[Structure],
    stol: float = 0.5,
    ltol: float = 0.3,
    angle_tol: float = 10.0,
) -> dict[str, float]:
    """CDVAE/DiffCSP structure-prediction match: one prediction per reference; ``None``
    or structurally invalid predictions do not match. ``match_rate`` is the matched
    fraction (0..1), ``rmse`` the mean RMS displacement of matched pairs normalised by
    ``(V/N)^(1/3)`` (``StructureMatcher.get_rms_dist``), NaN if nothing matched."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    matcher = StructureMatcher(stol=stol, ltol=ltol, angle_tol=angle_tol)
    rms = []
    for pred, ref in zip(predictions, references):
        if not structural_validity(pred):
            continue
        try:
            dist = matcher.get_rms_dist(pred, ref)
        except Exception:  # a failed comparison is no match, as in CDVAE
            continue
        if dist is not None:
            rms.append(dist[0])
    n = len(references)
    return {
        "match_rate": len(rms) / n if n else float("nan"),
        "rmse": float(np.mean(rms)) if rms else float("nan"),
        "num": n,
        "num_matched": len(rms),
    }


# ----------------------------------------------------------------------------- all together


def _emd_spread(valid: Sequence[Structure], reference: Sequence[Structure], emd_samples: int, seed: int,
                draws: int = 50) -> dict[str, float]:
    """How much the CDVAE protocol (EMDs of one random subset of ``emd_samples`` valid
    samples) depends on the subset: mean and standard deviation over ``draws`` seeded
    subsets, and the EMDs of all valid samples (``*_all_valid``). On 10,000 perov_5
    samples one subset's density EMD ranges from 0.05 to 0.20 (sd 0.03)."""
    from scipy.stats import wasserstein_distance

    if not valid:
        return {}
    dens = np.array([s.density for s in valid])
    nel = np.array(_num_elements(valid))
    ref_dens = [s.density for s in reference]
    ref_nel = _num_elements(reference)
    out = {"density_emd_all_valid": float(wasserstein_distance(dens, ref_dens)),
           "num_elements_emd_all_valid": float(wasserstein_distance(nel, ref_nel))}
    if len(valid) > emd_samples:
        rng = np.random.default_rng(seed)
        picks = [rng.choice(len(valid), emd_samples, replace=False) for _ in range(draws)]
        d = [wasserstein_distance(dens[k], ref_dens) for k in picks]
        e = [wasserstein_distance(nel[k], ref_nel) for k in picks]
        out.update(density_emd_subset_mean=float(np.mean(d)), density_emd_subset_sd=float(np.std(d)),
                   num_elements_emd_subset_mean=float(np.mean(e)), num_elements_emd_subset_sd=float(np.std(e)),
                   emd_subset_draws=draws)
    return out


def evaluate_generation(
    generated: Sequence[Structure | None],
    reference: Sequence[Structure],
    *,
    training: Sequence[Structure] | None = None,
    dataset: str = "perov_5",
    n_jobs: int = 1,
    emd_samples: int = 1000,
    novelty_samples: int | None = None,
    uniqueness_samples: int | None = None,
    seed: int = 0,
    reference_fps: tuple[np.ndarray, np.ndarray] | None = None,
    generated_fps: tuple[np.ndarray, np.ndarray] | None = None,
    comp_scaler: str | tuple[np.ndarray, np.ndarray] = "broad",
) -> dict[str, Any]:
    """All CDVAE generation metrics of ``generated`` against ``reference`` (fractions 0..1).

    Validity fractions are over all samples (``None`` counts as invalid); COV uses the
    ``COV_CUTOFFS`` of ``dataset`` over all samples with fingerprints of the valid ones
    only; the EMDs use a random subset of ``emd_samples`` valid samples (all valid ones if
    fewer) against all reference crystals, as CDVAE does, with the spread of that figure
    over 50 subsets and the EMDs of all valid samples beside them (:func:`_emd_spread`);
    uniqueness and novelty (against ``training``) are over the valid samples, optionally
    on seeded subsets; ``n_jobs`` processes featurise and match. Pass ``reference_fps``
    (from ``fingerprints(reference)``) to reuse them across evaluations, and
    ``generated_fps`` (``fingerprints`` of ``generated``, rows of invalid samples are
    ignored) when they were computed before, e.g. in resumable chunks."""
    if dataset not in COV_CUTOFFS:
        raise ValueError(f"unknown dataset {dataset!r}; COV cutoffs exist for {sorted(COV_CUTOFFS)}")
    samples = list(generated)
    n = len(samples)
    struct_ok = np.array([structural_validity(s) for s in samples], dtype=bool)
    comp_ok = np.array([s is not None and compositional_validity(s) for s in samples], dtype=bool)
    valid_mask = struct_ok & comp_ok
    valid = [s for s, ok in zip(samples, valid_mask) if ok]
    out: dict[str, Any] = {
        "num_samples": n,
        "num_valid": len(valid),
        "struct_validity": float(struct_ok.mean()) if n else float("nan"),
        "comp_validity": float(comp_ok.mean()) if n else float("nan"),
        "validity": float(valid_mask.mean()) if n else float("nan"),
    }
    if reference_fps is None:
        reference_fps = fingerprints(reference, n_jobs=n_jobs)
    if generated_fps is None:
        gen_fps = fingerprints([s if ok else None for s, ok in zip(samples, valid_mask)], n_jobs=n_jobs)
    else:
        gen_fps = tuple(np.where(valid_mask[:, None], np.asarray(a, dtype=float), np.nan) for a in generated_fps)
        if any(len(a) != n for a in gen_fps):
            raise ValueError(f"generated_fps have {len(gen_fps[0])} rows for {n} samples")
    cut = COV_CUTOFFS[dataset]
    out.update(coverage(gen_fps, reference_fps, cut["struc"], cut["comp"], num_generated=n, comp_scaler=comp_scaler))
    emd_set = _subset(valid, emd_samples, seed)
    out["emd_num_samples"] = len(emd_set)
    out["density_emd"] = density_emd(emd_set, reference) if emd_set else float("nan")
    out["num_elements_emd"] = num_elements_emd(emd_set, reference) if emd_set else float("nan")
    out.update(_emd_spread(valid, reference, emd_samples, seed))
    out["uniqueness"] = uniqueness(valid, uniqueness_samples, seed, n_jobs) if valid else float("nan")
    if training is not None:
        out["novelty"] = novelty(valid, training, novelty_samples, seed, n_jobs) if valid else float("nan")
    return out
