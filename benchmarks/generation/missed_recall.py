"""The reference crystals a sampler does not recall (COV-R), and how near it came.

Reads a configuration cached by ``evaluate_generator.py`` (``--samples``: the directory
holding ``samples.json.gz`` and ``fps/``; the test split's fingerprints are in
``reference_fps/`` beside it, the training split's in ``training_fps/`` if the
``memorisation`` section ran). For every test crystal that no sample recalls (nearest
structure fingerprint within the dataset's structure cutoff and nearest composition
fingerprint within its composition cutoff, CDVAE's ``compute_cov``), it prints the
crystal (formula, space group, lattice), the nearest sample by structure fingerprint and
the nearest training crystal, so one can see what kind of crystal the sampler lacks and
whether the training split has it. With ``--csp N`` it also asks the generator (``--model``,
the source's defaults otherwise) for N structures of each missed crystal's formula
(composition-conditioned, seeded) and reports how near they come: whether the generator can
make the crystal at all, or only rarely makes its composition unconditioned.

    python benchmarks/generation/missed_recall.py --csv ../shared/data/perov_5/dev.csv \\
        --dataset perov_5 --samples OUT/perov_5/physics_steps50 [--csp 20]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, load_split  # noqa: E402
from evaluate_generator import _fingerprints, _load_structures  # noqa: E402

from crystalgnn_plugins._atomic import atomic_write_json  # noqa: E402
from crystalgnn_plugins.metrics import generation as gm  # noqa: E402


def describe(structure) -> dict:
    """Formula, space group (symprec 0.1) and lattice of a crystal."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        group = SpacegroupAnalyzer(structure, symprec=0.1).get_space_group_symbol()
    except Exception:  # spglib failures: report the crystal anyway
        group = None
    lat = structure.lattice
    return {"formula": structure.composition.reduced_formula, "sites": len(structure), "space_group": group,
            "abc": [round(x, 3) for x in lat.abc], "angles": [round(x, 1) for x in lat.angles],
            "density": round(float(structure.density), 3)}


def nearest(d_struc: np.ndarray, column: int, structures: list) -> dict:
    """The crystal of ``structures`` nearest (structure fingerprint) to reference ``column``."""
    i = int(np.argmin(d_struc[:, column]))
    return {"index": i, "structure_distance": round(float(d_struc[i, column]), 4), **describe(structures[i])}


def csp_distances(source, crystal, fingerprint: np.ndarray, n: int, seed: int) -> dict:
    """``n`` structures of ``crystal``'s formula from ``source``: nearest structure-fingerprint
    distance to ``fingerprint`` and all the distances."""
    from scipy.spatial.distance import cdist

    out = source.get_structures(n, composition=crystal.composition.reduced_formula, seed=seed)
    d = cdist(gm.fingerprints(out)[0], fingerprint[None, :])[:, 0]
    return {"num": n, "nearest_structure_distance": round(float(np.nanmin(d)), 4), "distances": [round(float(x), 4) for x in d]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", required=True, help="the dataset's dev.csv")
    ap.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    ap.add_argument("--samples", required=True, help="an evaluate_generator configuration directory")
    ap.add_argument("--csp", type=int, default=0, metavar="N",
                    help="also generate N structures of each missed crystal's formula (default 0: no)")
    ap.add_argument("--model", default="generator", help="generator for --csp (default: the shipped one)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the --csp samples")
    ap.add_argument("--out", default=None, help="JSON report (default: SAMPLES/missed_recall.json)")
    args = ap.parse_args(argv)

    cfg = Path(args.samples)
    for need in (cfg / "samples.json.gz", cfg / "fps", cfg.parent / "reference_fps"):
        if not need.exists():
            raise SystemExit(f"{need} is missing: pass a configuration directory of evaluate_generator "
                             "whose metrics section has run")
    split = load_split(args.csv, args.dataset)
    samples, _ = _load_structures(cfg / "samples.json.gz")
    # the caches are complete after the metrics section; the None lists only give their lengths
    gen_fps = _fingerprints([None] * len(samples), cfg / "fps", 1)
    ref_fps = _fingerprints([None] * len(split["test"]), cfg.parent / "reference_fps", 1)
    train_dir = cfg.parent / "training_fps"
    train_fps = _fingerprints([None] * len(split["train"]), train_dir, 1) if train_dir.exists() else None

    cut = gm.COV_CUTOFFS[args.dataset]
    # distances to crystals without fingerprints: infinite
    d_struc, d_comp = (np.nan_to_num(d, nan=np.inf) for d in gm.fingerprint_distances(gen_fps, ref_fps))
    near_struc, near_comp = d_struc.min(axis=0), d_comp.min(axis=0)
    missed = np.where(~((near_struc <= cut["struc"]) & (near_comp <= cut["comp"])))[0]
    t_struc = np.nan_to_num(gm.fingerprint_distances(train_fps, ref_fps)[0], nan=np.inf) if train_fps is not None else None
    if args.csp and len(missed):
        from crystalgnn_plugins.generation import CrystalStructureSource

        source = CrystalStructureSource(args.model)  # loaded once for all missed crystals
    rows = []
    for j in missed:
        crystal = split["test"][j]
        row = {"material_id": crystal.properties["material_id"], **describe(crystal),
               "nearest_structure_distance": round(float(near_struc[j]), 4),
               "nearest_composition_distance": round(float(near_comp[j]), 3),
               "nearest_sample": nearest(d_struc, j, samples)}
        if t_struc is not None:
            row["nearest_training"] = nearest(t_struc, j, split["train"])
        if args.csp:
            row["csp"] = csp_distances(source, crystal, ref_fps[0][j], args.csp, args.seed)
            row["csp"]["within_cutoff"] = sum(x <= cut["struc"] for x in row["csp"]["distances"])
        rows.append(row)
        print(f"{row['material_id']} {row['formula']} {row['space_group']} a,b,c {row['abc']}: nearest sample "
              f"{row['nearest_sample']['structure_distance']} ({row['nearest_sample']['formula']}, "
              f"{row['nearest_sample']['abc']}), composition {row['nearest_composition_distance']}"
              + (f"; nearest training {row['nearest_training']['structure_distance']} "
                 f"({row['nearest_training']['formula']}, {row['nearest_training']['abc']})" if t_struc is not None else "")
              + (f"; {args.csp} of its formula: nearest {row['csp']['nearest_structure_distance']}, "
                 f"{row['csp']['within_cutoff']} within the cutoff" if args.csp else ""))
    report = {"dataset": args.dataset, "samples": str(cfg), "num_reference": len(split["test"]),
              "cutoffs": cut, "recall": 1 - len(missed) / len(split["test"]), "missed": rows}
    print(f"recalled {len(split['test']) - len(missed)} of {len(split['test'])}")
    atomic_write_json(Path(args.out) if args.out else cfg / "missed_recall.json", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
