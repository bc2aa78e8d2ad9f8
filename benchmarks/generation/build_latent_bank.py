"""Write a generator's latent bank: the latent codes of its training crystals.

Encodes the training split (``common.load_split``, the split the generator was trained
on) of each given dataset with the generator's encoder and writes
``MODEL/latent_bank.npz`` (:class:`crystalgnn_plugins.generation.LatentBank`), which
``CrystalStructureSource`` then finds next to the weights::

    python benchmarks/generation/build_latent_bank.py --model crystalgnn_plugins/pretrained/generator \\
        --perov ../shared/data/perov_5/dev.csv --carbon ../shared/data/carbon_24/dev.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import load_split  # noqa: E402

from crystalgnn_plugins.generation import LatentBank  # noqa: E402
from crystalgnn_plugins.generation.source import _generator_dir, resolve_generator  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="generator directory or registered name")
    ap.add_argument("--perov", default=None, help="perov_5 dev.csv")
    ap.add_argument("--carbon", default=None, help="carbon_24 dev.csv")
    ap.add_argument("--out", default=None, help="directory to write latent_bank.npz to (default: the model's)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    flow = resolve_generator(args.model).eval()
    banks = []
    for dataset, csv in (("perov_5", args.perov), ("carbon_24", args.carbon)):
        if csv is None:
            continue
        if dataset not in flow.conditions:
            raise SystemExit(f"{args.model} has no condition {dataset!r} (it has {flow.conditions})")
        train = load_split(csv, dataset)["train"]
        banks.append(LatentBank.from_structures(flow, train, dataset))
        print(f"{dataset}: {len(train)} training crystals encoded", flush=True)
    if not banks:
        raise SystemExit("give --perov and/or --carbon")
    path = LatentBank.concat(banks).save(args.out or _generator_dir(args.model))
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
