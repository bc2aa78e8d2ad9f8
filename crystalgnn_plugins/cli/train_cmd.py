"""``crystalgnn train``: train a property or energy model on a data file."""

from __future__ import annotations

import argparse
import json


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends "(default: ...)" to an option's help unless the default is unset
    (``None``/``False``) or the help already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if not action.option_strings or unset or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


def _check_label(records: list, label: str, flag: str, every: bool = True) -> None:
    """Raise a ValueError naming the first record without ``label`` (which option ``flag``
    needs), the labels it has and how many records lack it. ``every=False``: only when no
    record has it (forces and stress may be missing on some records: they are masked)."""
    missing = [r for r in records if r.targets.get(label) is None]
    if missing and (every or len(missing) == len(records)):
        first = missing[0]
        has = ", ".join(sorted(k for k, v in first.targets.items() if v is not None)) or "no labels"
        what = f"target {label!r}" if flag == "--target" else f"{label!r} label, which {flag} needs"
        raise ValueError(f"{first.source}: record {first.id!r} has no {what} (it has: {has}; "
                         f"{len(missing)} of {len(records)} records lack it)")


def _option(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model on a data file",
        description="Train a property model (--target) or an energy model (--energy, with --forces/--stress) "
        "on a data file; writes OUT/model, OUT/report.json and checkpoints every epoch.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("data", help="data file or folder (CDVAE CSV, CIF folder + id_prop.csv, ASE db, extxyz)")
    p.add_argument("--format", help="reader name (default: from the file name); see `crystalgnn plugins`")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--target", help="property column to learn (property model)")
    what.add_argument("--energy", action="store_true", help="train an energy model (potential)")
    p.add_argument("--forces", action="store_true", help="energy model: also fit forces")
    p.add_argument("--stress", action="store_true", help="energy model: also fit stress")
    p.add_argument("--site-energies", action="store_true",
                   help="energy model: also fit per-atom energies (target 'energies', e.g. a teacher's site energies)")
    p.add_argument("--extensive", action="store_true", help="property scales with the number of atoms")
    p.add_argument("--encoder", default=None, help="encoder name (default: cgcnn for properties, smooth_cgcnn for energies)")
    p.add_argument("--encoder-option", "-E", type=_option, action="append", default=[], metavar="KEY=VALUE",
                   help="encoder keyword argument, e.g. -E cutoff=6.0 (repeatable)")
    p.add_argument("--init-from", default=None, metavar="MODEL",
                   help="fine-tune a trained model (saved-model directory or registered name, e.g. 'default') "
                   "instead of a new one; keeps its element references and scale")
    p.add_argument("--core-repulsion", action="store_true",
                   help="energy model: add the ZBL core repulsion at short range and the network floor below it "
                   "(also to an --init-from model)")
    p.add_argument("--loss", default=None, help="registered loss name (default: mse / energy_force_stress)")
    p.add_argument("--split", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VAL", "TEST"),
                   help="fractions of the records for training, validation (early stopping, best checkpoint) "
                   "and test, drawn at random with --seed (default: 0.8 0.1 0.1)")
    p.add_argument("--epochs", type=int, default=100, help="maximum number of epochs")
    p.add_argument("--batch-size", type=int, default=32, help="structures per batch")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of Adam")
    p.add_argument("--weight-decay", type=float, default=0.0, help="weight decay")
    p.add_argument("--patience", type=int, default=20, help="early stopping patience, in epochs")
    p.add_argument("--force-weight", type=float, default=1.0, help="energy model: weight of the force loss")
    p.add_argument("--stress-weight", type=float, default=0.1, help="energy model: weight of the stress loss")
    p.add_argument("--site-energy-weight", type=float, default=1.0,
                   help="energy model: weight of the per-atom energy loss (--site-energies)")
    p.add_argument("--ema-decay", type=float, default=None, metavar="D",
                   help="validate, checkpoint and save an exponential moving average of the weights "
                   "(e.g. 0.999; default: off)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the split, the initialisation and the data order")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="precision of the model")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--checkpoint-dir", help="checkpoint directory (default OUT/checkpoints)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--no-progress", action="store_true", help="no progress bar")
    shown.add_argument("--progress-lines", type=float, default=None, metavar="MINUTES",
                   help="instead of the progress bar, a log line every MINUTES and one per epoch "
                   "(for output going to a file)")
    p.add_argument("--accelerator", default="auto", help="Lightning accelerator, e.g. cpu or gpu")
    p.add_argument("--devices", default="auto", help="Lightning devices: a number or a list")
    p.add_argument("--strategy", default="auto", help="e.g. ddp for several GPUs/nodes")
    p.add_argument("--num-nodes", type=int, default=1, help="number of nodes, with --strategy ddp")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from crystalgnn_plugins.data import read_records
    from crystalgnn_plugins.data.splits import split_indices
    from crystalgnn_plugins.models import EnergyModel, PropertyModel
    from crystalgnn_plugins.training import train

    if (args.forces or args.stress or args.site_energies) and not args.energy:
        raise ValueError("--forces/--stress/--site-energies need --energy")
    records = read_records(args.data, args.format)
    if args.target:
        _check_label(records, args.target, "--target")
    else:
        _check_label(records, "energy", "--energy")
        for label in ["forces"] * args.forces + ["stress"] * args.stress:  # masked where missing
            _check_label(records, label, f"--{label}", every=False)
    train_idx, val_idx, test_idx = split_indices(len(records), tuple(args.split), seed=args.seed)
    subsets = [[records[i] for i in idx] for idx in (train_idx, val_idx, test_idx)]
    encoder_kwargs = dict(args.encoder_option)
    torch.manual_seed(args.seed)
    if args.init_from:
        from crystalgnn_plugins.models.pretrained import resolve_model

        if args.encoder or encoder_kwargs:
            raise ValueError("--init-from takes the encoder of the trained model: drop --encoder/--encoder-option")
        model = resolve_model(args.init_from)
        if args.energy != isinstance(model, EnergyModel):
            kind = "an energy model" if isinstance(model, EnergyModel) else f"a property model of {model.target!r}"
            raise ValueError(f"--init-from {args.init_from}: {kind}, which does not match {'--energy' if args.energy else '--target'}")
        if args.target and args.target != model.target:
            raise ValueError(f"--init-from {args.init_from}: trained on {model.target!r}, not {args.target!r}")
    elif args.energy:
        model = EnergyModel(args.encoder or "smooth_cgcnn", encoder_kwargs)
    else:
        model = PropertyModel(args.encoder or "cgcnn", encoder_kwargs, target=args.target, extensive=args.extensive)
    if args.core_repulsion:
        if not args.energy:
            raise ValueError("--core-repulsion needs --energy")
        model.set_core_repulsion(True)
        model.set_network_floor(True)
    targets = (
        ["energy"] + ["forces"] * args.forces + ["stress"] * args.stress + ["energies"] * args.site_energies
        if args.energy else None
    )
    model = model.to(getattr(torch, args.dtype))
    devices = int(args.devices) if str(args.devices).isdigit() else args.devices
    result = train(
        *subsets, model=model, targets=targets, loss=args.loss,
        weights={"forces": args.force_weight, "stress": args.stress_weight, "energies": args.site_energy_weight},
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        patience=args.patience, seed=args.seed, out_dir=args.out, checkpoint_dir=args.checkpoint_dir,
        resume=args.resume, progress=args.progress_lines if args.progress_lines is not None else not args.no_progress,
        accelerator=args.accelerator,
        devices=devices, strategy=args.strategy, num_nodes=args.num_nodes,
        fit_normalisation=not args.init_from, ema_decay=args.ema_decay,
    )
    print(json.dumps({k: result.report[k] for k in ("metrics", "num_parameters", "training_time_s", "epochs_run")}, indent=2))
    print(f"model written to {result.model_dir}")
    return 0
