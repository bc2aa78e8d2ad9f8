"""``crystalgnn generate``: new crystals from the generator, written as CIF files or an ASE db."""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path

#: the CIF files a run writes into its output folder
_CIF_NAME = re.compile(r"\d{5}_.+\.cif")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate new crystal structures",
        description="Sample crystals from a generator (default: the shipped one). Writes one CIF per "
        "structure (NNNNN_FORMULA.cif) and summary.json into OUT (a directory), or an ASE database if "
        "OUT ends with .db and its summary beside it (OUT.db -> OUT.summary.json). Database rows carry "
        "the key-value pairs sample, condition, seed, composition and chemsys (when given); with --relax "
        "also the relaxed energy (as the row's energy), energy_per_atom, relax_converged and relax_steps. "
        "With --composition it proposes structures for that formula (crystal structure prediction).",
    )
    p.add_argument("n", type=int, help="number of structures")
    p.add_argument("--out", "-o", required=True, help="output directory for CIF files, or a .db file")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run: the NNNNN_*.cif files and summary.json in a folder OUT, or "
                   "the .db file and its .summary.json (default: refuse an existing .db or non-empty folder)")
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


def _is_db(out: Path) -> bool:
    return out.suffix.lower() == ".db"


def summary_path(out: Path) -> Path:
    """The JSON summary of a run: ``OUT/summary.json``, or ``NAME.summary.json`` beside ``NAME.db``."""
    return out.with_suffix(".summary.json") if _is_db(out) else out / "summary.json"


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse to mix two runs in one output unless ``overwrite``."""
    if _is_db(out):
        existing = [p for p in (out, summary_path(out)) if p.exists()]
        if existing and not overwrite:
            raise FileExistsError(f"--out {out}: {existing[0]} exists; pass --overwrite to replace "
                                  f"{out.name} and {summary_path(out).name}, or choose another file")
    elif out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out}: a file, not a folder (name a .db file for an ASE database)")
    elif out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"--out {out}: the folder is not empty; pass --overwrite to replace the "
                              "NNNNN_*.cif files and summary.json of an earlier run, or choose another folder")


def _key_value_pairs(k: int, gen: dict, num_atoms: int) -> tuple[dict, float | None]:
    """ASE-db key-value pairs of sample ``k`` and its relaxed energy (eV; ``None`` if not relaxed)."""
    kvp: dict = {"sample": k, "condition": gen["condition"]}
    for key in ("seed", "composition", "chemsys"):
        if gen.get(key) is not None:
            kvp[key] = gen[key]
    relaxation = gen.get("relaxation")
    energy = None
    if relaxation:
        kvp["relax_converged"] = bool(relaxation["converged"])
        kvp["relax_steps"] = int(relaxation["steps"])
        if relaxation.get("error"):
            kvp["relax_error"] = str(relaxation["error"])
        elif math.isfinite(relaxation.get("energy_eV", math.nan)):
            energy = float(relaxation["energy_eV"])
            kvp["energy_per_atom"] = energy / num_atoms
    return kvp, energy


def _write_db(out: Path, structures: list) -> list[dict]:
    """Write the samples to the ASE database ``out`` atomically; the summary rows."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.db import connect
    from pymatgen.io.ase import AseAtomsAdaptor

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{os.getpid()}.db")
    tmp.unlink(missing_ok=True)
    rows = []
    try:
        with connect(tmp, type="db", append=False) as db:
            for k, s in enumerate(structures):
                gen = s.properties["generation"]
                atoms = AseAtomsAdaptor.get_atoms(s)
                atoms.info.pop("generation", None)  # kept in the row's data
                kvp, energy = _key_value_pairs(k, gen, len(atoms))
                if energy is not None:
                    atoms.calc = SinglePointCalculator(atoms, energy=energy)
                row_id = db.write(atoms, key_value_pairs=kvp, data={"generation": gen})
                rows.append({"id": row_id, "sample": k, "formula": s.composition.reduced_formula, **gen})
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


def _write_cifs(out: Path, structures: list, overwrite: bool) -> list[dict]:
    """One CIF per sample in the folder ``out`` (each written atomically); the summary rows."""
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:  # only what an earlier run wrote
        for old in out.iterdir():
            if old.is_file() and (_CIF_NAME.fullmatch(old.name) or old.name == "summary.json"):
                old.unlink()
    rows = []
    for k, s in enumerate(structures):
        name = f"{k:05d}_{s.composition.reduced_formula}.cif"
        tmp = out / f".{name}.tmp"
        s.to(filename=str(tmp), fmt="cif")
        tmp.replace(out / name)
        rows.append({"file": name, "formula": s.composition.reduced_formula, **s.properties["generation"]})
    return rows


def run(args: argparse.Namespace) -> int:
    from crystalgnn_plugins._atomic import atomic_write_json
    from crystalgnn_plugins.generation import CrystalStructureSource

    target = _target(args)
    out = Path(args.out)
    _check_out(out, args.overwrite)
    source = CrystalStructureSource(
        args.model, energy_model=args.energy_model, guidance_model=args.guidance_model,
        physics=not args.no_physics, steps=args.steps, device=args.device,
    )
    structures = source.get_structures(
        args.n, composition=args.composition, chemsys=args.chemsys, num_atoms=args.num_atoms,
        target=target, relax=args.relax, seed=args.seed, condition=args.condition,
    )
    rows = _write_db(out, structures) if _is_db(out) else _write_cifs(out, structures, args.overwrite)
    summary = summary_path(out)
    atomic_write_json(summary, rows, default=str)
    relaxed = [s.properties["generation"].get("relaxation") for s in structures]
    msg = f"wrote {len(structures)} structures to {out} (summary: {summary})"
    if args.relax:
        msg += f"; relaxation converged for {sum(bool(r and r['converged']) for r in relaxed)} of {len(relaxed)}"
    print(msg, file=sys.stdout)
    return 0
