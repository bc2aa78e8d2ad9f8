"""``crystalgnn generate``: new crystals from the generator, written as CIF files or an ASE db."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate new crystal structures",
        description="Sample crystals from a generator (default: the shipped one). Writes one CIF per "
        "structure into OUT (a directory), or an ASE database if OUT ends with .db, plus a JSON "
        "summary. With --composition it proposes structures for that formula (crystal structure "
        "prediction).",
    )
    p.add_argument("n", type=int, help="number of structures")
    p.add_argument("--out", "-o", required=True, help="output directory for CIF files, or a .db file")
    p.add_argument("--model", "-m", default=None, help="generator directory or shipped name")
    p.add_argument("--composition", default=None, help="formula, e.g. SrTiO3 (crystal structure prediction)")
    p.add_argument("--chemsys", default=None, help="allowed elements, e.g. Sr-Ti-O")
    p.add_argument("--num-atoms", type=int, default=None, help="atoms per cell (default: from the training data)")
    p.add_argument("--condition", default=None, help="dataset the samples resemble, e.g. perov_5 or carbon_24")
    p.add_argument("--target-model", default=None, help="property model (directory) to steer towards a target")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--below", type=float, default=None, help="steer the property below this value")
    target.add_argument("--above", type=float, default=None, help="steer the property above this value")
    target.add_argument("--near", type=float, default=None, help="steer the property towards this value")
    p.add_argument("--relax", action="store_true", help="relax the samples with the energy model (batched FIRE)")
    p.add_argument("--energy-model", default=None, help="energy model for physics guidance and --relax")
    p.add_argument("--guidance-model", default=None,
                   help="energy model for the physics guidance only (default: the shipped per-condition guides, "
                        "e.g. carbon-guide for carbon_24; with --energy-model, that model)")
    p.add_argument("--no-physics", action="store_true", help="sample without the repulsion/energy guidance")
    p.add_argument("--steps", type=int, default=50, help="integration steps (default 50)")
    p.add_argument("--seed", type=int, default=None, help="random seed (reproducible samples)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def _target(args):
    given = [x is not None for x in (args.below, args.above, args.near)]
    if args.target_model is None:
        if any(given):
            raise ValueError("--below/--above/--near need --target-model")
        return None
    if not any(given):
        raise ValueError("--target-model needs one of --below, --above or --near")
    return {"model": args.target_model, "below": args.below, "above": args.above, "near": args.near}


def run(args: argparse.Namespace) -> int:
    from crystalgnn_plugins.generation import CrystalStructureSource

    target = _target(args)
    source = CrystalStructureSource(
        args.model, energy_model=args.energy_model, guidance_model=args.guidance_model,
        physics=not args.no_physics, steps=args.steps, device=args.device,
    )
    structures = source.get_structures(
        args.n, composition=args.composition, chemsys=args.chemsys, num_atoms=args.num_atoms,
        target=target, relax=args.relax, seed=args.seed, condition=args.condition,
    )
    out = Path(args.out)
    rows = []
    if out.suffix.lower() == ".db":
        from ase.db import connect
        from pymatgen.io.ase import AseAtomsAdaptor

        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.stem}.tmp.db")
        tmp.unlink(missing_ok=True)
        with connect(tmp, type="db") as db:
            for k, s in enumerate(structures):
                gen = s.properties["generation"]
                db.write(AseAtomsAdaptor.get_atoms(s), key_value_pairs={"sample": k}, data={"generation": gen})
        tmp.replace(out)
    else:
        out.mkdir(parents=True, exist_ok=True)
        for k, s in enumerate(structures):
            name = f"{k:05d}_{s.composition.reduced_formula}.cif"
            tmp = out / f".{name}.tmp"
            s.to(filename=str(tmp), fmt="cif")
            tmp.replace(out / name)
            rows.append({"file": name, "formula": s.composition.reduced_formula, **s.properties["generation"]})
        (out / "summary.json").write_text(json.dumps(rows, indent=2, default=str))
    relaxed = [s.properties["generation"].get("relaxation") for s in structures]
    msg = f"wrote {len(structures)} structures to {out}"
    if args.relax:
        msg += f"; relaxation converged for {sum(bool(r and r['converged']) for r in relaxed)} of {len(relaxed)}"
    print(msg, file=sys.stdout)
    return 0
