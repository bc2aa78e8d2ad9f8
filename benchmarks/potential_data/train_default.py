"""Train the default potential on the teacher-labelled frames of ``make_dataset.py``.

Uses the database's fixed split by parent (``split`` key: train/val/test),
energies + forces + stress, checkpoints every epoch outside the work tree and
``--resume``. Prints the held-out (test-split) errors in meV/atom, meV/Å and GPa.

    OMP_NUM_THREADS=2 python benchmarks/potential_data/train_default.py \\
        --db /work/runs/potential_data/frames.db --out /work/runs/default_potential \\
        --encoder painn -E atom_features=64 -E num_layers=3 --epochs 200 [--resume]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from crystalgnn_plugins.cli.train_cmd import _option
from crystalgnn_plugins.data import read_ase_db
from crystalgnn_plugins.models import EnergyModel
from crystalgnn_plugins.training import train


def _subsample(records, n: int | None, seed: int):
    if n is None or n >= len(records):
        return records
    idx = np.random.default_rng(seed).choice(len(records), n, replace=False)
    return [records[i] for i in sorted(idx)]


def _oversample(records, db: str, factors: dict[str, int]) -> list:
    """Repeat the training frames of some parent sources (``source`` key of the
    database) ``factor`` times in every epoch, e.g. ``{"element": 2}``."""
    import ase.db

    if not factors:
        return records
    bad = {k: v for k, v in factors.items() if v < 1}
    if bad:
        raise SystemExit(f"--oversample {bad}: factors must be whole numbers >= 1")
    repeat, known = {}, set()
    with ase.db.connect(db) as conn:
        for row in conn.select("split=train", columns=["id", "key_value_pairs"]):
            source = row.get("source")
            known.add(source)
            if source in factors:
                repeat[f"{db}:id {row.id}"] = factors[source]
    unknown = sorted(set(factors) - known)
    if unknown:
        raise SystemExit(f"--oversample: no training frames of source {unknown} (sources: {sorted(map(str, known))})")
    out = []
    for r in records:
        out.extend([r] * repeat.get(r.source, 1))
    print(f"oversampled {factors}: {len(records)} -> {len(out)} training frames per epoch", flush=True)
    return out


def _selections(exclude_sources=()) -> dict[str, str]:
    """ASE database selections of the three splits; the training split without the
    frames of ``exclude_sources`` (validation and test stay whole, comparable between runs)."""
    out = {s: f"split={s}" for s in ("train", "val", "test")}
    out["train"] += "".join(f",source!={src}" for src in exclude_sources)
    return out


def _export(model, train_set, test_set, args) -> None:
    """Rebuild the model of a checkpoint, save it and print its test errors."""
    from pathlib import Path

    from crystalgnn_plugins.models import save_model
    from crystalgnn_plugins.training.evaluate import evaluate

    if model.elements is None:
        model.set_elements({s for r in train_set for s in r.atoms.get_chemical_symbols()})
    state = torch.load(args.export_checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict({k.removeprefix("model."): v for k, v in state["state_dict"].items()})
    model.eval()
    path = save_model(model, Path(args.out) / "export", extra={"checkpoint": str(args.export_checkpoint), "epoch": state.get("epoch")})
    test = evaluate(model, test_set, ["energy", "forces", "stress"])
    print(json.dumps({
        "model": str(path), "epoch": state.get("epoch"),
        "energy_mae_meV_per_atom": 1000 * test["energy_per_atom"]["mae"],
        "force_mae_meV_per_A": 1000 * test["forces"]["mae"],
        "stress_mae_GPa": test["stress_gpa"]["mae"],
        "num_test_frames": len(test_set),
    }, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="frames.db written by make_dataset.py")
    ap.add_argument("--out", required=True, help="output directory (model, report, checkpoints)")
    ap.add_argument("--encoder", default="painn")
    ap.add_argument("--encoder-option", "-E", type=_option, action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--patience", type=int, default=25)
    ap.add_argument("--force-weight", type=float, default=1.0)
    ap.add_argument("--stress-weight", type=float, default=0.1)
    ap.add_argument(
        "--site-energy-weight", type=float, default=0.0,
        help="also fit the teacher's per-atom energies (data['energies'] of the rows, add_site_energies.py) "
        "with this weight; frames without them are masked",
    )
    ap.add_argument("--loss-kind", default="mse", choices=["mse", "mae", "huber"])
    ap.add_argument("--huber-delta", type=float, default=0.1, help="in normalised units (energy/force) and GPa (stress)")
    ap.add_argument("--lr-schedule", default="plateau", choices=["plateau", "cosine"])
    ap.add_argument("--max-train", type=int, default=None, help="subsample the training frames (quick trials)")
    ap.add_argument(
        "--oversample", type=_option, action="append", default=[], metavar="SOURCE=FACTOR",
        help="repeat the training frames of a parent source FACTOR times per epoch (e.g. element=2)",
    )
    ap.add_argument(
        "--exclude-source", action="append", default=[], metavar="SOURCE",
        help="leave out the training frames of a parent source (e.g. generated); val/test are kept",
    )
    ap.add_argument("--max-val", type=int, default=2000)
    ap.add_argument("--max-time", default=None, help="stop after DD:HH:MM:SS (then --resume)")
    ap.add_argument("--ema-decay", type=float, default=None, metavar="D",
                    help="train with an exponential moving average of the weights (e.g. 0.999)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument(
        "--init-from", default=None, metavar="MODEL",
        help="start from the weights, element references and energy scale of a saved model (a directory, "
        "or a registered name such as 'default': continue training the shipped model); the encoder "
        "options are then those of that model",
    )
    ap.add_argument(
        "--widen", type=int, default=None, metavar="FEATURES",
        help="with --init-from: widen the PaiNN model to FEATURES per atom, keeping its predictions "
        "(new channels start with zero influence, crystalgnn_plugins.training.grow)",
    )
    ap.add_argument(
        "--deepen", type=int, default=None, metavar="LAYERS",
        help="with --init-from: give the PaiNN model LAYERS interaction blocks, keeping its predictions "
        "(new blocks appended with zero output, crystalgnn_plugins.training.grow)",
    )
    ap.add_argument(
        "--core-repulsion", action="store_true",
        help="add the ZBL core repulsion and the network floor to the model (also to an --init-from model "
        "trained without them)",
    )
    ap.add_argument(
        "--export-checkpoint", default=None, metavar="CKPT",
        help="do not train: save the model of this Lightning checkpoint (e.g. OUT/checkpoints/best.ckpt) "
        "to OUT/export and print its held-out errors (the other options must match the run)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    targets = ["energy", "forces", "stress"]
    # the teacher's per-atom energies where a row has them (the test split's only for the report)
    optional = ["energies"] if args.site_energy_weight else []
    splits = {
        s: read_ase_db(args.db, selection=sel, targets=targets, optional=optional)
        for s, sel in _selections(args.exclude_source).items()
    }
    if args.site_energy_weight:
        targets.append("energies")
        have = sum(r.targets.get("energies") is not None for r in splits["train"])
        print(f"per-atom teacher energies on {have} of {len(splits['train'])} training frames", flush=True)
    print(f"read {', '.join(f'{k} {len(v)}' for k, v in splits.items())} frames in {time.perf_counter() - t0:.0f} s", flush=True)
    train_set = _subsample(splits["train"], args.max_train, args.seed)
    train_set = _oversample(train_set, args.db, {k: int(v) for k, v in args.oversample})
    # a frame whose element never occurs in training cannot be predicted: count it, leave it out
    known = {s for r in train_set for s in r.atoms.get_chemical_symbols()}
    seen = {k: [r for r in splits[k] if set(r.atoms.get_chemical_symbols()) <= known] for k in ("val", "test")}
    unseen = {k: len(splits[k]) - len(v) for k, v in seen.items()}
    if any(unseen.values()):
        print(f"frames with elements absent from training, left out: {unseen}", flush=True)
    val_set = _subsample(seen["val"], args.max_val, args.seed)
    test_set = seen["test"]

    torch.manual_seed(args.seed)
    if args.init_from:
        from crystalgnn_plugins.models.pretrained import resolve_model

        model = resolve_model(args.init_from)
        if not isinstance(model, EnergyModel):
            raise SystemExit(f"--init-from {args.init_from}: not an energy model ({type(model).__name__})")
        print(f"starting from {args.init_from} ({model.num_parameters} parameters)", flush=True)
        if args.widen:
            from crystalgnn_plugins.training.grow import widen_energy_model

            model = widen_energy_model(model, args.widen)
            print(f"widened to {args.widen} features ({model.num_parameters} parameters)", flush=True)
        if args.deepen:
            from crystalgnn_plugins.training.grow import deepen_energy_model

            model = deepen_energy_model(model, args.deepen)
            print(f"deepened to {args.deepen} interaction blocks ({model.num_parameters} parameters)", flush=True)
    elif args.widen or args.deepen:
        raise SystemExit("--widen and --deepen need --init-from (the model to grow)")
    else:
        model = EnergyModel(args.encoder, dict(args.encoder_option), hidden=args.hidden)
    if args.core_repulsion:
        model.set_core_repulsion(True)
        model.set_network_floor(True)
    if args.export_checkpoint:
        _export(model, train_set, test_set, args)
        return
    result = train(
        train_set, val_set, test_set, model=model, targets=targets,
        weights={"energy": 1.0, "forces": args.force_weight, "stress": args.stress_weight,
                 **({"energies": args.site_energy_weight} if args.site_energy_weight else {})},
        loss_kwargs={"kind": args.loss_kind, "delta": args.huber_delta}, lr_schedule=args.lr_schedule,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience, seed=args.seed,
        out_dir=args.out, resume=args.resume, max_time=args.max_time, progress=10.0,
        fit_normalisation=not args.init_from, ema_decay=args.ema_decay,
    )
    test = result.report["metrics"]["test"]
    summary = {
        "energy_mae_meV_per_atom": 1000 * test["energy_per_atom"]["mae"],
        "force_mae_meV_per_A": 1000 * test["forces"]["mae"],
        "stress_mae_GPa": test["stress_gpa"]["mae"],
        "num_test_frames": len(test_set),
        "test_frames_with_unseen_elements": unseen["test"],
        "num_train_frames": len(train_set),
        "parameters": result.report["num_parameters"],
        "training_time_s": result.report["training_time_s"],
        "epochs_run": result.report["epochs_run"],
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
