"""Sample the generator and score it against our own held-out split (CDVAE conventions).

For perov_5 and carbon_24 (fixed 80/10/10 split, seed 0, ``common.load_split``)
and for each sampling configuration (``plain``: no guidance; ``physics``:
repulsion + learned-energy guidance) it prints and writes to ``--out``:

- validity (structural, compositional), COV-R / COV-P, density and #elements
  EMD against the test split, uniqueness and novelty against the training split;
- speed: samples and valid samples per second (sampling only, this machine);
- physics: relaxation of ``--relax-n`` samples with the energy model (batched
  FIRE + Fréchet cell filter, fmax 0.05 eV/Å, 500 steps): fraction converged and
  the median per-structure mean atomic displacement (Å), per configuration;
- CSP on perov_5 (one sample per test formula, composition given): match rate
  and normalised RMSE (StructureMatcher stol 0.5, ltol 0.3, angle_tol 10);
- targeting (with ``--property-model``, perov_5): fraction of samples whose
  predicted ``heat_ref`` is below ``--threshold`` (0.439 eV, the dataset's 5th
  percentile) without and with property guidance.

    OMP_NUM_THREADS=2 python benchmarks/generation/evaluate_generator.py \\
        --perov ../shared/data/perov_5/dev.csv --carbon ../shared/data/carbon_24/dev.csv \\
        --model /work/runs/generator/model --energy-model default \\
        --property-model /work/runs/prop_heat_ref/model --n 10000 --out /work/runs/gen_eval
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_split  # noqa: E402

from crystalgnn_plugins.generation import CrystalStructureSource  # noqa: E402
from crystalgnn_plugins.metrics import generation as gm  # noqa: E402
from crystalgnn_plugins.training.trainer import write_json_atomic  # noqa: E402

CONFIGS = {"plain": {"physics": False}, "physics": {"physics": True}}


def _sample(source: CrystalStructureSource, n: int, dataset: str, seed: int, **kw):
    t0 = time.perf_counter()
    structures = source.get_structures(n, condition=dataset, seed=seed, valid_only=False, **kw)
    return structures, time.perf_counter() - t0


def _displacement(before, after) -> float:
    """Mean atomic displacement (Å) between a sample and its relaxed structure
    (same atom order; fractional differences wrapped, in the relaxed lattice)."""
    d = after.frac_coords - before.frac_coords
    d -= np.round(d)
    return float(np.linalg.norm(d @ after.lattice.matrix, axis=1).mean())


def _relax_stats(source: CrystalStructureSource, structures) -> dict:
    from crystalgnn_plugins.relaxation import relax

    valid = [s for s in structures if gm.structural_validity(s)]
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = relax(valid, source.energy_model(), batched=True, on_error="skip")
    disp = [_displacement(s, r.structure) for s, r in zip(valid, results) if r.error is None]
    return {
        "num_relaxed": len(valid),
        "converged_fraction": float(np.mean([r.converged for r in results])) if results else None,
        "median_displacement_A": float(np.median(disp)) if disp else None,
        "median_volume_change": float(np.median([r.structure.volume / s.volume - 1 for s, r in zip(valid, results)])) if valid else None,
        "errors": sum(r.error is not None for r in results),
        "seconds": time.perf_counter() - t0,
    }


def _csp(source: CrystalStructureSource, test, dataset: str, seed: int) -> dict:
    preds = []
    t0 = time.perf_counter()
    for k, s in enumerate(test):
        try:
            preds.append(source.get_structures(1, composition=s.composition, num_atoms=len(s), condition=dataset,
                                               seed=seed + k, valid_only=False)[0])
        except ValueError as exc:  # e.g. an element unknown to the generator
            print(f"CSP {s.properties.get('material_id')}: {exc}", flush=True)
            preds.append(None)
    out = gm.csp_match(preds, test)
    out["seconds"] = time.perf_counter() - t0
    return out


def _targeting(source, prop_model: str, n: int, threshold: float, weight: float, seed: int) -> dict:
    from crystalgnn_plugins.generation import PropertyTerm
    from crystalgnn_plugins.models.pretrained import resolve_model
    from crystalgnn_plugins.training.evaluate import predict

    model = resolve_model(prop_model)
    out = {}
    for name, target in (("unguided", None), ("guided", PropertyTerm(model, below=threshold - 0.2, weight=weight))):
        structures, _ = _sample(source, n, "perov_5", seed, target=target)
        valid = [s for s in structures if gm.structural_validity(s)]
        known = [s for s in valid if {e.symbol for e in s.composition.elements} <= set(model.elements)]
        y = np.asarray(predict(model, known)[model.target], dtype=float).ravel()
        out[name] = {"num_valid": len(valid), "fraction_below": float((y < threshold).mean()) if len(y) else None,
                     "median_prediction": float(np.median(y)) if len(y) else None,
                     "uniqueness_pct": 100 * gm.uniqueness(valid) if valid else None}
    if out["unguided"]["fraction_below"]:
        out["ratio"] = out["guided"]["fraction_below"] / out["unguided"]["fraction_below"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--perov", required=True)
    ap.add_argument("--carbon", required=True)
    ap.add_argument("--model", default=None, help="generator (default: the shipped one)")
    ap.add_argument("--energy-model", default=None, help="energy model for physics guidance and relaxation")
    ap.add_argument("--property-model", default=None, help="heat_ref property model for the targeting test")
    ap.add_argument("--n", type=int, default=10000, help="samples per dataset and configuration")
    ap.add_argument("--relax-n", type=int, default=300, help="samples relaxed per dataset and configuration")
    ap.add_argument("--target-n", type=int, default=1000)
    ap.add_argument("--target-weight", type=float, default=1.0)
    ap.add_argument("--threshold", type=float, default=0.439)
    ap.add_argument("--configs", default="plain,physics")
    ap.add_argument("--datasets", default="perov_5,carbon_24")
    ap.add_argument("--skip-csp", action="store_true")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"args": vars(args), "results": {}}
    paths = {"perov_5": args.perov, "carbon_24": args.carbon}
    for dataset in args.datasets.split(","):
        split = load_split(paths[dataset], dataset)
        res = report["results"].setdefault(dataset, {})
        for config in args.configs.split(","):
            source = CrystalStructureSource(args.model, energy_model=args.energy_model, steps=args.steps, **CONFIGS[config])
            structures, seconds = _sample(source, args.n, dataset, args.seed)
            metrics = gm.evaluate_generation(structures, split["test"], training=split["train"], dataset=dataset)
            metrics["seconds"] = seconds
            metrics["samples_per_s"] = len(structures) / seconds
            metrics["valid_per_s"] = metrics["num_valid"] / seconds
            metrics["relaxation"] = _relax_stats(source, structures[: args.relax_n])
            res[config] = metrics
            print(dataset, config, json.dumps(metrics, indent=1, default=float), flush=True)
            write_json_atomic(out_dir / "report.json", report)
        if not args.skip_csp:
            source = CrystalStructureSource(args.model, energy_model=args.energy_model, steps=args.steps, physics=False)
            res["csp"] = _csp(source, split["test"], dataset, args.seed)
            print(dataset, "csp", res["csp"], flush=True)
            write_json_atomic(out_dir / "report.json", report)
        if dataset == "perov_5" and args.property_model:
            source = CrystalStructureSource(args.model, energy_model=args.energy_model, steps=args.steps, physics=True)
            res["targeting"] = _targeting(source, args.property_model, args.target_n, args.threshold, args.target_weight, args.seed)
            print(dataset, "targeting", res["targeting"], flush=True)
            write_json_atomic(out_dir / "report.json", report)
    print(f"report: {out_dir / 'report.json'}")


if __name__ == "__main__":
    main()
