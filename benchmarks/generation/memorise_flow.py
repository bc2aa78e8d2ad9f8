"""Can the generator's flow memorise a handful of crystals? (a capacity / sampler probe)

Continues a generator (default: the shipped one) on only the first ``--num``
training crystals of one dataset, each shown ``--repeat`` times per epoch, and
saves it to ``--out/model``. ``denoise_flow.py --split train --num N --model
OUT/model --t0 0`` then tells whether the flow brings noise back to those very
crystals: a flow that cannot do that for one or a few crystals it has seen
thousands of times will not sample a whole dataset's structures either, however
long it is trained on it. Minutes on one thread::

    OMP_NUM_THREADS=1 python benchmarks/generation/memorise_flow.py \\
        --csv ../shared/data/carbon_24/dev.csv --dataset carbon_24 --num 1 --repeat 640 \\
        --epochs 100 --out /tmp/mem1 [--ot-translation]
    OMP_NUM_THREADS=1 python benchmarks/generation/denoise_flow.py \\
        --csv ../shared/data/carbon_24/dev.csv --dataset carbon_24 --split train --num 1 \\
        --draws 8 --t0 0.6,0 --model /tmp/mem1/model
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_split  # noqa: E402

from crystalgnn_plugins.generation import train_generator  # noqa: E402
from crystalgnn_plugins.generation.flow import CrystalFlow  # noqa: E402
from crystalgnn_plugins.generation.source import resolve_generator  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", required=True, help="the dataset's dev.csv")
    ap.add_argument("--dataset", default="carbon_24", help="perov_5 or carbon_24 (the condition)")
    ap.add_argument("--model", default=None, help="generator to start from (default: the shipped one)")
    ap.add_argument("--num", type=int, default=1, help="first crystals of the training split")
    ap.add_argument("--repeat", type=int, default=640, help="times each is shown per epoch")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--ot-translation", action="store_true", help="loss option, as in train_generator.py")
    ap.add_argument("--coord-path", choices=("geodesic", "wrapped_normal"), default=None,
                    help="switch the coordinate path of the starting generator (weights kept)")
    ap.add_argument("--coord-weight", type=float, default=None,
                    help="weight of the coordinate loss (default: 10 geodesic, 1 wrapped-normal)")
    ap.add_argument("--fresh", default=None, metavar="HIDDEN,LAYERS",
                    help="start from an untrained network of this width and depth (the starting "
                         "generator's other settings) instead of its weights: a capacity probe")
    ap.add_argument("--edge-vectors", action="store_true",
                    help="add the per-edge free displacements (CrystalFlow(edge_vectors=True)); their "
                         "weights start at zero, the others are kept")
    ap.add_argument("--mid-time-fraction", type=float, default=0.0, help="loss option, as in train_generator.py")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.num < 1 or args.repeat < 1:
        ap.error(f"--num and --repeat must be at least 1, got {args.num} and {args.repeat}")
    torch.set_num_threads(args.threads)
    crystals = load_split(args.csv, args.dataset)["train"][: args.num]
    flow = resolve_generator(args.model)
    if args.coord_path:
        flow = flow.with_coord_path(args.coord_path)
    if args.fresh:
        try:
            hidden, layers = (int(x) for x in args.fresh.split(","))
        except ValueError:
            ap.error(f"--fresh takes HIDDEN,LAYERS (two integers), got {args.fresh!r}")
        flow = CrystalFlow.from_config({**flow.get_config(), "hidden": hidden, "num_layers": layers})
    if args.edge_vectors:
        flow = flow.extended(edge_vectors=True)
    _, report = train_generator(
        crystals * args.repeat, [args.dataset] * (len(crystals) * args.repeat), crystals,
        [args.dataset] * len(crystals), flow=flow,
        loss_kwargs={"repulsion_weight": 0.1, "coord_weight": args.coord_weight,
                     **({"ot_translation": True} if args.ot_translation else {}),
                     **({"mid_time_fraction": args.mid_time_fraction} if args.mid_time_fraction else {})},
        epochs=args.epochs, batch_size=64, lr=args.lr, seed=0, out_dir=args.out,
    )
    print(json.dumps({k: v for k, v in report.items() if k != "settings"}, indent=2, default=str))


if __name__ == "__main__":
    main()
