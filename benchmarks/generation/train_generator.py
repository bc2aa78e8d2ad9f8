"""Train the default crystal generator on perov_5 and carbon_24 (dataset as condition).

Fixed 80/10/10 splits (seed 0) of each dev CSV (``common.load_split``);
checkpoints every epoch in ``--out/checkpoints`` (outside the work tree),
``--resume`` continues, ``--max-time DD:HH:MM:SS`` stops cleanly.

    OMP_NUM_THREADS=1 python benchmarks/generation/train_generator.py \\
        --perov ../shared/data/perov_5/dev.csv --carbon ../shared/data/carbon_24/dev.csv \\
        --out /work/runs/generator --epochs 300 [--resume]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_split  # noqa: E402

from crystalgnn_plugins.generation import train_generator  # noqa: E402

#: pressure (GPa) at which each dataset's crystals were relaxed: carbon_24 comes from
#: ab initio random structure searching at 10 GPa (../shared/data/README.md, Pickard 2020)
CONDITION_PRESSURES_GPA = {"carbon_24": 10.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--perov", required=True, help="perov_5 dev.csv")
    ap.add_argument("--carbon", required=True, help="carbon_24 dev.csv")
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--latent-dim", type=int, default=16)
    ap.add_argument("--repulsion-weight", type=float, default=0.1, help="physics term in training (0 = off)")
    ap.add_argument("--coord-weight", type=float, default=None,
                    help="weight of the coordinate loss (default: 10 geodesic, 1 wrapped-normal)")
    ap.add_argument("--coord-path", choices=("geodesic", "wrapped_normal"), default=None,
                    help="coordinate path of a new flow, or of the --init-from flow (its weights are kept; "
                         "default: geodesic, or the --init-from flow's)")
    ap.add_argument("--lattice-weight", type=float, default=1.0, help="weight of the lattice flow loss")
    ap.add_argument("--max-time", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--init-from", default=None, metavar="MODEL",
                    help="start from the weights of a saved generator (a directory, or 'generator': the shipped one); "
                         "its size options replace --hidden/--layers/--latent-dim")
    ap.add_argument("--image-rbf", type=int, default=0,
                    help="image-summed pair features of the network (radial functions; 0: off). With --init-from, "
                         "the loaded weights are extended (new weights start at zero)")
    ap.add_argument("--image-cutoff", type=float, default=3.0, help="reach of the image-summed features, Å")
    ap.add_argument("--edge-vectors", action="store_true",
                    help="free per-edge displacements beside the directions (CrystalFlow(edge_vectors=True)); "
                         "with --init-from they start at zero")
    ap.add_argument("--ot-coupling", action="store_true",
                    help="pair prior and data atoms of each crystal by least periodic distance (loss option)")
    ap.add_argument("--ot-translation", action="store_true",
                    help="with the atom pairing, also translate each data crystal to shorten the paths (loss option)")
    ap.add_argument("--mid-time-fraction", type=float, default=0.0,
                    help="fraction of the crystals trained at times from 0.25 to 0.65, where the structure "
                         "forms (loss option mid_time_fraction)")
    ap.add_argument("--carbon-repeat", type=int, default=1,
                    help="show every carbon_24 training crystal this many times per epoch (balances the harder, "
                         "smaller dataset)")
    ap.add_argument("--latent-dropout", type=float, default=None,
                    help="probability that a crystal is trained without its latent code (loss option "
                         "latent_dropout, default 0.5); lower makes the flow follow the code more closely")
    ap.add_argument("--energy-loss-model", default=None,
                    help="energy model (shipped name or directory) of a training term: the learned energy of the "
                         "predicted clean crystal (CrystalFlow.loss energy_term)")
    ap.add_argument("--energy-loss-weight", type=float, default=0.1)
    ap.add_argument("--energy-loss-conditions", default=None,
                    help="comma-separated conditions the energy term acts on (default: all)")
    ap.add_argument("--energy-loss-min-time", type=float, default=0.5,
                    help="the term acts on crystals at flow times from this one on")
    args = ap.parse_args()
    if args.latent_dropout is not None and not 0.0 <= args.latent_dropout <= 1.0:
        ap.error(f"--latent-dropout must be between 0 and 1, got {args.latent_dropout}")
    if args.carbon_repeat < 1:
        ap.error(f"--carbon-repeat must be at least 1, got {args.carbon_repeat}")
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    train, train_c, val, val_c = [], [], [], []
    for name, path in (("perov_5", args.perov), ("carbon_24", args.carbon)):
        split = load_split(path, name)
        repeat = args.carbon_repeat if name == "carbon_24" else 1
        train += split["train"] * repeat
        train_c += [name] * (len(split["train"]) * repeat)
        val += split["val"]
        val_c += [name] * len(split["val"])
    print(f"read {len(train)} train / {len(val)} val crystals in {time.perf_counter() - t0:.0f} s", flush=True)
    flow = None
    if args.init_from:
        from crystalgnn_plugins.models.io import load_model
        from crystalgnn_plugins.models.pretrained import model_path

        flow = load_model(model_path(args.init_from))
        if args.coord_path:
            flow = flow.with_coord_path(args.coord_path)
        if args.image_rbf and not flow.image_rbf:
            flow = flow.extended(image_rbf=args.image_rbf, image_cutoff=args.image_cutoff)
        if args.edge_vectors:
            flow = flow.extended(edge_vectors=True)
        print(f"initialised from {args.init_from} ({flow.num_parameters} parameters)", flush=True)
        flow.condition_pressures = {**CONDITION_PRESSURES_GPA, **flow.condition_pressures}
    coord_path = flow.coord_path if flow is not None else (args.coord_path or "geodesic")
    flow, report = train_generator(
        train, train_c, val, val_c, flow=flow,
        flow_kwargs={"hidden": args.hidden, "num_layers": args.layers, "latent_dim": args.latent_dim,
                     "image_rbf": args.image_rbf, "image_cutoff": args.image_cutoff,
                     "edge_vectors": args.edge_vectors, "coord_path": coord_path, "condition_pressures": CONDITION_PRESSURES_GPA},
        loss_kwargs={"repulsion_weight": args.repulsion_weight, "coord_weight": args.coord_weight,
                     "lattice_weight": args.lattice_weight,
                     **({"ot_coupling": True} if args.ot_coupling else {}),
                     **({"ot_translation": True} if args.ot_translation else {}),
                     **({"mid_time_fraction": args.mid_time_fraction} if args.mid_time_fraction else {}),
                     **({"latent_dropout": args.latent_dropout} if args.latent_dropout is not None else {})},
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        out_dir=args.out, resume=args.resume, max_time=args.max_time,
        energy_loss=None if args.energy_loss_model is None else {
            "model": args.energy_loss_model, "weight": args.energy_loss_weight, "min_time": args.energy_loss_min_time,
            "conditions": None if args.energy_loss_conditions is None else args.energy_loss_conditions.split(",")},
    )
    print(json.dumps({k: v for k, v in report.items() if k != "settings"}, indent=2))


if __name__ == "__main__":
    main()
