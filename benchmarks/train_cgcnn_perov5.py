"""Benchmark: the faithful CGCNN on Perov-5 formation energies (``heat_all``,
eV per 5-atom cell), fixed 80/10/10 split.

Prints MAE, RMSE, R² (test split), training time and parameter count, next to
the mean predictor of the training targets, and writes them as JSON.

    python benchmarks/train_cgcnn_perov5.py --data ../shared/data/perov_5/dev.csv --out /tmp/cgcnn_perov5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from crystalgnn_plugins.data import read_cdvae_csv
from crystalgnn_plugins.data.splits import split_indices
from crystalgnn_plugins.metrics import regression_metrics
from crystalgnn_plugins.models import PropertyModel
from crystalgnn_plugins.training import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="path to perov_5/dev.csv")
    ap.add_argument("--target", default="heat_all")
    ap.add_argument("--out", required=True, help="output directory (model, checkpoints, report)")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--patience", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0, help="split and training seed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    records = read_cdvae_csv(args.data, targets=[args.target])
    read_time = time.perf_counter() - t0
    tr, va, te = split_indices(len(records), (0.8, 0.1, 0.1), seed=args.seed)
    train_set, val_set, test_set = ([records[i] for i in idx] for idx in (tr, va, te))

    torch.manual_seed(args.seed)
    model = PropertyModel("cgcnn", target=args.target, target_units="eV/cell")
    result = train(
        train_set, val_set, test_set, model=model, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, patience=args.patience, seed=args.seed, out_dir=args.out, resume=args.resume,
        progress=False,
    )
    y_train = np.array([r.targets[args.target] for r in train_set])
    y_test = np.array([r.targets[args.target] for r in test_set])
    mean_pred = regression_metrics(y_test, np.full_like(y_test, y_train.mean()))
    test = result.report["metrics"]["test"][args.target]
    summary = {
        "dataset": str(args.data),
        "target": args.target,
        "split": {"train": len(train_set), "val": len(val_set), "test": len(test_set), "seed": args.seed},
        "cgcnn": {
            "test_mae": test["mae"],
            "test_rmse": test["rmse"],
            "test_r2": test["r2"],
            "training_time_s": result.report["training_time_s"],
            "epochs_run": result.report["epochs_run"],
            "parameters": result.report["num_parameters"],
        },
        "mean_predictor": {"test_mae": mean_pred["mae"], "test_rmse": mean_pred["rmse"], "test_r2": mean_pred["r2"]},
        "read_time_s": read_time,
        "torch_threads": torch.get_num_threads(),
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "benchmark.json").write_text(json.dumps(summary, indent=2))
    print(f"{'model':<16}{'MAE (eV)':>10}{'RMSE (eV)':>11}{'R2':>8}{'train time (s)':>16}{'parameters':>12}")
    c = summary["cgcnn"]
    print(f"{'CGCNN':<16}{c['test_mae']:>10.4f}{c['test_rmse']:>11.4f}{c['test_r2']:>8.4f}{c['training_time_s']:>16.1f}{c['parameters']:>12d}")
    m = summary["mean_predictor"]
    print(f"{'mean predictor':<16}{m['test_mae']:>10.4f}{m['test_rmse']:>11.4f}{m['test_r2']:>8.4f}{'-':>16}{'-':>12}")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
