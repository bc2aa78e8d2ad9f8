"""What the CDVAE generation metrics can reach on our own held-out split.

Our test split is small (perov_5: 379 crystals, carbon_24: 203; CDVAE's test sets
hold about 3,800 and 2,000), and COV-P and the EMDs depend on the size of the
reference set. This script measures, from data only (no generator):

- ``yardstick``: the training split scored as if it were generated, against the
  test split (as the ``memorisation`` section of ``evaluate_generator.py``);
- ``reference_size``: the *test* crystals scored as if they were generated
  against random subsets of the training split of growing size: COV-R/COV-P of
  a perfect sampler of the data distribution as a function of the reference size;
- ``emd_floor``: density and #elements EMD between random subsets of the
  training split of the test split's size and the rest of the training split
  (mean and 95th percentile over ``--draws`` draws): what a perfect sampler
  scores against a reference of our test split's size;
- with ``--comp-scaler FILE`` (JSON ``{"mean": [...], "std": [...]}``, 132 Magpie
  features), the yardstick and reference-size rows again under that
  composition scaler (e.g. other published constants; none ship with the project).

Fingerprints are cached under ``--out`` in the layout of ``evaluate_generator.py``
(pass the same ``--out`` to reuse them).

    python benchmarks/generation/metric_floor.py --perov ../shared/data/perov_5/dev.csv \\
        --carbon ../shared/data/carbon_24/dev.csv --out /work/runs/gen_eval
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_split  # noqa: E402
from evaluate_generator import _fingerprints  # noqa: E402

from crystalgnn_plugins._atomic import atomic_write_json  # noqa: E402
from crystalgnn_plugins.metrics import generation as gm  # noqa: E402


def _cov(gen, ref, cut, scaler) -> dict[str, float]:
    out = gm.coverage(gen, ref, cut["struc"], cut["comp"], comp_scaler=scaler)
    return {"cov_recall": out["cov_recall"], "cov_precision": out["cov_precision"]}


def floor(dataset: str, split: dict, out: Path, sizes: list[int], draws: int, seed: int,
          scalers: dict, n_jobs: int) -> dict:
    train, test = split["train"], split["test"]
    tr = _fingerprints(train, out / dataset / "training_fps", n_jobs)
    te = _fingerprints(test, out / dataset / "reference_fps", n_jobs)
    cut = gm.COV_CUTOFFS[dataset]
    rng = np.random.default_rng(seed)
    res: dict = {"num_train": len(train), "num_test": len(test)}
    for name, scaler in scalers.items():
        rows = {"yardstick": _cov(tr, te, cut, scaler), "reference_size": {}}
        for n in sizes:
            n = min(n, len(train))
            runs = []
            for _ in range(draws if n < len(train) else 1):
                idx = rng.permutation(len(train))[:n]
                runs.append(_cov(te, (tr[0][idx], tr[1][idx]), cut, scaler))
            rows["reference_size"][str(n)] = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
        res[f"scaler_{name}"] = rows
    dens, nel = [], []
    for _ in range(draws):
        perm = rng.permutation(len(train))
        ref = [train[i] for i in perm[: len(test)]]
        rest = [train[i] for i in perm[len(test):]]
        dens.append(gm.density_emd(rest, ref))
        nel.append(gm.num_elements_emd(rest, ref))
    res["emd_floor"] = {
        "reference_size": len(test),
        "density_emd_mean": float(np.mean(dens)), "density_emd_p95": float(np.percentile(dens, 95)),
        "num_elements_emd_mean": float(np.mean(nel)), "num_elements_emd_p95": float(np.percentile(nel, 95)),
    }
    res["yardstick_emd"] = {"density_emd": gm.density_emd(train, test), "num_elements_emd": gm.num_elements_emd(train, test)}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--perov", required=True, help="perov_5 dev.csv")
    ap.add_argument("--carbon", required=True, help="carbon_24 dev.csv")
    ap.add_argument("--out", required=True, help="cache and report directory (shared with evaluate_generator.py)")
    ap.add_argument("--datasets", default="perov_5,carbon_24")
    ap.add_argument("--sizes", default="379,1000,2000,100000", help="reference sizes (capped at the training split)")
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--comp-scaler", default=None, help="JSON file with 'mean' and 'std' of the 132 Magpie features")
    ap.add_argument("--n-jobs", type=int, default=2)
    args = ap.parse_args()

    scalers: dict = {"broad": "broad"}
    if args.comp_scaler:
        data = json.loads(Path(args.comp_scaler).read_text())
        mean, std = np.asarray(data["mean"], float), np.asarray(data["std"], float)
        if mean.shape != (132,) or std.shape != (132,):
            raise SystemExit(f"{args.comp_scaler}: 'mean' and 'std' must hold 132 values each, "
                             f"got {mean.shape} and {std.shape}")
        scalers[Path(args.comp_scaler).stem] = (mean, std)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"perov_5": args.perov, "carbon_24": args.carbon}
    sizes = [int(s) for s in args.sizes.split(",")]
    report = {"args": vars(args), "results": {}}
    for dataset in args.datasets.split(","):
        split = load_split(paths[dataset], dataset)
        report["results"][dataset] = floor(dataset, split, out, sizes, args.draws, args.seed, scalers, args.n_jobs)
        print(dataset, json.dumps(report["results"][dataset], indent=1), flush=True)
    atomic_write_json(out / "metric_floor.json", report)
    print(f"report: {out / 'metric_floor.json'}")


if __name__ == "__main__":
    main()
