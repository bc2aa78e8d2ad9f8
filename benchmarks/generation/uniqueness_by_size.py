"""Uniqueness by number of atoms per cell, of generated samples and of the training split.

Reads the samples of a configuration cached by ``evaluate_generator.py`` (``--samples``:
the directory holding ``samples.json.gz``), takes a seeded random subset of
``--max-samples`` valid ones (as ``--match-samples`` there), and prints, for every atom
count, how many samples have it, their uniqueness (``StructureMatcher`` defaults, as
``crystalgnn_plugins.metrics.generation.uniqueness``) and the number of duplicates,
beside the same for the dataset's training split (``common.load_split``). It shows
where duplicates come from: small cells have few distinct low-energy arrangements.

    python benchmarks/generation/uniqueness_by_size.py --csv ../shared/data/carbon_24/dev.csv \\
        --dataset carbon_24 --samples /work/runs/gen_eval/carbon_24/physics_steps50 --max-samples 2000
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, load_split  # noqa: E402
from evaluate_generator import _load_structures  # noqa: E402

from crystalgnn_plugins._atomic import atomic_write_json  # noqa: E402
from crystalgnn_plugins.metrics import generation as gm  # noqa: E402


def by_size(structures: list) -> dict[int, dict[str, float]]:
    """``{atoms per cell: {"count", "uniqueness", "duplicates"}}``."""
    groups: dict[int, list] = defaultdict(list)
    for s in structures:
        groups[len(s)].append(s)
    out = {}
    for size in sorted(groups):
        unique = gm.uniqueness(groups[size])
        out[size] = {"count": len(groups[size]), "uniqueness": unique,
                     "duplicates": round(len(groups[size]) * (1 - unique))}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", required=True, help="the dataset's dev.csv")
    ap.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    ap.add_argument("--samples", required=True, help="an evaluate_generator configuration directory")
    ap.add_argument("--max-samples", type=int, default=2000, help="seeded random subset of the valid samples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON report (default: SAMPLES/uniqueness_by_size.json)")
    args = ap.parse_args(argv)

    path = Path(args.samples) / "samples.json.gz"
    if not path.exists():
        raise SystemExit(f"no samples.json.gz in {args.samples}: pass a configuration directory of evaluate_generator")
    structures, _ = _load_structures(path)
    valid = [s for s in structures if s is not None and gm.structural_validity(s)]
    if len(valid) > args.max_samples:
        pick = np.random.default_rng(args.seed).choice(len(valid), args.max_samples, replace=False)
        valid = [valid[i] for i in sorted(pick)]
    samples = by_size(valid)
    training = by_size(load_split(args.csv, args.dataset)["train"])
    print(f"{'atoms':>5} {'samples':>8} {'unique %':>9} {'dups':>5}   {'training':>8} {'unique %':>9}")
    for size in sorted(set(samples) | set(training)):
        s, t = samples.get(size), training.get(size)
        left = f"{s['count']:8d} {100 * s['uniqueness']:9.1f} {s['duplicates']:5d}" if s else f"{'':8} {'':9} {'':5}"
        right = f"{t['count']:8d} {100 * t['uniqueness']:9.1f}" if t else ""
        print(f"{size:5d} {left}   {right}")
    dups = sum(s["duplicates"] for s in samples.values())
    print(f"all sizes: {len(valid)} samples, {dups} duplicates within their size ({100 * (1 - dups / len(valid)):.1f} % unique)")
    atomic_write_json(Path(args.out) if args.out else Path(args.samples) / "uniqueness_by_size.json",
                      {"samples": {str(k): v for k, v in samples.items()},
                       "training": {str(k): v for k, v in training.items()}, "num_samples": len(valid)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
