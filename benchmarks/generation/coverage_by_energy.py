"""How COV-P depends on the learned energy of the samples (a diagnostic).

Reads a configuration cached by ``evaluate_generator.py`` (``--samples``: the
directory holding ``samples.json.gz`` and its ``fps/``; the test fingerprints are
taken from ``../reference_fps``), evaluates the energy per atom (eV/atom) of the
valid samples and of the training crystals with ``--model``, and prints, for
samples kept below thresholds tied to the training crystals' energies (their
median, 90th percentile, maximum, and the maximum plus 0.1 / 0.2 / 0.4 eV/atom):
the fraction kept, COV-P among the kept samples, their density EMD against the
test split and (``--match``) their uniqueness and novelty.

It answers "are the uncovered samples the high-energy ones?", not a sampling
setting: an energy filter is not a ``CrystalStructureSource`` option.

    python benchmarks/generation/coverage_by_energy.py --csv ../shared/data/carbon_24/dev.csv \\
        --dataset carbon_24 --samples /work/runs/gen_eval/carbon_24/physics_steps50 \\
        --model carbon-guide --match
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_split  # noqa: E402
from evaluate_generator import _fingerprints, _load_structures, _valid_rows  # noqa: E402

from crystalgnn_plugins._atomic import atomic_write_json  # noqa: E402
from crystalgnn_plugins.metrics import generation as gm  # noqa: E402


def energies_per_atom(model, structures: list, batch_size: int = 64) -> np.ndarray:
    """Energy per atom (eV/atom) of each structure under ``model`` (no forces)."""
    model.eval()
    out = []
    for lo in range(0, len(structures), batch_size):
        graph = model.graphs(structures[lo : lo + batch_size])
        with torch.no_grad():
            energy = model(graph, compute_forces=False, compute_stress=False)["energy"]
        out.append(energy.detach().double().cpu().numpy() / graph.num_atoms.cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", required=True, help="the dataset's dev.csv")
    ap.add_argument("--dataset", required=True, choices=sorted(gm.COV_CUTOFFS))
    ap.add_argument("--samples", required=True, help="an evaluate_generator configuration directory")
    ap.add_argument("--model", default="default", help="energy model (shipped name or directory)")
    ap.add_argument("--match", action="store_true", help="also uniqueness and novelty of the kept samples")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="JSON report (default: SAMPLES/coverage_by_energy.json)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from crystalgnn_plugins.models.pretrained import resolve_model

    samples_dir = Path(args.samples)
    if not (samples_dir / "samples.json.gz").exists():
        raise SystemExit(f"no samples.json.gz in {samples_dir}: pass a configuration directory of evaluate_generator")
    structures, _ = _load_structures(samples_dir / "samples.json.gz")
    valid = _valid_rows(structures)
    # the fingerprint cache of evaluate_generator is indexed like its valid list
    struc_fps, _ = _fingerprints(valid, samples_dir / "fps", 1)
    chunks = sorted((samples_dir.parent / "reference_fps").glob("chunk_*.npz"))
    if not chunks:
        raise SystemExit(f"no test fingerprints in {samples_dir.parent / 'reference_fps'}: run evaluate_generator first")
    ref_struc = np.concatenate([np.load(c)["struc"] for c in chunks])
    keep_rows = [k for k, s in enumerate(valid) if s is not None and not np.isnan(struc_fps[k]).any()]
    kept = [valid[k] for k in keep_rows]
    dist = np.linalg.norm(struc_fps[keep_rows][:, None] - ref_struc[None], axis=-1).min(1)
    covered = dist <= gm.COV_CUTOFFS[args.dataset]["struc"]

    split = load_split(args.csv, args.dataset)
    model = resolve_model(args.model)
    e_train = energies_per_atom(model, split["train"])
    e_samples = energies_per_atom(model, kept)
    q = {"train median": np.quantile(e_train, 0.5), "train 90th pct": np.quantile(e_train, 0.9),
         "train max": e_train.max()}
    q.update({f"train max + {d}": e_train.max() + d for d in (0.1, 0.2, 0.4)})
    q["all"] = np.inf
    report = {"samples": str(samples_dir), "model": args.model, "num_samples": len(kept),
              "train_energy_quantiles": {str(p): float(np.quantile(e_train, p)) for p in (0, 0.1, 0.5, 0.9, 1)},
              "sample_energy_quantiles": {str(p): float(np.quantile(e_samples, p)) for p in (0, 0.1, 0.5, 0.9, 1)},
              "rows": []}
    print(f"{len(kept)} valid fingerprinted samples; energy per atom (eV/atom) quantiles 0/10/50/90/100 %:")
    print("  training crystals", np.round(list(report["train_energy_quantiles"].values()), 3))
    print("  samples          ", np.round(list(report["sample_energy_quantiles"].values()), 3))
    for name, threshold in q.items():
        sel = e_samples <= threshold
        if not sel.any():
            continue
        chosen = [s for s, k in zip(kept, sel) if k]
        row = {"threshold": name, "eV_per_atom": float(threshold), "kept_fraction": float(sel.mean()),
               "cov_precision": float(covered[sel].mean()), "density_emd": gm.density_emd(chosen, split["test"])}
        if args.match:
            row["uniqueness"] = gm.uniqueness(chosen)
            row["novelty"] = gm.novelty(chosen, split["train"])
        report["rows"].append(row)
        print("  " + "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    atomic_write_json(Path(args.out) if args.out else samples_dir / "coverage_by_energy.json", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
