"""Sample the generator and score it against our own held-out split (CDVAE conventions).

For perov_5 and carbon_24 (fixed 80/10/10 split, seed 0, ``common.load_split``)
and for each sampling configuration (``plain``: no guidance; ``physics``:
repulsion + learned-energy guidance, the default; ``relaxed``: the physics samples
relaxed with the energy model at their condition's pressure, what
``get_structures(relax=True)`` returns; ``settled``: the physics samples after
``--settle-steps`` FIRE steps on the atoms at fixed cell, ``get_structures(relax=True)``
with ``relax_kwargs={"relax_cell": False, "steps": N, "pressure": 0}``) it writes to
``--out`` and prints:

- validity (structural, compositional), COV-R / COV-P, density and #elements
  EMD against the test split (section ``memorisation``: the training split scored
  as if it were generated, the yardstick), uniqueness among the valid samples and novelty
  against the training split (``StructureMatcher`` defaults; on seeded subsets
  of ``--match-samples`` valid samples, since matching 10,000 carbon samples
  against each other and the training set costs hours);
- physics: relaxation of ``--relax-n`` samples with the energy model (batched
  FIRE + Fréchet cell filter, fmax 0.05 eV/Å, 500 steps): fraction converged and
  the median per-structure mean atomic displacement (Å), per configuration;
- CSP on perov_5 (one sample per test formula, composition given): match rate
  and normalised RMSE (StructureMatcher stol 0.5, ltol 0.3, angle_tol 10);
- targeting (with ``--property-model``, perov_5): fraction of samples whose
  predicted ``heat_ref`` is below ``--threshold`` (0.439 eV, the dataset's 5th
  percentile) without and with property guidance;
- speed (``--sections speed``): valid structures per second of ``get_structures``
  with ``--threads`` torch threads, timed on ``--speed-n`` samples; the load
  average is recorded beside it (run it on an otherwise idle machine).

Without sampler options every dataset is sampled with ``CrystalStructureSource``'s
defaults for it. ``--coord-speedup s`` (coordinate velocity multiplied by ``1 + s t``,
inference anti-annealing) and ``--time-power p`` (step times ``1 - (1 - k/steps)^p``)
set them for every dataset; the results are keyed ``<config>_steps50_speedup3_pow2`` and so on.

Every stage is cached under ``--out`` (samples, fingerprints in chunks, relaxations,
CSP predictions), so a killed run continues where it stopped when started again
with the same arguments (relaxation and targeting are computed again when their
settings change); ``--fresh`` deletes the cache first.

    OMP_NUM_THREADS=2 python benchmarks/generation/evaluate_generator.py \\
        --perov ../shared/data/perov_5/dev.csv --carbon ../shared/data/carbon_24/dev.csv \\
        --model /work/runs/generator/model --energy-model default \\
        --property-model /work/runs/prop_heat_ref/model --n 10000 --out /work/runs/gen_eval
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_split  # noqa: E402

from crystalgnn_plugins._atomic import atomic_write, atomic_write_json  # noqa: E402
from crystalgnn_plugins.generation import CrystalStructureSource  # noqa: E402
from crystalgnn_plugins.metrics import generation as gm  # noqa: E402

#: sampling configurations: the flow alone, with the default physics guidance, the
#: guided samples relaxed with the energy model (``get_structures(relax=True)``), and
#: the guided samples after a few relaxation steps of the atoms at fixed cell
CONFIGS = {"plain": {"physics": False}, "physics": {"physics": True}, "relaxed": {"physics": True, "relax": True},
           "settled": {"physics": True, "relax": True, "settle": True}}
SECTIONS = ("memorisation", "metrics", "relax", "csp", "targeting", "speed")
FP_CHUNK = 250


# ----------------------------------------------------------------------------- caching
def _save_structures(path: Path, structures: list, extra: dict) -> None:
    data = {"structures": [None if s is None else s.as_dict() for s in structures], **extra}
    atomic_write_json(path, data, indent=None, compress=True)


def _load_structures(path: Path) -> tuple[list, dict]:
    from pymatgen.core import Structure

    with gzip.open(path, "rt") as fh:
        data = json.load(fh)
    structures = [None if d is None else Structure.from_dict(d) for d in data.pop("structures")]
    return structures, data


def _cached_json(path: Path, compute, settings: dict):
    """``compute()`` cached in ``path``; computed again if the cache was made with other ``settings``."""
    if path.exists():
        value = json.loads(path.read_text())
        if value.get("settings") == settings:
            return value
    value = {**compute(), "settings": settings}
    atomic_write_json(path, value)
    return value


def _concat(arrays: list) -> np.ndarray:
    """Rows of fingerprint chunks; a chunk without any fingerprint has 0 columns (all NaN rows)."""
    width = max((a.shape[1] for a in arrays), default=0)
    return np.concatenate([a if a.shape[1] == width else np.full((len(a), width), np.nan) for a in arrays]
                          or [np.empty((0, 0))])


def _valid_rows(structures: list) -> list:
    """The samples that get fingerprints (structurally and compositionally valid), others
    ``None``: the rows of the ``fps`` cache."""
    return [s if s is not None and gm.structural_validity(s) and gm.compositional_validity(s) else None
            for s in structures]


def _fingerprints(structures: list, cache: Path, n_jobs: int) -> tuple[np.ndarray, np.ndarray]:
    """Fingerprints of the structures (``None`` rows NaN), computed in resumable chunks."""
    cache.mkdir(parents=True, exist_ok=True)
    parts = []
    for k, lo in enumerate(range(0, len(structures), FP_CHUNK)):
        path = cache / f"chunk_{k:04d}.npz"
        if not path.exists():
            struc, comp = gm.fingerprints(structures[lo : lo + FP_CHUNK], n_jobs=n_jobs)
            atomic_write(path, lambda fh, struc=struc, comp=comp: np.savez(fh, struc=struc, comp=comp))
            print(f"  fingerprints {min(lo + FP_CHUNK, len(structures))}/{len(structures)}", flush=True)
        data = np.load(path)
        parts.append((data["struc"], data["comp"]))
    return _concat([p[0] for p in parts]), _concat([p[1] for p in parts])


# ----------------------------------------------------------------------------- stages
def _source(args, **kw) -> CrystalStructureSource:
    if args.energy_weight is not None:
        kw.setdefault("energy_weight", args.energy_weight)
    if args.guidance_start is not None:
        kw.setdefault("guidance_start", args.guidance_start)
    if args.guidance_every is not None:
        kw.setdefault("guidance_every", args.guidance_every)
    if args.charge_weight is not None:
        kw.setdefault("charge_weight", args.charge_weight)
    if args.projection_steps is not None:
        kw.setdefault("projection_steps", args.projection_steps)
    if args.guidance_model is not None:
        kw.setdefault("guidance_model", args.guidance_model)
    if args.latent_noise is not None:
        kw.setdefault("latent_noise", args.latent_noise)
    return CrystalStructureSource(args.model, energy_model=args.energy_model, steps=args.steps,
                                  coord_speedup=args.coord_speedup, time_power=args.time_power, **kw)


def _configured(args, config: str) -> tuple[CrystalStructureSource, bool]:
    """The source of a sampling configuration and whether its samples are relaxed."""
    options = dict(CONFIGS[config])
    relax = options.pop("relax", False)
    if options.pop("settle", False):  # a few steps on the atoms only: the cell (and density) stays
        options["relax_kwargs"] = {"relax_cell": False, "steps": args.settle_steps, "pressure": 0.0}
    return _source(args, **options), relax


def _tag(args, config: str | None = None) -> str:
    """Sampler settings in cache and report keys, e.g. ``steps50`` (the source's
    defaults), ``steps50_speedup3_pow2`` or, for the physics configuration with
    ``--energy-weight``/``--guidance-start``, ``steps50_energy0.3_start0.8``."""
    tag = f"steps{args.steps}" + (f"_speedup{args.coord_speedup:g}" if args.coord_speedup is not None else "")
    tag += f"_pow{args.time_power:g}" if args.time_power is not None else ""
    tag += f"_latent{args.latent_noise:g}" if getattr(args, "latent_noise", None) is not None else ""
    if config is not None and CONFIGS[config].get("settle"):
        tag += f"_settle{args.settle_steps}"
    if config is not None and CONFIGS[config].get("physics"):
        tag += f"_energy{args.energy_weight:g}" if args.energy_weight is not None else ""
        tag += f"_start{args.guidance_start:g}" if args.guidance_start is not None else ""
        tag += f"_every{args.guidance_every}" if args.guidance_every is not None else ""
        tag += f"_charge{args.charge_weight:g}" if args.charge_weight is not None else ""
        tag += f"_proj{args.projection_steps}" if args.projection_steps is not None else ""
    return tag


def _unrecorded(args, sampler: dict) -> dict:
    """Settings of caches made before they were recorded: guidance on every guided step,
    with the energy model (guided ones only), no latent codes."""
    return {"guidance_every": 1, "latent": False,
            **({"energy_guide": args.energy_model or "default"} if "projection_steps" in sampler else {})}


def _samples(args, dataset: str, config: str, out: Path) -> tuple[list, dict]:
    """The configuration's samples, from the cache if it was made with the same sampler
    settings (the cache key names only the settings given on the command line; the
    source's defaults are compared here, so a changed default is not passed off)."""
    path = out / "samples.json.gz"
    source, relax = _configured(args, config)
    sampler = source._sampler(source.flow.condition_index(dataset), guided=source.physics)
    if source.physics and source.energy_weights[dataset]:
        sampler["energy_guide"] = source.guidance_label(dataset)
    if source.uses_latent(dataset):
        sampler["latent"] = True
        if source.latent_noise[dataset]:
            sampler["latent_noise"] = source.latent_noise[dataset]
    if path.exists():
        structures, extra = _load_structures(path)
        if (extra.get("n"), extra.get("seed")) != (args.n, args.seed):
            raise SystemExit(f"{path} holds {extra.get('n')} samples of seed {extra.get('seed')}; "
                             f"use another --out or --fresh")
        if "sampler" not in extra:
            print(f"warning: {path} does not record its sampler settings (made before they were recorded); "
                  f"today's are {sampler}", flush=True)
        elif {**_unrecorded(args, extra["sampler"]), **extra["sampler"]} != {**_unrecorded(args, sampler), **sampler}:
            raise SystemExit(f"{path} was sampled with {extra['sampler']}, the source now uses {sampler}; "
                             f"use another --out or --fresh")
        return structures, extra
    t0 = time.perf_counter()
    structures = source.get_structures(args.n, condition=dataset, seed=args.seed, valid_only=False, relax=relax)
    extra = {"n": args.n, "seed": args.seed, "seconds": time.perf_counter() - t0, "loadavg": os.getloadavg(),
             "threads": args.threads, "sampler": sampler}
    _save_structures(path, structures, extra)
    return structures, extra


def _displacement(before, after) -> float:
    """Mean atomic displacement (Å) between a sample and its relaxed structure
    (same atom order; fractional differences wrapped, in the relaxed lattice)."""
    d = after.frac_coords - before.frac_coords
    d -= np.round(d)
    return float(np.linalg.norm(d @ after.lattice.matrix, axis=1).mean())


def _relax_stats(args, structures: list, dataset: str) -> dict:
    """Relax at the pressure the dataset's crystals were made at (the generator's
    ``condition_pressures``: 10 GPa for carbon_24, 0 for perov_5)."""
    from crystalgnn_plugins.relaxation import relax

    source = _source(args, physics=False)
    pressure = source.flow.pressure_gpa(dataset)
    valid = [s for s in structures if gm.structural_validity(s)]
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = relax(valid, source.energy_model(), batched=True, on_error="skip", pressure=pressure)
    ok = [(s, r) for s, r in zip(valid, results) if r.error is None]
    disp = [_displacement(s, r.structure) for s, r in ok]
    return {
        "num_relaxed": len(valid),
        "pressure_GPa": pressure,
        "converged_fraction": float(np.mean([r.converged for r in results])) if results else None,
        "median_displacement_A": float(np.median(disp)) if disp else None,
        # samples whose atoms sit on symmetric sites do not move at all: the median is then ~0
        "mean_displacement_A": float(np.mean(disp)) if disp else None,
        "moved_fraction": float(np.mean([d > 0.01 for d in disp])) if disp else None,
        "median_volume_change": float(np.median([r.structure.volume / s.volume - 1 for s, r in ok])) if ok else None,
        "errors": sum(r.error is not None for r in results),
        "seconds": time.perf_counter() - t0,
    }


def _csp(args, test: list, dataset: str, out: Path) -> dict:
    path = out / f"csp_{_tag(args)}_predictions.json.gz"
    if path.exists():
        preds, extra = _load_structures(path)
    if not path.exists() or extra.get("seed") != args.seed or len(preds) != len(test):
        source = _source(args, physics=False)
        preds = []
        t0 = time.perf_counter()
        for k, s in enumerate(test):
            try:
                preds.append(source.get_structures(1, composition=s.composition, num_atoms=len(s), condition=dataset,
                                                   seed=args.seed + k, valid_only=False)[0])
            except ValueError as exc:  # e.g. an element unknown to the generator
                print(f"CSP {s.properties.get('material_id')}: {exc}", flush=True)
                preds.append(None)
        extra = {"seed": args.seed, "seconds": time.perf_counter() - t0}
        _save_structures(path, preds, extra)
    return {**gm.csp_match(preds, test), **extra}


def _targeting(args) -> dict:
    from crystalgnn_plugins.generation import PropertyTerm
    from crystalgnn_plugins.models.pretrained import resolve_model
    from crystalgnn_plugins.training.evaluate import predict

    model = resolve_model(args.property_model)
    source = _source(args, physics=True)
    out = {}
    guided = PropertyTerm(model, below=args.threshold - args.target_margin, weight=args.target_weight)
    for name, target in (("unguided", None), ("guided", guided)):
        structures = source.get_structures(args.target_n, condition="perov_5", seed=args.seed, target=target,
                                           valid_only=False)
        valid = [s for s in structures if gm.structural_validity(s)]
        known = [s for s in valid if {e.symbol for e in s.composition.elements} <= set(model.elements)]
        y = np.asarray(predict(model, known)[model.target] if known else [], dtype=float).ravel()
        out[name] = {"num_valid": len(valid), "num_predicted": len(y),
                     "fraction_below": float((y < args.threshold).mean()) if len(y) else None,
                     "median_prediction": float(np.median(y)) if len(y) else None,
                     "comp_validity": float(np.mean([gm.compositional_validity(s) for s in valid])) if valid else None,
                     "uniqueness": gm.uniqueness(valid, n_jobs=args.n_jobs) if valid else None}
    if out["unguided"]["fraction_below"]:
        out["ratio"] = out["guided"]["fraction_below"] / out["unguided"]["fraction_below"]
    return out


def _speed(args, dataset: str, config: str) -> dict:
    source, relax = _configured(args, config)
    source.get_structures(8, condition=dataset, seed=args.seed + 1, relax=relax)  # warm-up
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    structures = source.get_structures(args.speed_n, condition=dataset, seed=args.seed, valid_only=False, relax=relax)
    seconds = time.perf_counter() - t0
    n_valid = sum(gm.structural_validity(s) for s in structures)
    return {"samples": len(structures), "valid": n_valid, "seconds": seconds, "valid_per_s": n_valid / seconds,
            "threads": args.threads, "steps": args.steps, "loadavg_before": load_before, "loadavg_after": os.getloadavg()}


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--perov", required=True)
    ap.add_argument("--carbon", required=True)
    ap.add_argument("--model", default=None, help="generator (default: the shipped one)")
    ap.add_argument("--energy-model", default=None, help="energy model for physics guidance and relaxation")
    ap.add_argument("--latent-noise", type=float, default=None,
                    help="extra width of the latent bank's codes (CrystalStructureSource(latent_noise=))")
    ap.add_argument("--guidance-model", default=None,
                    help="energy model for the physics guidance only (default: the source's per-condition "
                         "guides, e.g. the shipped carbon-guide for carbon_24; with --energy-model, that model)")
    ap.add_argument("--property-model", default=None, help="heat_ref property model for the targeting test")
    ap.add_argument("--n", type=int, default=10000, help="samples per dataset and configuration")
    ap.add_argument("--match-samples", type=int, default=2000,
                    help="valid samples (seeded subset) for uniqueness and novelty (0: all)")
    ap.add_argument("--relax-n", type=int, default=300, help="samples relaxed per dataset and configuration")
    ap.add_argument("--target-n", type=int, default=1000)
    ap.add_argument("--target-weight", type=float, default=1.0)
    ap.add_argument("--target-margin", type=float, default=0.2, help="guide below threshold - margin (eV)")
    ap.add_argument("--threshold", type=float, default=0.439)
    ap.add_argument("--speed-n", type=int, default=2000)
    ap.add_argument("--configs", default="plain,physics", help="sampling configurations (empty: none, e.g. only the memorisation yardstick)")
    ap.add_argument("--datasets", default="perov_5,carbon_24")
    ap.add_argument("--sections", default="memorisation,metrics,relax,csp,targeting", help=f"subset of {','.join(SECTIONS)}")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--settle-steps", type=int, default=30,
                    help="FIRE steps on the atoms at fixed cell of the settled configuration")
    ap.add_argument("--energy-weight", type=float, default=None,
                    help="weight of the learned-energy guidance of the physics configuration "
                         "(default: CrystalStructureSource's)")
    ap.add_argument("--guidance-start", type=float, default=None,
                    help="flow time from which the guidance acts (default: CrystalStructureSource's)")
    ap.add_argument("--guidance-every", type=int, default=None,
                    help="evaluate the guidance on every k-th guided step, reuse its gradients in between "
                         "(default: CrystalStructureSource's)")
    ap.add_argument("--charge-weight", type=float, default=None,
                    help="weight of the charge-balance guidance (0: off; default: CrystalStructureSource's)")
    ap.add_argument("--time-power", type=float, default=None,
                    help="step times 1 - (1 - k/steps)^p (1: uniform; larger: shorter steps near the data end; "
                         "default: CrystalStructureSource's per dataset)")
    ap.add_argument("--coord-speedup", type=float, default=None,
                    help="coordinate velocity x (1 + s t) while sampling (inference anti-annealing; 0: plain flow; "
                         "default: CrystalStructureSource's per dataset)")
    ap.add_argument("--projection-steps", type=int, default=None,
                    help="physics configurations: final repulsion descent steps (default: the source's, 10)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-jobs", type=int, default=2, help="processes for the fingerprints and the uniqueness and novelty matching")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fresh", action="store_true", help="delete the cache in --out first")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    if sections - set(SECTIONS):
        ap.error(f"unknown sections {sorted(sections - set(SECTIONS))}; choose from {SECTIONS}")
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    if args.fresh and out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path = out_dir / "report.json"
    report: dict = json.loads(report_path.read_text()) if report_path.exists() else {}
    report["args"] = vars(args)
    results = report.setdefault("results", {})
    paths = {"perov_5": args.perov, "carbon_24": args.carbon}
    match = args.match_samples or None
    for dataset in args.datasets.split(","):
        split = load_split(paths[dataset], dataset)
        res = results.setdefault(dataset, {})
        ds_dir = out_dir / dataset
        ds_dir.mkdir(parents=True, exist_ok=True)
        if sections & {"metrics", "memorisation"}:
            ref_fps = _fingerprints(split["test"], ds_dir / "reference_fps", args.n_jobs)
            if "memorisation" in sections and "memorisation" not in res:  # the training set scored as if generated: the yardstick
                train_fps = _fingerprints(split["train"], ds_dir / "training_fps", args.n_jobs)
                res["memorisation"] = gm.evaluate_generation(
                    split["train"], split["test"], dataset=dataset, reference_fps=ref_fps, generated_fps=train_fps,
                    uniqueness_samples=match, seed=args.seed, n_jobs=args.n_jobs)
                print(dataset, "memorisation", json.dumps(res["memorisation"], indent=1, default=float), flush=True)
                atomic_write_json(report_path, report)
        for config in [c for c in args.configs.split(",") if c]:
            cfg_dir = ds_dir / f"{config}_{_tag(args, config)}"
            cfg_dir.mkdir(parents=True, exist_ok=True)
            key = f"{config}_{_tag(args, config)}"
            if "metrics" in sections or "relax" in sections:
                structures, extra = _samples(args, dataset, config, cfg_dir)
            if "metrics" in sections:
                gen_fps = _fingerprints(_valid_rows(structures), cfg_dir / "fps", args.n_jobs)
                metrics = gm.evaluate_generation(
                    structures, split["test"], training=split["train"], dataset=dataset, reference_fps=ref_fps,
                    generated_fps=gen_fps, novelty_samples=match, uniqueness_samples=match, seed=args.seed, n_jobs=args.n_jobs)
                res.setdefault(key, {}).update(metrics, sampling=extra)
            if "relax" in sections:
                res.setdefault(key, {})["relaxation"] = _cached_json(
                    cfg_dir / "relax.json", lambda s=structures, d=dataset: _relax_stats(args, s[: args.relax_n], d),
                    {"relax_n": args.relax_n, "energy_model": args.energy_model, "model": args.model})
            print(dataset, key, json.dumps(res.get(key), indent=1, default=float), flush=True)
            atomic_write_json(report_path, report)
        if "csp" in sections and dataset == "perov_5":
            res[f"csp_{_tag(args)}"] = _csp(args, split["test"], dataset, ds_dir)
            print(dataset, "csp", res[f"csp_{_tag(args)}"], flush=True)
            atomic_write_json(report_path, report)
        if "targeting" in sections and dataset == "perov_5" and args.property_model:
            res["targeting"] = _cached_json(ds_dir / "targeting.json", lambda: _targeting(args), {
                k: getattr(args, k) for k in ("property_model", "energy_model", "guidance_model", "latent_noise", "target_n", "target_weight",
                                              "target_margin", "threshold", "steps", "coord_speedup", "time_power", "energy_weight",
                                              "guidance_start", "guidance_every", "charge_weight", "projection_steps", "seed")})
            print(dataset, "targeting", res["targeting"], flush=True)
            atomic_write_json(report_path, report)
        if "speed" in sections:
            for config in [c for c in args.configs.split(",") if c]:
                key = f"speed_{config}_{_tag(args, config)}_threads{args.threads}"
                res[key] = _speed(args, dataset, config)
                print(dataset, key, res[key], flush=True)
                atomic_write_json(report_path, report)
    print(f"report: {report_path}")


if __name__ == "__main__":
    main()
